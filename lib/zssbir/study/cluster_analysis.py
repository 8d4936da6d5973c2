"""What notebook 03 computes on one run's unseen features beyond the grid: cluster quality against the
classes over K, the fuse-weight sweep, and the sentences that close the notebook."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..eval.cluster_grid import cluster_stats
from ..eval.cluster_retrieval import ClusterIndex, evaluate_clustered


def cluster_quality(gallery, gallery_labels, Ks: Sequence[int]) -> pd.DataFrame:
    """Purity, NMI and ARI of k-means (M = 1) clusters of the gallery against its classes, per K
    (K above the gallery size is left out)."""
    rows = []
    for K in sorted(Ks):
        if K <= len(gallery):
            stats = cluster_stats(ClusterIndex.fit(gallery, 1, K).codes[:, 0], gallery_labels)
            rows.append({"K": K, **{m: stats[m] for m in ("purity", "nmi", "ari")}})
    return pd.DataFrame(rows).set_index("K")


def fuse_sweep(query, gallery, query_labels, gallery_labels, M: int, K: int, weights: Sequence[float],
               **evaluate_kwargs) -> pd.DataFrame:
    """Cluster-then-retrieve "fuse" scores for each fuse weight (one row per weight, a column per metric)."""
    return pd.DataFrame([{"fuse_weight": w, **{m: r.value for m, r in evaluate_clustered(
        query, gallery, query_labels, gallery_labels, M, K, variant="fuse", fuse_weight=w, **evaluate_kwargs).items()}}
        for w in weights]).set_index("fuse_weight")


def cluster_sentences(exact_map: float, quality: pd.DataFrame, grid: pd.DataFrame, sweep: pd.DataFrame,
                      ties: pd.DataFrame, n_classes: int, digits: int = 3) -> list[str]:
    """The closing sentences of the cluster analysis, computed from its tables."""
    out = []
    at = quality.loc[n_classes] if n_classes in quality.index else None
    if at is not None:
        out.append(f"With K = {n_classes} (the number of unseen classes) k-means clusters have purity "
                   f"{at['purity']:.{digits}f} and NMI {at['nmi']:.{digits}f} against the classes.")
    maps = grid[grid["metric"] == "map@all"]
    if len(maps):
        best = maps.loc[maps["value"].idxmax()]
        verdict = "above" if best["value"] > exact_map else "not above"
        out.append(f"The best grid point is {best['variant']} M={int(best['M'])} K={int(best['K'])} with mAP@all "
                   f"{best['value']:.{digits}f}, {verdict} exact retrieval ({exact_map:.{digits}f}).")
    if "map@all" in sweep:
        w = sweep["map@all"].idxmax()
        out.append(f"The fuse sweep peaks at lambda_f = {w:g} (mAP@all {sweep['map@all'].max():.{digits}f}).")
    for scores, rows in ties.groupby("scores", sort=False):
        random = rows[rows["tie rule"].str.startswith("random")]["map@all"]
        stable = rows[rows["tie rule"].str.startswith("stable")]["map@all"]
        if len(random) and len(stable):
            out.append(f"{scores}: random tie orders move mAP@all by {random.max() - random.min():.{digits}f} "
                       f"(max - min over {len(random)} orders); the stable order gives "
                       f"{stable.iloc[0] - random.mean():+.{digits}f} against their mean.")
    return out
