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

from ..config import MINIATURE_PRETRAININGS, PRETRAINED_MINIATURE  # noqa: F401 (its old import path)
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


# a config's ``pretrained`` / ``teacher_weights`` value as a file (the names registered below, others pass through)
resolve_weights = named_weights.resolve_weights


def settings_for(name: str) -> PretrainSettings:
    """The pretraining settings a weights name of ``MINIATURE_PRETRAININGS`` stands for (its corpus, the defaults
    otherwise)."""
    if name not in MINIATURE_PRETRAININGS:
        raise ValueError(f"{name!r} names no pretraining of the miniature: use one of {', '.join(MINIATURE_PRETRAININGS)}")
    return PretrainSettings(corpus=MINIATURE_PRETRAININGS[name])


def _resolver(name: str):
    # looked up when called: a patched pretrained_weights is the one used
    return lambda: str(pretrained_weights(settings_for(name)))


for _name in MINIATURE_PRETRAININGS:
    named_weights.register(_name, _resolver(_name))
