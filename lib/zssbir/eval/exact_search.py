"""Exact nearest-neighbour ranking of a gallery, and score blocks for full-gallery metrics.

Metrics (``metric=``):
  "cosine"     similarity q.g / (|q| |g|), higher first. With ``normalize=True`` (default) the
               features are L2-normalised first and the score is the inner product.
  "euclidean"  distance |q - g|, smaller first (computed as sqrt(max(|q|^2 + |g|^2 - 2 q.g, 0))).
On L2-normalised features d^2 = 2 - 2 cos, a strictly decreasing function of cos, so both metrics
give the same ranking (in floating point, up to rounding of near-ties at the ~1e-7 level in
float32; float64 features remove that).

Backends (``backend=``): "faiss" (IndexFlatIP / IndexFlatL2, exact brute force), "torch" (float32
or float64 matmul, blockwise) or "auto" (faiss when importable). The order of items with exactly
equal scores is backend-specific here; use ``zssbir.eval.metrics.evaluate`` (explicit tie policies) on
``score_blocks`` for metrics. Inputs may be numpy arrays or torch tensors; bad inputs (wrong
dimensions, NaN/inf, zero-norm rows when normalising) raise ``ValueError`` saying how to fix them.

Device (issue 24). ``evaluate_features(..., device="auto")`` scores on CUDA when there is one: the score
blocks (float32 matmuls in full precision, never TF32) and the relevant items' ranks are computed there
(``relevant_ranks``' torch backend), in blocks sized to the device's free memory, and only the ranks
come to the host for the metric values. On the CPU it is the numpy path as before. The ranks equal the
numpy path's on the same scores; scores computed on a GPU can differ from the CPU's in the last bits
(another summation order), which moves near-ties at the ~1e-7 level.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from ..runtime import resolve_device
from .relevant_ranks import RANK_BACKENDS

METRICS = ("cosine", "euclidean")
BACKENDS = ("auto", "faiss", "torch")
# device memory per score-block element the device path plans for: the float32 scores, their int64 ranking
# keys, the int32 positions of the binary search, and the stable sorts of rows with ties (issue 24)
DEVICE_BYTES_PER_SCORE = 64
DEVICE_MEMORY_FRACTION = 0.5  # of the free device memory, for one block


def as_features(x, name: str = "features") -> torch.Tensor:
    """A 2-D float32/float64 CPU tensor of finite values (other dtypes become float32)."""
    t = x.detach().cpu() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D (items x dimensions), got shape {tuple(t.shape)}; "
                         "reshape a single vector with x[None, :]")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)})")
    if t.dtype not in (torch.float32, torch.float64):
        t = t.float()
    if not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t)).any(1).nonzero()[0])
        raise ValueError(f"{name} contain NaN or inf (first in row {bad}); fix the encoder output or drop "
                         "those items before retrieval")
    return t


def l2_normalize(x: torch.Tensor, name: str = "features") -> torch.Tensor:
    """Rows divided by their L2 norm (a new tensor); zero-norm rows raise ValueError."""
    norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    zero = (norms[:, 0] == 0).nonzero()
    if len(zero):
        raise ValueError(f"{name} has {len(zero)} zero-norm rows (first: row {int(zero[0])}), which have no "
                         "direction to normalise; drop them or pass normalize=False with metric='euclidean'")
    return x / norms


def prepare(query, gallery, *, metric: str = "cosine", normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate and (optionally) L2-normalise both sides; same dtype for both."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric={metric!r}; expected one of {METRICS}")
    q, g = as_features(query, "query features"), as_features(gallery, "gallery features")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query features have {q.shape[1]} dimensions but gallery features have {g.shape[1]}; "
                         "both sides must come from the same embedding space")
    if q.dtype != g.dtype:
        q, g = q.double(), g.double()
    if normalize:
        return l2_normalize(q, "query features"), l2_normalize(g, "gallery features")
    if metric == "cosine":
        for t, name in ((q, "query"), (g, "gallery")):
            norms = torch.linalg.vector_norm(t, dim=1)
            if not torch.allclose(norms, torch.ones_like(norms), atol=1e-3):
                raise ValueError(f"metric='cosine' with normalize=False needs unit-norm {name} features "
                                 f"(norms range {float(norms.min()):.4g}..{float(norms.max()):.4g}); "
                                 "pass normalize=True")
    return q, g


@contextmanager
def _full_precision():
    """float32 matmuls in IEEE float32 (no TF32) inside: scores must not depend on a global speed setting."""
    before = torch.get_float32_matmul_precision()
    if before != "highest":
        torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        if before != "highest":
            torch.set_float32_matmul_precision(before)


def _block_scores(q: torch.Tensor, g: torch.Tensor, g_sq: torch.Tensor | None, metric: str,
                  out: torch.Tensor | None = None) -> torch.Tensor:
    if q.device.type != "cpu":
        with _full_precision():
            s = torch.matmul(q, g.T, out=out)
    else:
        s = torch.matmul(q, g.T, out=out)
    if metric == "euclidean":  # s <- sqrt(max(|q|^2 + |g|^2 - 2 q.g, 0)), in place
        s.mul_(-2).add_(g_sq[None, :]).add_((q * q).sum(1, keepdim=True)).clamp_(min=0).sqrt_()
    return s


def score_blocks(query, gallery, *, metric: str = "cosine", normalize: bool = True, block_size: int = 1024,
                 reuse_buffer: bool = False, device: str | torch.device | None = None
                 ) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield ``(start, end, scores)`` for query blocks: cosine similarities or Euclidean distances
    (float32, or float64 for float64 features) against the whole gallery, one block at a time.

    Memory is one block (block_size x N). With ``reuse_buffer=True`` the same buffer is overwritten
    by the next block (much faster for large galleries: no fresh pages per block); consume each
    block before asking for the next (``zssbir.eval.metrics.evaluate`` does). ``device``: where the
    blocks are computed and stay (None: the CPU); checks and normalisation run on the CPU first.
    Feed to ``evaluate(..., higher_is_better=(metric == "cosine"))``, or use ``evaluate_features``.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    q, g = prepare(query, gallery, metric=metric, normalize=normalize)
    if device is not None:
        q, g = q.to(device), g.to(device)
    g_sq = (g * g).sum(1) if metric == "euclidean" else None
    buf = torch.empty((min(block_size, len(q)), len(g)), dtype=q.dtype, device=q.device) if reuse_buffer else None
    for start in range(0, len(q), block_size):
        end = min(start + block_size, len(q))
        out = buf[:end - start] if buf is not None else None
        yield start, end, _block_scores(q[start:end], g, g_sq, metric, out)


def search(query, gallery, k: int | None = None, *, metric: str = "cosine", backend: str = "auto",
           normalize: bool = True, block_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (all items if ``k is None``) of the gallery for every query.

    Returns ``(scores, indices)``, both (Q, k) numpy arrays, best first: cosine similarities
    (descending) or Euclidean distances (ascending, not squared). The torch backend orders
    exactly equal scores by gallery index; faiss's order among exact ties is its own.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend={backend!r}; expected one of {BACKENDS}")
    q, g = prepare(query, gallery, metric=metric, normalize=normalize)
    k = len(g) if k is None else int(k)
    if not 1 <= k <= len(g):
        raise ValueError(f"k must be between 1 and the gallery size {len(g)}, got {k}")
    if backend == "auto":
        backend = "faiss" if _faiss() is not None else "torch"
    if backend == "faiss":
        return _search_faiss(q, g, k, metric)
    scores, indices = [], []
    for _, _, s in score_blocks(q, g, metric=metric, normalize=False, block_size=block_size):
        if k == len(g):
            v, i = torch.sort(s, dim=1, descending=metric == "cosine", stable=True)
        else:  # topk picks the k best; re-sort them by (score, index)
            v, i = torch.topk(s, k, dim=1, largest=metric == "cosine")
            i, order = torch.sort(i, dim=1)
            v = v.gather(1, order)
            v, o2 = torch.sort(v, dim=1, descending=metric == "cosine", stable=True)
            i = i.gather(1, o2)
        scores.append(v.numpy())
        indices.append(i.numpy())
    return np.concatenate(scores), np.concatenate(indices).astype(np.int64)


def _faiss():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _search_faiss(q: torch.Tensor, g: torch.Tensor, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    faiss = _faiss()
    if faiss is None:
        raise ImportError("backend='faiss' needs faiss (pip install faiss-cpu); or use backend='torch'")
    qn = np.ascontiguousarray(q.numpy(), dtype=np.float32)
    gn = np.ascontiguousarray(g.numpy(), dtype=np.float32)
    index = faiss.IndexFlatIP(gn.shape[1]) if metric == "cosine" else faiss.IndexFlatL2(gn.shape[1])
    index.add(gn)
    scores, indices = index.search(qn, k)
    if metric == "euclidean":
        scores = np.sqrt(np.maximum(scores, 0))
    return scores, indices.astype(np.int64)


def scoring_device(device: str | torch.device = "auto") -> torch.device:
    """Where ``evaluate_features`` scores and ranks: ``runtime.resolve_device`` (so ``ZSSBIR_DEVICE`` holds, and
    "cuda" without a GPU says so), except that "auto" means CUDA or else the CPU (never Apple's MPS, which has
    no float64 for the scores that need it); an explicit device must be CUDA or the CPU."""
    dev = resolve_device(device)
    if dev.type in ("cpu", "cuda"):
        return dev
    if isinstance(device, str) and device == "auto":
        return torch.device("cpu")
    raise ValueError(f"exact search scores and ranks on 'cuda' or 'cpu', not on {dev}; pass device='auto' (CUDA "
                     "when there is one, else the CPU) or device='cpu'")


def device_block_size(n_queries: int, n_gallery: int, device: torch.device) -> int:
    """Queries per score block on ``device``: on CUDA as many as ``DEVICE_MEMORY_FRACTION`` of its free memory
    holds at ``DEVICE_BYTES_PER_SCORE`` bytes per score (about 20,000 rows of QuickDraw-Ext's 54,151-photo
    gallery on an empty 141 GB GPU); 1024 elsewhere."""
    if device.type != "cuda":
        return min(1024, max(1, n_queries))
    free, _ = torch.cuda.mem_get_info(device)
    rows = int(free * DEVICE_MEMORY_FRACTION) // (DEVICE_BYTES_PER_SCORE * max(1, n_gallery))
    return max(1, min(n_queries, rows))


def evaluate_features(query_feats, gallery_feats, query_labels, gallery_labels, *, metric: str = "cosine",
                      normalize: bool = True, block_size: int | None = None, device: str | torch.device = "auto",
                      rank_backend: str = "auto", **evaluate_kwargs):
    """``zssbir.eval.metrics.evaluate`` on exact cosine similarities (or Euclidean distances) computed
    block by block, never holding the full score matrix. Extra keyword arguments (metrics, preset,
    ap, average, ties, seed, ...) go to ``evaluate``; the score direction is set from ``metric``.

    ``device`` (``scoring_device``): "auto" scores on CUDA when there is one, else on the CPU. ``rank_backend``:
    "auto" ranks with numpy on the CPU (the path of every earlier result) and with torch on CUDA; "torch"
    forces the torch ranking (on the CPU too: the same ranks, to check it), "numpy" needs the CPU.
    ``block_size``: queries per score block; None: 1024 on the CPU, sized to the free memory on CUDA
    (``device_block_size``)."""
    from .metrics import evaluate

    if "higher_is_better" in evaluate_kwargs:
        raise ValueError("higher_is_better follows from metric= (cosine: higher first, euclidean: smaller first)")
    if rank_backend not in ("auto",) + RANK_BACKENDS:
        raise ValueError(f"unknown rank_backend={rank_backend!r}; expected 'auto' or one of {RANK_BACKENDS}")
    dev = scoring_device(device)
    if rank_backend == "auto":
        rank_backend = "numpy" if dev.type == "cpu" else "torch"
    if rank_backend == "numpy" and dev.type != "cpu":
        raise ValueError(f"rank_backend='numpy' ranks on the CPU; pass device='cpu', or rank_backend='torch' (or "
                         f"'auto') to rank on {dev}")
    if rank_backend == "numpy":
        block_size = 1024 if block_size is None else block_size
        blocks = score_blocks(query_feats, gallery_feats, metric=metric, normalize=normalize, block_size=block_size,
                              reuse_buffer=True)
        return evaluate(blocks, query_labels, gallery_labels, higher_is_better=metric == "cosine",
                        block_size=block_size, **evaluate_kwargs)
    q, g = prepare(query_feats, gallery_feats, metric=metric, normalize=normalize)
    if block_size is None:
        block_size = device_block_size(len(q), len(g), dev)
    blocks = score_blocks(q, g, metric=metric, normalize=False, block_size=block_size, reuse_buffer=True,
                          device=dev)
    return evaluate(blocks, query_labels, gallery_labels, higher_is_better=metric == "cosine",
                    block_size=block_size, rank_backend="torch", device=dev, **evaluate_kwargs)
