"""Measures of the gap between sketch and photo feature distributions (arrays in, numbers out).

  mmd_rbf            squared maximum mean discrepancy with a Gaussian kernel, unbiased estimate;
                     bandwidth = median pairwise distance of the pooled sample unless given
  frechet_distance   ||mu_s - mu_p||^2 + Tr(S_s + S_p - 2 (S_s S_p)^{1/2}) between Gaussian fits
                     (the FID formula), on whatever features it is given
  channel_softmax    per-sample softmax over channels (what ClusterRetri's L_DA matches to a
                     softmax of N(0, I) samples)
Features are L2-normalised first by default, as retrieval sees them.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import linalg


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def mmd_rbf(x: np.ndarray, y: np.ndarray, bandwidth: float | None = None, normalize: bool = True) -> float:
    x, y = (_normalise(x), _normalise(y)) if normalize else (np.asarray(x, float), np.asarray(y, float))
    if len(x) < 2 or len(y) < 2:
        raise ValueError("mmd_rbf needs at least two samples per side")
    z = np.concatenate([x, y])
    sq = np.maximum((z ** 2).sum(1)[:, None] + (z ** 2).sum(1)[None, :] - 2 * z @ z.T, 0)
    if bandwidth is None:
        bandwidth = float(np.sqrt(np.median(sq[np.triu_indices(len(z), 1)]))) or 1.0
    k = np.exp(-sq / (2 * bandwidth ** 2))
    n, m = len(x), len(y)
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                 - 2 * kxy.mean())


def frechet_distance(x: np.ndarray, y: np.ndarray, normalize: bool = True, eps: float = 1e-6) -> float:
    x, y = (_normalise(x), _normalise(y)) if normalize else (np.asarray(x, float), np.asarray(y, float))
    mu_x, mu_y = x.mean(0), y.mean(0)
    cov_x, cov_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    offset = np.eye(len(mu_x)) * eps  # keeps the square root finite for rank-deficient covariances
    covmean = linalg.sqrtm((cov_x + offset) @ (cov_y + offset))
    covmean = covmean.real
    return float(((mu_x - mu_y) ** 2).sum() + np.trace(cov_x) + np.trace(cov_y) - 2 * np.trace(covmean))


def gap_table(sketch: np.ndarray, sketch_labels, photo: np.ndarray, photo_labels, class_names=None,
              max_per_class: int = 200, seed: int = 0) -> pd.DataFrame:
    """MMD and Frechet distance between sketch and photo features, overall and per class."""
    rng = np.random.default_rng(seed)
    sketch_labels, photo_labels = np.asarray(sketch_labels), np.asarray(photo_labels)

    def sample(idx):
        return idx if len(idx) <= max_per_class else rng.choice(idx, max_per_class, replace=False)

    rows = []
    for c in np.unique(sketch_labels):
        s, p = sample(np.flatnonzero(sketch_labels == c)), sample(np.flatnonzero(photo_labels == c))
        if len(s) >= 2 and len(p) >= 2:
            rows.append({"class": class_names[c] if class_names is not None else int(c),
                         "mmd": mmd_rbf(sketch[s], photo[p]), "frechet": frechet_distance(sketch[s], photo[p])})
    s = sample(np.arange(len(sketch))) if len(sketch) > 4 * max_per_class else np.arange(len(sketch))
    p = sample(np.arange(len(photo))) if len(photo) > 4 * max_per_class else np.arange(len(photo))
    s, p = s[: 4 * max_per_class], p[: 4 * max_per_class]
    rows.append({"class": "(all)", "mmd": mmd_rbf(sketch[s], photo[p]), "frechet": frechet_distance(sketch[s], photo[p])})
    return pd.DataFrame(rows).set_index("class")


def channel_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)
