"""What the notebooks call: train (or resume) a run, get its cached features, score them, record results.

A run's results are one JSON per retrieval procedure (exact, or cluster-then-retrieve with its
M, K and variant), named ``<run name>__<retrieval>``, so tables can group them freely.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .config import TrainConfig
from .data.datasets import load_split
from .features import cached_features
from .models.factory import transforms_for
from .results import write_results
from .train import TrainResult, default_run_dir, load_trained, train


def run_name(config: TrainConfig, tag: str = "") -> str:
    """A readable, unique-enough run name: method, data set, backbone, key weights, seed."""
    parts = [config.method, config.dataset, config.backbone.replace(":", "-"), f"lda{config.lambda_da:g}"]
    return "_".join(parts + ([tag] if tag else []) + [f"seed{config.seed}"])


def train_or_resume(config: TrainConfig, name: str | None = None, progress: bool = True) -> TrainResult:
    """Train into runs/train/<name>; a finished run is only reloaded, an interrupted one resumes."""
    return train(config, run_dir=default_run_dir(config, name or run_name(config)), progress=progress)


def split_features(model, config: TrainConfig, split: str = "zero", device: str = "auto",
                   progress: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"sketch": (features, labels), "photo": (features, labels)} of a split, through the feature cache."""
    tf = transforms_for(model, config, train=False)
    model = model.eval()
    out = {}
    for domain in ("sketch", "photo"):
        ds = load_split(config.dataset, split, domain, data_root=config.data_root, transform=tf[domain])
        out[domain] = cached_features(model.embed, model, ds, device=device, progress=progress)
    return out


def load_run(run_dir: str | Path, device: str = "auto"):
    return load_trained(run_dir, device=device)


def record(name: str, config: TrainConfig, metrics: dict, *, retrieval: dict, extra: dict | None = None) -> Path:
    """One results JSON: training parameters + the retrieval procedure; metrics carry their conventions."""
    params = {"train": config.to_dict(), "retrieval": retrieval, "method": config.method, "dataset": config.dataset}
    return write_results(name, params=params, metrics=metrics, seed=config.seed, extra=extra)
