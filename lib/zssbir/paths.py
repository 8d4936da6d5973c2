"""Every folder of the study resolves here, from one project root, never from the cwd.

Environment overrides (each optional):
  ZSSBIR_ROOT     project root (default: the checkout that holds this package)
  ZSSBIR_DATA     data sets                     (default: <root>/data/datasets)
  ZSSBIR_REPORTS  executed notebooks and tables (default: <root>/reports)
  ZSSBIR_CACHE    cached features               (default: <root>/data/cache)
  ZSSBIR_RUNS     checkpoints and run results   (default: <root>/runs)
  ZSSBIR_PRETRAINED  committed pretrained weights (default: <root>/data/pretrained)
"""
from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    env = os.environ.get("ZSSBIR_ROOT")
    if env:
        return Path(env).expanduser().resolve()
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "lib" / "zssbir").is_dir():
            return parent
    raise RuntimeError(
        "Cannot find the zssbir project root: the package is not inside a checkout. "
        "Set ZSSBIR_ROOT to the folder that holds pyproject.toml, or install with `pip install -e .`."
    )


def _dir(env: str, default: str) -> Path:
    value = os.environ.get(env)
    return Path(value).expanduser().resolve() if value else project_root() / default


def data_dir() -> Path:
    return _dir("ZSSBIR_DATA", "data/datasets")


def splits_dir() -> Path:
    """Committed split files (class lists with their provenance)."""
    return project_root() / "data" / "splits"


def reports_dir() -> Path:
    return _dir("ZSSBIR_REPORTS", "reports")


def cache_dir() -> Path:
    return _dir("ZSSBIR_CACHE", "data/cache")


def runs_dir() -> Path:
    return _dir("ZSSBIR_RUNS", "runs")


def pretrained_dir() -> Path:
    """The miniature's pretrained weights kept in the repository (``training.pretrained_store``)."""
    return _dir("ZSSBIR_PRETRAINED", "data/pretrained")


def notebooks_dir() -> Path:
    return project_root() / "notebooks"
