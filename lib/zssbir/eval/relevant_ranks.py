"""Exact ranks of the relevant gallery items of every query, block by block, in bounded memory.

Every retrieval metric in ``zssbir.eval.metrics`` is a function of one thing: for each query, the
1-based positions (ranks) of its relevant gallery items in the full ranking of the gallery.
This module computes those ranks exactly, under an explicit total order:

* Scores are SIMILARITIES by default: higher first. Pass ``higher_is_better=False`` for
  distances (smaller first). -0.0 and +0.0 are equal. NaN or inf raises ``ValueError``.
* Equal scores are ordered by the tie policy ``ties``:
  ``"stable"``     by gallery index, lowest first (what a stable argsort gives);
  ``"random"``     by a random permutation of the gallery drawn once from
                   ``np.random.default_rng(seed)``, the same for every query (equivalent to shuffling
                   the gallery with that seed, then ordering ties by shuffled position);
  ``"secondary"``  by a second score array of the same shape (e.g. the exact distance when the
                   primary score is a cluster similarity; higher first unless
                   ``secondary_higher_is_better=False``), remaining ties by gallery index.
* Relevant means: gallery label equal to the query label.

How (exact, no approximation). Each score is mapped to an order-preserving integer (the IEEE
sign-magnitude bits turned into two's complement, negated for higher-first). For float32 scores
the 64-bit key is ``score_int << 32 | tiebreak`` with a 32-bit tiebreak (index, random rank or
ordered float32 secondary), so keys follow the total order above. Per query row the keys are
sorted in place (numpy's AVX-512 sort, in cache-sized row chunks over ``num_threads`` threads) and
the keys of the relevant items are located by binary search: the number of keys before a relevant
key is the number of items ranked ahead of it. (Sorting the 32-bit score alone is not cheaper: at
50k items, float32 scores collide often enough that most rows would need the tiebreak anyway.)
Where keys can be equal (float64 scores, or a secondary tie), rows with a tie touching a relevant
item are recomputed with a full ``np.lexsort`` of (score, secondary, tiebreak). The score matrix is
consumed block by block and never needs to exist whole.

Two backends compute the same integers (``backend=``; issue 24). "numpy" (the default) is the above, on
the CPU. "torch" keeps each score block where it is (a CUDA tensor stays on the GPU; ``device=`` moves
numpy blocks there) and builds the same keys with torch: per query class, the relevant keys are sorted
and every gallery key is binary-searched among them (``torch.searchsorted``); a histogram of those
positions, summed, counts the items ranked ahead of each relevant one, with no sort of the gallery.
Keys are unique for "stable" and "random" on float32 scores (score << 32 | tiebreak), so that count is
the rank. Where keys can tie (float64 scores, "secondary"), rows whose relevant items tie with another
key are ranked by stable sorts of the tiebreak, secondary and score keys (the ``np.lexsort`` order).
Only the ranks (b x n_relevant integers per class) come back to the host. The order is the same total
order, so the ranks are the numpy backend's, bit for bit, on the same scores.
"""
from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
import sys

import numpy as np
import torch

from .device_ranks import TorchRanker, as_device_tensor
from .rank_blocks import (RANK_BACKENDS, TIES, LabelIndex, RankBlock, as_numpy, check_secondary, check_shape,
                          is_matrix, iter_score_blocks, label_index, raw_score_blocks, tiebreak_ranks)

_F32_NONFINITE = 0x7F800000  # |bits| at or above this: inf or NaN
_F64_NONFINITE = 0x7FF0000000000000
_CHUNK_BYTES = 1 << 22  # key buffer per worker (4 MiB, stays in L2/L3 while sorted)

__all__ = ["TIES", "RANK_BACKENDS", "LabelIndex", "RankBlock", "label_index", "tiebreak_ranks", "iter_score_blocks",
           "iter_rank_blocks", "rank_positions", "ranked_order"]


def iter_rank_blocks(scores, labels: LabelIndex, *, higher_is_better: bool = True, ties: str = "stable",
                     seed: int | None = None, secondary=None, secondary_higher_is_better: bool | None = None,
                     block_size: int = 1024, num_threads: int | None = None, backend: str = "numpy",
                     device: str | torch.device | None = None, tie_groups: bool = False) -> Iterator[RankBlock]:
    """Yield the exact ranks of the relevant items of every query (see module docstring).

    Queries whose class has no gallery item get no group (callers decide to raise or skip).
    ``backend="torch"`` ranks with torch where the blocks are (``device``: where to move them; None leaves
    tensors where they are and puts numpy blocks on the CPU), with the same results; with ``tie_groups`` its
    RankBlocks also carry the tie-group ends of the relevant items (``RankBlock.upper``, for ap="tie_merged").
    """
    if backend not in RANK_BACKENDS:
        raise ValueError(f"unknown backend={backend!r}; expected one of {RANK_BACKENDS}")
    if backend == "numpy" and tie_groups:
        raise ValueError("tie_groups=True needs backend='torch' (metrics.evaluate computes them from the score "
                         "blocks on the numpy backend)")
    tb = tiebreak_ranks(labels.n_gallery, ties, seed)
    if ties == "secondary" and secondary is None and is_matrix(scores):
        raise ValueError("ties='secondary' needs secondary= scores (same shape as scores)")
    if ties != "secondary" and secondary is not None:
        raise ValueError("secondary= scores are only used with ties='secondary'")
    sec_hib = higher_is_better if secondary_higher_is_better is None else secondary_higher_is_better
    if backend == "torch":
        ranker = None
        for start, end, block, sec in raw_score_blocks(scores, len(labels.query_codes), labels.n_gallery,
                                                        secondary=secondary, block_size=block_size):
            check_secondary(ties, sec)
            if ranker is None:
                where = torch.device(device) if device is not None else (
                    block.device if isinstance(block, torch.Tensor) else torch.device("cpu"))
                ranker = TorchRanker(labels, tb, ties, bool(higher_is_better), bool(sec_hib), where)
            yield ranker.rank_block(start, end, as_device_tensor(block, ranker.device),
                                    None if sec is None else as_device_tensor(sec, ranker.device), tie_groups)
        return
    ctx = _Context(labels, tb, ties, bool(higher_is_better), bool(sec_hib))
    threads = max(1, num_threads or torch.get_num_threads())
    with ThreadPoolExecutor(threads) as pool:
        for start, end, block, sec in iter_score_blocks(scores, len(labels.query_codes), labels.n_gallery,
                                                         secondary=secondary, block_size=block_size):
            check_secondary(ties, sec)
            yield ctx.rank_block(start, end, block, sec, pool, threads)


def rank_positions(scores, query_labels, gallery_labels, *, higher_is_better: bool = True, ties: str = "stable",
                   seed: int | None = None, secondary=None, secondary_higher_is_better: bool | None = None,
                   block_size: int = 1024, num_threads: int | None = None, backend: str = "numpy",
                   device: str | torch.device | None = None) -> list[np.ndarray]:
    """Per query, the ascending 1-based ranks of its relevant gallery items (empty if none).

    Holds every rank in memory (sum of class sizes per query): meant for small problems and
    inspection; ``zssbir.eval.metrics.evaluate`` streams instead. ``backend``, ``device``: see
    ``iter_rank_blocks`` (the same ranks either way).
    """
    labels = label_index(query_labels, gallery_labels)
    out = [np.empty(0, dtype=np.int64)] * len(labels.query_codes)
    for rb in iter_rank_blocks(scores, labels, higher_is_better=higher_is_better, ties=ties, seed=seed,
                               secondary=secondary, secondary_higher_is_better=secondary_higher_is_better,
                               block_size=block_size, num_threads=num_threads, backend=backend, device=device):
        for rows, ranks in rb.groups:
            for q, r in zip(rows, ranks):
                out[q] = r
    return out


class _Context:
    def __init__(self, labels: LabelIndex, tb: np.ndarray, ties: str, hib: bool, sec_hib: bool):
        if sys.byteorder != "little":
            raise RuntimeError("zssbir.eval.relevant_ranks assumes a little-endian machine")
        self.labels, self.tb, self.ties, self.hib, self.sec_hib = labels, tb, ties, hib, sec_hib
        n = labels.n_gallery
        self.chunk = int(np.clip(_CHUNK_BYTES // (8 * max(n, 1)), 1, 64))
        self.workspace: dict[int, tuple] = {}

    def rank_block(self, start, end, block, sec, pool, threads) -> RankBlock:
        codes = self.labels.query_codes[start:end]
        counts = self.labels.n_relevant[codes]
        offsets = np.concatenate([[0], np.cumsum(counts)])
        out = np.empty(int(offsets[-1]), dtype=np.int64)
        bounds = np.linspace(0, end - start, min(threads, end - start) + 1).astype(int)
        jobs = [pool.submit(self._rows, w, block, sec, codes, offsets, out, int(a), int(b), start)
                for w, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])) if b > a]
        for job in jobs:
            job.result()
        groups = []
        for c in np.unique(codes):
            n = int(self.labels.n_relevant[c])
            if n == 0:
                continue
            rows = np.flatnonzero(codes == c)
            groups.append((rows + start, out[offsets[rows][:, None] + np.arange(n)] + 1))
        return RankBlock(start, end, groups)

    def _buffers(self, worker: int):
        if worker not in self.workspace:
            m, n = self.chunk, self.labels.n_gallery
            tmp = np.empty((m, n), np.int64)  # int64 scratch; its int32 view serves float32 scores
            self.workspace[worker] = (np.empty((m, n), np.int64), np.empty((m, n), np.int32),
                                      np.empty((m, n), np.int32), tmp)
        return self.workspace[worker]

    def _rows(self, worker, block, sec, codes, offsets, out, a, b, start):
        keys, w32, w32b, tmp = self._buffers(worker)
        for r0 in range(a, b, self.chunk):
            m = min(self.chunk, b - r0)
            s, sc = block[r0:r0 + m], None if sec is None else sec[r0:r0 + m]
            unique = self._keys(s, sc, keys[:m], w32[:m], w32b[:m], tmp[:m], start + r0)
            for i in range(m):
                cols = self.labels.relevant[codes[r0 + i]]
                if len(cols) == 0:
                    continue
                pos = _positions(keys[i], cols, unique)
                if pos is None:  # keys may tie and one ties with a relevant item: exact lexsort
                    pos = self._exact_row(s[i], None if sc is None else sc[i], codes[r0 + i])
                out[offsets[r0 + i]:offsets[r0 + i + 1]] = pos

    def _keys(self, s, sec, k, mag, lo, tmp, row0) -> bool:
        """Fill k with int64 order keys (ascending = ranked first) for the rows of s; return True when
        they are unique (float32 score in the high, stable/random tiebreak in the low 32 bits)."""
        if s.dtype == np.float64:
            np.bitwise_and(s.view(np.int64), 0x7FFFFFFFFFFFFFFF, out=k)
            _check_finite(k, _F64_NONFINITE, row0, "scores")
            self._negate(s.view(np.int64), k, tmp, self.hib)
            if sec is not None:
                _check_finite_float(sec, row0)
            return False
        t32 = tmp.view(np.int32)[:, :s.shape[1]]
        np.bitwise_and(s.view(np.int32), 0x7FFFFFFF, out=mag)
        _check_finite(mag, _F32_NONFINITE, row0, "scores")
        self._negate(s.view(np.int32), mag, t32, self.hib)
        np.multiply(mag, 1 << 32, out=k, dtype=np.int64)
        if self.ties != "secondary":
            np.bitwise_or(k, self.tb, out=k)
            return True
        if sec.dtype != np.float32:  # key holds the primary score only; ties go to the exact path
            _check_finite_float(sec, row0)
            return False
        np.bitwise_and(sec.view(np.int32), 0x7FFFFFFF, out=lo)
        _check_finite(lo, _F32_NONFINITE, row0, "secondary scores")
        self._negate(sec.view(np.int32), lo, t32, self.sec_hib)
        np.bitwise_xor(lo, np.int32(-(1 << 31)), out=lo)  # +2**31: unsigned order in the low 32 bits
        np.bitwise_or(k, lo.view(np.uint32), out=k)
        return False

    @staticmethod
    def _negate(bits, mag, tmp, higher_is_better):
        """mag holds |bits| (sign cleared); turn it into an ascending key, branch-free: with t = -1
        where the value must be negated (non-negative scores for higher-first, negative ones
        otherwise) and 0 elsewhere, (mag ^ t) - t negates exactly there (+0 and -0 both give 0)."""
        np.right_shift(bits, bits.dtype.itemsize * 8 - 1, out=tmp)  # -1 for negative scores, else 0
        if higher_is_better:
            np.invert(tmp, out=tmp)
        np.bitwise_xor(mag, tmp, out=mag)
        np.subtract(mag, tmp, out=mag)

    def _exact_row(self, s, sec, c) -> np.ndarray:
        keys = [self.tb]
        if sec is not None:
            keys.append(-sec.astype(np.float64) if self.sec_hib else sec.astype(np.float64))
        keys.append(-s.astype(np.float64) if self.hib else s.astype(np.float64))
        order = np.lexsort(keys)
        return np.flatnonzero(self.labels.gallery_codes[order] == c)


def _positions(row, cols, unique):
    """0-based positions of the relevant keys row[cols] once row is sorted (row is sorted in place);
    None when keys may tie and one relevant key equals another key (the caller breaks the tie)."""
    rel = row[cols]
    rel.sort()
    row.sort()
    pos = np.searchsorted(row, rel)
    if not unique and np.any(np.searchsorted(row, rel, side="right") - pos > 1):
        return None
    return pos


def _check_finite(mag, limit, row0, what):
    if mag.size and mag.max() >= limit:
        i, j = np.argwhere(mag >= limit)[0]
        raise ValueError(f"{what} contain NaN or inf (first at query {row0 + i}, gallery item {j}); "
                         "fix the features or scores upstream, metrics are undefined there")


def _check_finite_float(x, row0):
    if not np.isfinite(x).all():
        i, j = np.argwhere(~np.isfinite(x))[0]
        raise ValueError(f"secondary scores contain NaN or inf (first at query {row0 + i}, gallery item {j})")


def ranked_order(scores, *, higher_is_better: bool = True, ties: str = "stable", seed: int | None = None,
                 secondary=None, secondary_higher_is_better: bool | None = None) -> np.ndarray:
    """(Q, N) gallery indices of every query, best first, in the total order this module ranks by (the
    same tie policies): what a person is shown as a query's result list. Holds the whole (Q, N) matrix;
    meant for a few queries (``rank_positions`` of the relevant items agree with it)."""
    s = as_numpy(scores.detach().cpu() if isinstance(scores, torch.Tensor) else np.asarray(scores)).astype(np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores must be (queries, gallery items), got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or inf")
    tb = tiebreak_ranks(s.shape[1], ties, seed)
    if ties == "secondary":
        if secondary is None:
            raise ValueError("ties='secondary' needs secondary= scores (same shape as scores)")
        sec = as_numpy(secondary.detach().cpu() if isinstance(secondary, torch.Tensor) else np.asarray(secondary))
        check_shape(sec, s.shape, "secondary")
        sec_hib = higher_is_better if secondary_higher_is_better is None else secondary_higher_is_better
        sec = -sec.astype(np.float64) if sec_hib else sec.astype(np.float64)
    elif secondary is not None:
        raise ValueError("secondary= scores are only used with ties='secondary'")
    else:
        sec = np.zeros_like(s)
    primary = -s if higher_is_better else s
    primary = primary + 0.0  # -0.0 and +0.0 are equal
    out = np.empty(s.shape, dtype=np.int64)
    for q in range(len(s)):  # lexsort: last key first
        out[q] = np.lexsort((tb, sec[q], primary[q]))
    return out
