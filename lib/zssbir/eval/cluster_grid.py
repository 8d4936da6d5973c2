"""The (M, K, variant) grid of cluster-then-retrieve, and cluster statistics against class labels.

The method (PQ fit, ADC, variants) is defined in ``zssbir.eval.cluster_retrieval``.

Cluster statistics (``cluster_stats``) compare an assignment of the N gallery items to clusters
with their class labels (labels are never used to fit):
  purity      (1/N) * sum over clusters of the size of the cluster's largest class;
  nmi         ``sklearn.metrics.normalized_mutual_info_score`` (arithmetic normalisation);
  ari         ``sklearn.metrics.adjusted_rand_score``;
  n_clusters  the number of non-empty clusters.
For PQ codes (N, M) the "cluster" of an item is its whole code tuple (the cell of the product
quantiser, i.e. the group of items whose ADC scores tie); at M = 1 that is the k-means cluster.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
import time

import numpy as np

from .cluster_retrieval import (DEFAULT_FUSE_WEIGHT, DEFAULT_SEED, ClusterIndex, Prepared, check_mk, prepare_features,
                                resolve_ties)
from .metrics import DEFAULT_METRICS

GRID_MS = (1, 2, 4, 8, 16)  # sub-spaces in the released logs
GRID_KS = (8, 16, 25, 32, 64, 128, 256)  # centroids per sub-space in the released logs
GRID_COLUMNS = ("M", "K", "variant", "ties", "metric", "value", "fuse_weight", "fit_seconds", "eval_seconds",
                "skipped", "reason")


def grid(query, gallery, query_labels, gallery_labels, *, Ms: Sequence[int] = GRID_MS, Ks: Sequence[int] = GRID_KS,
         variants: Sequence[str] = ("adc", "fuse", "rerank"), ties: Sequence[str] = ("random",),
         metrics: Sequence[str] | str = DEFAULT_METRICS, preset: str | None = None, seed: int = DEFAULT_SEED,
         fuse_weight: float = DEFAULT_FUSE_WEIGHT, niter: int = 20, normalize: bool = True, block_size: int = 1024,
         progress: Callable[[str], None] | None = None, **evaluate_kwargs):
    """Evaluate every (M, K, variant, tie policy) and return a long pandas DataFrame, one row per
    metric value (columns ``GRID_COLUMNS``). One index is fitted per (M, K) and shared by the
    variants. ``ties`` lists the policies for "adc" and "fuse" ("stable", "random" with ``seed``);
    "rerank" always uses "secondary" (one row set). An (M, K) that cannot be fitted (M does not
    divide D, K > gallery size) gives ONE row with ``skipped=True``, ``reason`` the error message
    and NaN/None elsewhere. ``progress``, if given, is called with a line per fitted (M, K).
    ``evaluate_kwargs`` go to ``ClusterIndex.evaluate`` (metric conventions, ``skip_missing``,
    ``num_threads``, ``path``: "auto" ranks "adc" by its PQ cells, "scores" forces the (Q, N)
    distance blocks for every variant; the values are the same)."""
    import pandas as pd

    names = [metrics] if isinstance(metrics, str) else list(metrics)
    runs = [(v, t) for v in variants for t in ((None,) if v == "rerank" else ties)]
    runs = [(v, resolve_ties(v, t)) for v, t in runs]  # validates variants and tie policies up front
    g = prepare_features(gallery, "gallery features", normalize)
    q = prepare_features(query, "query features", normalize)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query features have {q.shape[1]} dimensions but gallery features have {g.shape[1]}")
    # what every fit and evaluation prepares from g and q, prepared once for all points
    g, q = Prepared(g, "gallery features", normalize), Prepared(q, "query features", normalize)
    rows = []
    for M in Ms:
        for K in Ks:
            try:
                check_mk(g.tensor.shape[1], len(g), M, K)
            except ValueError as err:
                rows.append(dict(M=M, K=K, variant=None, ties=None, metric=None, value=np.nan, fuse_weight=np.nan,
                                 fit_seconds=np.nan, eval_seconds=np.nan, skipped=True, reason=str(err)))
                continue
            t0 = time.perf_counter()
            index = ClusterIndex.fit(g, M, K, seed, niter=niter, normalize=normalize)
            fit_s = time.perf_counter() - t0
            for variant, tie in runs:
                t0 = time.perf_counter()
                res = index.evaluate(q, query_labels, gallery_labels, variant=variant, ties=tie, metrics=names,
                                     preset=preset, fuse_weight=fuse_weight, block_size=block_size,
                                     tie_seed=seed, **evaluate_kwargs)
                eval_s = time.perf_counter() - t0
                for name in names:
                    rows.append(dict(M=M, K=K, variant=variant, ties=tie, metric=name, value=res[name].value,
                                     fuse_weight=fuse_weight if variant == "fuse" else np.nan,
                                     fit_seconds=fit_s, eval_seconds=eval_s, skipped=False, reason=""))
            if progress is not None:
                progress(f"M={M} K={K}: fit {fit_s:.2f} s, {len(runs)} evaluations")
    return pd.DataFrame(rows, columns=list(GRID_COLUMNS))


def _stats(assign: np.ndarray, labels: np.ndarray) -> dict:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
    from sklearn.metrics.cluster import contingency_matrix

    cm = contingency_matrix(labels, assign)  # (classes, clusters)
    return {"purity": float(cm.max(axis=0).sum() / len(assign)),
            "nmi": float(normalized_mutual_info_score(labels, assign)),
            "ari": float(adjusted_rand_score(labels, assign)),
            "n_clusters": int(len(np.unique(assign)))}


def cluster_stats(assignments, labels) -> dict:
    """Purity, NMI, ARI and number of clusters of ``assignments`` against class ``labels``.

    ``assignments``: (N,) cluster ids, or (N, M) PQ codes (``ClusterIndex.codes``). For codes the
    top-level values are those of the code tuple (the PQ cell; for M = 1 the k-means cluster);
    with M > 1 the result also holds ``"per_subspace"``: a list of M such dicts, one per column.
    """
    a = np.asarray(assignments)
    y = np.asarray(labels)
    if a.ndim not in (1, 2) or (a.ndim == 2 and a.shape[1] == 0):
        raise ValueError(f"assignments must be (N,) cluster ids or (N, M) codes, got shape {a.shape}")
    if y.ndim != 1 or len(y) != len(a):
        raise ValueError(f"labels must be 1-D with one label per item ({len(a)}), got shape {y.shape}")
    if len(a) == 0:
        raise ValueError("cluster_stats needs at least one item")
    if a.ndim == 1:
        return _stats(a, y)
    cells = np.unique(a, axis=0, return_inverse=True)[1].reshape(-1)
    out = _stats(cells, y)
    if a.shape[1] > 1:
        out["per_subspace"] = [_stats(a[:, m], y) for m in range(a.shape[1])]
    return out
