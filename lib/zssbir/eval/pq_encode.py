"""The codes of a product quantiser: every item's nearest centroid in every sub-space (``ClusterIndex.fit``,
and the explorer's and the 2-d walkthrough's queries), by float64 distances at float32 cost."""
from __future__ import annotations

import numpy as np
import torch


def encode(gallery: torch.Tensor, centroids: np.ndarray) -> np.ndarray:
    """(N, M) int64 index of the nearest centroid of every item in every sub-space, by float64 distances
    ``|c|^2 - 2 x.c`` (the constant |x|^2 left out; exact ties go to the lowest centroid index).

    Computed in float32 first: an item whose two nearest centroids differ by more than twice the bound
    on the float32 and float64 rounding errors (``_rounding_bound``) has the same nearest centroid in
    float64, strictly; the others (exact and near ties, a few in a million) are computed again in
    float64. So the codes are those of float64 throughout, at float32 cost."""
    M, K, ds = centroids.shape
    x = gallery.float()
    codes = np.zeros((len(x), M), dtype=np.int64)
    if K == 1:
        return codes
    for m in range(M):
        c = torch.from_numpy(np.ascontiguousarray(centroids[m], dtype=np.float32))
        sub = x[:, m * ds:(m + 1) * ds]
        dist = torch.addmm((c * c).sum(1)[None, :], sub, c.T, alpha=-2)
        best = dist.topk(2, dim=1, largest=False)
        bound = _rounding_bound(sub, c)
        unsure = torch.nonzero(~(best.values[:, 1] - best.values[:, 0] > bound)).reshape(-1)  # NaN, inf: redo
        codes[:, m] = best.indices[:, 0].numpy()
        if len(unsure):
            c64, s64 = c.double(), sub[unsure].double()
            codes[unsure.numpy(), m] = ((c64 * c64).sum(1)[None, :] - 2 * s64 @ c64.T).argmin(1).numpy()
    return codes


def _rounding_bound(sub: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Per item, twice a bound on |float32 - exact| + |float64 - exact| of ``|c_k|^2 - 2 x.c_k`` over all k:
    sums of d products in any order err by at most gamma_d = d u / (1 - d u) of the sum of their absolute
    values, |x.c| <= |x| |c| (Cauchy-Schwarz), and the final subtraction adds u of its result; u = 2^-24
    (float32), 2^-53 (float64). Doubled once more for the norms' own rounding; plus, for values so small
    that float32 underflows (where relative bounds fail), an absolute 2^-149 per operation."""
    d = sub.shape[1]
    scale = (c * c).sum(1).max() + 2 * sub.norm(dim=1) * c.norm(dim=1).max()
    per_unit = sum((d + 1) * u / (1 - (d + 1) * u) for u in (2.0 ** -24, 2.0 ** -53))
    return 2 * 2 * (per_unit * scale + 2 * (d + 2) * 2.0 ** -149)
