"""Where the miniature's pretrainings live, and the command that builds one (issue 13).

Kept apart from ``training.pretrain`` (whose code is part of the weights' content key) so that where the weights
are kept can change without changing any key. A pretraining is identified by its settings (a ``PretrainSettings``)
and its key (``pretrain.content_key``):

- built: ``<runs>/pretrain/<corpus>_<key>`` (what ``make pretrain`` writes, with its checkpoint);
- committed: ``<pretrained>/<corpus>_<key>`` (``paths.pretrained_dir()``, the repository's ``data/pretrained/``):
  the default pretraining is kept there so ``make reports`` does not rebuild it; ``commit`` copies a finished
  folder there (``python -m zssbir.training.pretrain --commit``). A folder is used only for its own key.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from .. import paths

OUTPUTS = ("backbone.pt", "head.pt", "pretrain.json")
CLI_FIELDS = ("corpus", "epochs", "seed", "batch_size", "image_size", "lr", "max_steps_per_epoch")


def outputs(settings) -> tuple[str, ...]:
    """The files of a finished pretraining: with a text tower (``lambda_text > 0``) also ``text.pt``."""
    return OUTPUTS + (("text.pt",) if settings.lambda_text > 0 else ())


def build_command(settings) -> str:
    """The command that builds the weights of ``settings``: ``make pretrain`` for the defaults, else the module's
    command line, else (settings it has no flag for) the Python call."""
    default = type(settings)().identity()
    changed = {k: v for k, v in settings.identity().items() if v != default[k]}
    if not changed:
        return "make pretrain"
    if set(changed) <= set(CLI_FIELDS):
        return "python -m zssbir.training.pretrain" + "".join(f" --{k.replace('_', '-')} {changed[k]}"
                                                              for k in CLI_FIELDS if k in changed)
    args = ", ".join(f"{k}={v!r}" for k, v in changed.items())
    return f"python -c \"from zssbir.training.pretrain import *; pretrain(PretrainSettings({args}))\""


def output_dir(settings, key: str) -> Path:
    """Where pretraining with these settings builds its folder."""
    return paths.runs_dir() / "pretrain" / f"{settings.corpus}_{key}"


def committed_dir(settings, key: str) -> Path:
    """Where the repository keeps a finished folder."""
    return paths.pretrained_dir() / f"{settings.corpus}_{key}"


def is_finished(folder: Path, settings) -> bool:
    return all((folder / name).is_file() for name in outputs(settings))


def finished_dir(settings, key: str) -> Path | None:
    """The finished folder of these settings and key: built under ``<runs>``, else committed; None if neither."""
    return next((d for d in (output_dir(settings, key), committed_dir(settings, key)) if is_finished(d, settings)),
                None)


def _same_corpus(folder: Path, corpus: str) -> bool:
    """Whether ``folder`` is named ``<corpus>_<key>`` (a 16-hex-digit key: not another corpus that extends the name,
    such as synthetic_pretrain_hard beside synthetic_pretrain)."""
    return re.fullmatch(re.escape(corpus) + r"_[0-9a-f]{16}", folder.name) is not None


def other_folders(settings, key: str) -> list[str]:
    """Pretraining folders (with a backbone) of the same corpus under other keys (other settings or code)."""
    roots = (output_dir(settings, key).parent, committed_dir(settings, key).parent)
    return sorted(str(p.parent) for root in roots for p in root.glob(f"{settings.corpus}_*/backbone.pt")
                  if _same_corpus(p.parent, settings.corpus) and p.parent.name != f"{settings.corpus}_{key}")


def commit(settings, key: str) -> Path:
    """Copy the built folder of ``settings`` and ``key`` into the committed folder (without its checkpoint),
    removing the committed folders of the same corpus under other keys; return the new folder."""
    source, target = output_dir(settings, key), committed_dir(settings, key)
    if not is_finished(source, settings):
        raise FileNotFoundError(f"nothing to commit: {source} is not a finished pretraining; run "
                                f"`{build_command(settings)}` first")
    for old in target.parent.glob(f"{settings.corpus}_*"):
        if old != target and _same_corpus(old, settings.corpus):
            shutil.rmtree(old)
    target.mkdir(parents=True, exist_ok=True)
    for name in outputs(settings):
        shutil.copyfile(source / name, target / name)
    return target
