"""What identifies a trained run: its name, its folder, and the code that trained it.

Run name: ``<method>_<dataset>_<backbone>_<key weights>[_p<digest>]_seed<seed>``. The key weights are
``lda<lambda_da>`` for ClusterRetri and ``w<weighting>_<loss>`` for DMWA; ``p<digest>`` is a short
hash of every OTHER setting that differs from ``TrainConfig``'s defaults for that method (method_params included), so
two configs that train differently never share a name, and the name of a default run stays short.
Settings that do not change what is trained (``RUNTIME_FIELDS``) are left out. The miniature's pretrained weights
(``pretrained: pretrain``) enter the digest by their content key (``training.pretrain.content_key``), so a run
fine-tuned from one pretraining is never reopened when the pretraining is redone with other code or settings.

Code version: a sha256 per source file that decides what training produces (models, losses, the loop,
datasets, samplers, transforms). A checkpoint records them, so a run trained by other code is never
reused silently (see ``zssbir.training.loop.train``'s ``if_code_changed``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from .. import paths
from ..config import MINIATURE_PRETRAININGS, RUNTIME_FIELDS, TrainConfig

# files (relative to the zssbir package) whose content decides what a training run produces
# (the losses are models/losses.py, the settings config.py: issue 26 moved them out of training/)
TRAINING_CODE = ("models", "config.py", "training/loop.py", "training/batches.py", "training/device_step.py",
                 "data/datasets.py", "data/samplers.py", "data/quadruplets.py", "data/transforms.py")
CODE_CHANGE_POLICIES = ("refuse", "retrain", "reuse")


def _named_settings(config: TrainConfig) -> tuple[list[str], set[str], set[str]]:
    """(name parts for the key weights, top-level fields they cover, method_params keys they cover)."""
    if config.method == "dmwa":
        from ..models.dmwa import DMWAParams

        mp = dataclasses.asdict(DMWAParams.from_dict(config.method_params))
        return [f"w{mp['weighting']}", mp["loss"]], set(), {"weighting", "loss"}
    return [f"lda{config.lambda_da:g}"], {"lambda_da"}, set()


def changed_settings(config: TrainConfig) -> dict:
    """The settings of ``config`` that differ from the defaults and are not already spelled in its name."""
    from .pretrain import content_key
    from .pretrained_store import settings_for

    defaults = TrainConfig(method=config.method).to_dict()
    parts, named, named_params = _named_settings(config)
    skip = {"method", "dataset", "backbone", "seed", "method_params", *named, *RUNTIME_FIELDS}
    changed = {k: v for k, v in config.to_dict().items() if k not in skip and v != defaults[k]}
    for k in ("pretrained", "teacher_weights"):  # the miniature's weights by the content that made them
        if changed.get(k) in MINIATURE_PRETRAININGS:
            changed[k] = f"{changed[k]}:{content_key(settings_for(changed[k]))}"
    if config.method == "dmwa":
        from ..models.dmwa import DMWAParams

        params = dataclasses.asdict(DMWAParams.from_dict(config.method_params))
        changed.update({f"method_params.{k}": v for k, v in params.items()
                        if k not in named_params and v != getattr(DMWAParams, k)})
    return changed


def run_name(config: TrainConfig) -> str:
    """The run's name (see the module docstring)."""
    parts, _, _ = _named_settings(config)
    changed = changed_settings(config)
    if changed:
        parts.append("p" + hashlib.sha256(json.dumps(changed, sort_keys=True, default=str).encode()).hexdigest()[:8])
    return "_".join([config.method, config.dataset, config.backbone.replace(":", "-"), *parts, f"seed{config.seed}"])


def default_run_dir(config: TrainConfig) -> Path:
    """``<runs>/train/<run name>``."""
    return paths.runs_dir() / "train" / run_name(config)


def training_code() -> dict[str, str]:
    """{file relative to the package: sha256[:16]} of every file in ``TRAINING_CODE``."""
    root = Path(__file__).resolve().parent.parent
    digests = {}
    for name in TRAINING_CODE:
        files = sorted((root / name).rglob("*.py")) if (root / name).is_dir() else [root / name]
        for f in files:
            digests[f.relative_to(root).as_posix()] = hashlib.sha256(f.read_bytes()).hexdigest()[:16]
    return digests


def code_changes(recorded: dict | None, current: dict) -> list[str]:
    """The files whose content differs between two ``training_code()`` records (all, if none was recorded)."""
    if not recorded:
        return ["(the run records no code version: trained before code versions were recorded)"]
    return sorted(f for f in set(recorded) | set(current) if recorded.get(f) != current.get(f))
