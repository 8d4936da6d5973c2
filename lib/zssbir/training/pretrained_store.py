"""How a run config names the miniature's pretrained weights (issue 13): the value ``"pretrain"``
(``PRETRAINED_MINIATURE``, defined in ``zssbir.config``) in ``pretrained`` or ``teacher_weights`` is the
``backbone.pt`` of the default pretraining of the current code (``training.pretrain``), built or committed
(``training.pretrained_files``); ``"pretrain_hard"`` is the one on the hard miniature's corpus
(``config.MINIATURE_PRETRAININGS`` names each with its corpus). A missing one names the command that builds it.

Importing this module registers the names with ``models.named_weights``, through which the models (``models.factory``,
``models.dmwa``) resolve them without importing training (issue 26).
"""
from __future__ import annotations

from pathlib import Path

from ..config import MINIATURE_PRETRAININGS, PRETRAINED_MINIATURE
from ..models import named_weights
from .pretrain import PretrainSettings, content_key
from .pretrained_files import build_command, finished_dir, other_folders


def pretrained_weights(settings: PretrainSettings | None = None) -> Path:
    """The ``backbone.pt`` of finished pretraining with these settings (and the current code and corpus); a missing
    or mismatched one raises FileNotFoundError naming the command that builds it."""
    settings = settings or PretrainSettings()
    key = content_key(settings)
    folder = finished_dir(settings, key)
    if folder is None:
        others = other_folders(settings, key)
        note = (f" (other pretrained folders exist, made by other settings or code: {', '.join(others)})"
                if others else "")
        raise FileNotFoundError(f"no pretrained backbone for these settings and this code (key {key}){note}; build "
                                f"it with `{build_command(settings)}`")
    return folder / "backbone.pt"


def resolve_weights(value: str | None) -> str | None:
    """A config's ``pretrained`` / ``teacher_weights`` value as a file: a name of ``MINIATURE_PRETRAININGS`` is the
    ``backbone.pt`` of that pretraining (FileNotFoundError naming the command that builds it when it is missing);
    others pass through."""
    if value not in MINIATURE_PRETRAININGS:
        return value
    return str(pretrained_weights(PretrainSettings(corpus=MINIATURE_PRETRAININGS[value])))


def _resolver(name: str):
    corpus = MINIATURE_PRETRAININGS[name]
    if name == PRETRAINED_MINIATURE:
        return lambda: str(pretrained_weights())  # looked up when called: a patched pretrained_weights is the one used
    return lambda: str(pretrained_weights(PretrainSettings(corpus=corpus)))


for _name in MINIATURE_PRETRAININGS:
    named_weights.register(_name, _resolver(_name))
