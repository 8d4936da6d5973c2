"""A generic transductive re-ranker: database-side augmentation (DBA) followed by alpha query expansion (alpha-QE).

Cluster-then-retrieve uses the gallery's photo-to-photo structure (the photos are clustered before any query
is ranked), so its gain over exact retrieval mixes two things: clustering, and transduction (using the gallery at
all). This is the standard way image retrieval uses that structure without clustering (Radenovic, Tolias and Chum,
"Fine-tuning CNN image retrieval with no human annotation", TPAMI 2019, section 5): on L2-normalised features,

    g_i' = normalise( sum_{j in N_k(g_i)} max(cos(g_i, g_j), 0)^alpha * g_j )      (DBA; N_k includes g_i itself)
    q'   = normalise( q + sum_{j in N_k(q)} max(cos(q, g_j'), 0)^alpha * g_j' )     (alpha-QE over the augmented photos)

and photos are ranked by cos(q', g_j'), exactly. With alpha = 0 both are plain means of the k neighbours (average
query expansion); ``k = 1`` leaves the features unchanged (each photo's nearest photo is itself; a query's nearest
photo is then added to it, so ``query_expansion=False`` gives plain exact retrieval with k = 1).
"""
from __future__ import annotations

import numpy as np

from .exact_search import as_features, l2_normalize, search

DEFAULT_K = 10        # neighbours of a photo (DBA) and of a query (QE)
DEFAULT_ALPHA = 3.0   # the weights' exponent (alpha-QE)


def _weighted_mean(base: np.ndarray | None, scores: np.ndarray, neighbours: np.ndarray, pool: np.ndarray,
                   alpha: float) -> np.ndarray:
    weights = np.maximum(scores, 0.0) ** alpha                  # (N, k)
    out = np.einsum("nk,nkd->nd", weights, pool[neighbours])    # sum of the weighted neighbours
    if base is not None:
        out = out + base
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms > 0, norms, 1.0)


def expand(query, gallery, *, k: int = DEFAULT_K, alpha: float = DEFAULT_ALPHA,
           query_expansion: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The re-ranker's (query, gallery) features, L2-normalised, float32: the gallery augmented by its own
    ``k`` nearest photos, each query expanded by its ``k`` nearest augmented photos."""
    if not 1 <= k:
        raise ValueError(f"k (neighbours) must be at least 1, got {k}")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    q = l2_normalize(as_features(query, "query features").float(), "query features").numpy()
    g = l2_normalize(as_features(gallery, "gallery features").float(), "gallery features").numpy()
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query and gallery features differ in width ({q.shape[1]} and {g.shape[1]})")
    k = min(k, len(g))
    scores, neighbours = search(g, g, k, backend="torch")     # torch: ties in gallery order, deterministic
    g_aug = _weighted_mean(None, scores, neighbours, g, alpha).astype(np.float32)
    if not query_expansion:
        return q, g_aug
    scores, neighbours = search(q, g_aug, k, backend="torch")
    return _weighted_mean(q, scores, neighbours, g_aug, alpha).astype(np.float32), g_aug


def evaluate_transductive(query, gallery, query_labels, gallery_labels, *, k: int = DEFAULT_K,
                          alpha: float = DEFAULT_ALPHA, **evaluate_kwargs) -> dict:
    """Exact cosine retrieval on the re-ranker's features (``expand``), scored by
    ``exact_search.evaluate_features`` (same keyword arguments: metrics, preset, ties, ...)."""
    from .exact_search import evaluate_features

    q, g = expand(query, gallery, k=k, alpha=alpha)
    return evaluate_features(q, g, query_labels, gallery_labels, **evaluate_kwargs)
