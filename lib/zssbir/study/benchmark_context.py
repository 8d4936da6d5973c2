"""The context of a benchmark's claims, for the side-by-side comparison of the miniatures in 05 (issue 22): how many
runs selected their last epoch, and how well the benchmark's unseen photos cluster by class on their own at the K
its cluster-then-retrieve rows use (one run's features: ``conventions.pick_run``)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..training.loop import load_trained
from . import cluster_analysis, conventions, findings, scoring
from .results import load_results


def cluster_K(frame: pd.DataFrame, dataset: str) -> int:
    """The K of ``dataset``'s ClusterRetri cluster-then-retrieve rows (the most common one), 0 when there are none."""
    rows = frame[(frame["dataset"] == dataset) & (frame["method"] == "clusterretri") & (frame["retrieval"] == "cluster")]
    return int(rows["K"].mode()[0]) if len(rows) else 0


def gallery_quality(folder: Path, dataset: str, K: int, device: str = "auto") -> pd.DataFrame | None:
    """Purity, NMI and ARI of k-means with ``K`` on the unseen photos of the first ClusterRetri L_DA 0.1 seed 0 run of
    ``dataset`` (``cluster_analysis.cluster_quality``); None when there is no such run or K does not fit."""
    try:
        _, run_dir = conventions.pick_run(load_results(folder), dataset)
    except ValueError:
        return None
    model, config = load_trained(run_dir, device=device)
    gallery, labels = scoring.split_features(model, config, "zero", device=device)["photo"]
    return cluster_analysis.cluster_quality(gallery, labels, [K]) if 0 < K <= len(gallery) else None


def context_sentences(frame: pd.DataFrame, folder: Path, dataset: str, device: str = "auto") -> list[str]:
    """The convergence sentence and, with a ClusterRetri run, the gallery's cluster structure, of ``dataset``."""
    out = [findings.convergence_sentence(findings.convergence(frame, dataset))]
    K = cluster_K(frame, dataset)
    quality = gallery_quality(folder, dataset, K, device) if K else None
    if quality is not None:
        out.append(findings.cluster_context_sentence(quality, K))
    return out
