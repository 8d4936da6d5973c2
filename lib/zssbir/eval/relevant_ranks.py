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
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
import sys

import numpy as np
import torch

TIES = ("stable", "random", "secondary")
_F32_NONFINITE = 0x7F800000  # |bits| at or above this: inf or NaN
_F64_NONFINITE = 0x7FF0000000000000
_CHUNK_BYTES = 1 << 22  # key buffer per worker (4 MiB, stays in L2/L3 while sorted)


@dataclass(frozen=True)
class LabelIndex:
    """Integer codes of query and gallery labels and the relevant gallery columns per class."""

    classes: np.ndarray  # the distinct label values, index = code
    query_codes: np.ndarray  # (Q,) int64
    gallery_codes: np.ndarray  # (N,) int64
    relevant: tuple  # code -> ascending int64 gallery indices of that class
    n_relevant: np.ndarray  # code -> count

    @property
    def n_gallery(self) -> int:
        return len(self.gallery_codes)

    def missing(self) -> np.ndarray:
        """Query labels that have no item in the gallery."""
        return self.classes[np.unique(self.query_codes[self.n_relevant[self.query_codes] == 0])]


def label_index(query_labels, gallery_labels) -> LabelIndex:
    q, g = _labels(query_labels, "query_labels"), _labels(gallery_labels, "gallery_labels")
    numeric = set("biu")
    if (q.dtype.kind in numeric) != (g.dtype.kind in numeric):
        raise ValueError(f"query_labels ({q.dtype}) and gallery_labels ({g.dtype}) must be both numbers or "
                         "both strings; convert one side so that equal classes compare equal.")
    classes, codes = np.unique(np.concatenate([q, g]), return_inverse=True)
    codes = codes.astype(np.int64)
    qc, gc = codes[:len(q)], codes[len(q):]
    order = np.argsort(gc, kind="stable")
    bounds = np.searchsorted(gc[order], np.arange(len(classes) + 1))
    relevant = tuple(order[bounds[c]:bounds[c + 1]] for c in range(len(classes)))
    return LabelIndex(classes, qc, gc, relevant, np.diff(bounds).astype(np.int64))


def _labels(x, name: str) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one label per item), got shape {a.shape}")
    if a.dtype.kind == "f":
        raise ValueError(f"{name} are floats ({a.dtype}); pass integer or string class labels")
    return a


def tiebreak_ranks(n_gallery: int, ties: str, seed: int | None) -> np.ndarray:
    """The 0..N-1 rank of each gallery item among tied scores (index for stable/secondary)."""
    if ties not in TIES:
        raise ValueError(f"unknown ties={ties!r}; expected one of {TIES}")
    if ties == "random":
        if seed is None:
            raise ValueError("ties='random' needs an explicit integer seed (e.g. seed=0)")
        return np.random.default_rng(seed).permutation(n_gallery).astype(np.int64)
    return np.arange(n_gallery, dtype=np.int64)


# ----------------------------------------------------------------------------------------- blocks
def iter_score_blocks(scores, n_queries: int, n_gallery: int, *, secondary=None,
                      block_size: int = 1024) -> Iterator[tuple[int, int, np.ndarray, np.ndarray | None]]:
    """Normalise the accepted inputs into (start, end, scores_block, secondary_block) numpy blocks.

    ``scores`` is a (Q, N) array or tensor; or a callable ``f(start, end)`` returning a block
    (or a ``(block, secondary_block)`` pair); or an iterable of ``(start, end, block)`` or
    ``(start, end, block, secondary_block)`` covering the queries in order (e.g.
    ``zssbir.eval.exact_search.score_blocks``). ``secondary`` may be a full (Q, N) array sliced alongside.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if _is_matrix(scores):
        _check_shape(scores, (n_queries, n_gallery), "scores")
        source = ((s, min(s + block_size, n_queries), scores[s:s + block_size])
                  for s in range(0, n_queries, block_size))
    elif callable(scores):
        source = ((s, min(s + block_size, n_queries), *_as_tuple(scores(s, min(s + block_size, n_queries))))
                  for s in range(0, n_queries, block_size))
    elif isinstance(scores, Iterable):
        source = iter(scores)
    else:
        raise TypeError(f"scores must be a 2-D array/tensor, a callable or an iterable of blocks, "
                        f"got {type(scores).__name__}")
    if secondary is not None:
        _check_shape(secondary, (n_queries, n_gallery), "secondary")
    expected = 0
    for item in source:
        if len(item) not in (3, 4):
            raise ValueError("score blocks must be (start, end, scores) or (start, end, scores, secondary)")
        start, end, block = int(item[0]), int(item[1]), item[2]
        sec = item[3] if len(item) == 4 else (secondary[start:end] if secondary is not None else None)
        if start != expected or end <= start:
            raise ValueError(f"score blocks must cover the queries in order without gaps: expected a block "
                             f"starting at {expected}, got [{start}, {end})")
        if end > n_queries:
            raise ValueError(f"score block [{start}, {end}) runs past the {n_queries} query labels")
        _check_shape(block, (end - start, n_gallery), f"scores block [{start}, {end})")
        if sec is not None:
            _check_shape(sec, (end - start, n_gallery), f"secondary block [{start}, {end})")
        yield start, end, _as_numpy(block), (None if sec is None else _as_numpy(sec))
        expected = end
    if expected != n_queries:
        raise ValueError(f"score blocks covered {expected} queries but {n_queries} query labels were given")


def _is_matrix(x) -> bool:
    return isinstance(x, (np.ndarray, torch.Tensor))


def _as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def _check_shape(x, shape, name):
    if not _is_matrix(x) or tuple(x.shape) != tuple(shape):
        got = tuple(x.shape) if _is_matrix(x) else type(x).__name__
        raise ValueError(f"{name} must have shape {tuple(shape)} (queries x gallery items), got {got}")


def _as_numpy(x) -> np.ndarray:
    """float32 or float64 C-contiguous numpy; smaller floats upcast exactly, integers to float64."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = (x.float() if x.dtype in (torch.float16, torch.bfloat16) else x).numpy()
    if x.dtype.kind in "biu":
        x = x.astype(np.float64)
    elif x.dtype == np.float16:
        x = x.astype(np.float32)
    elif x.dtype not in (np.float32, np.float64):
        raise ValueError(f"scores must be real numbers, got dtype {x.dtype}")
    if x.dtype == np.float64:  # exactly representable in float32 -> the fast unique-key path
        x32 = x.astype(np.float32)
        if np.array_equal(x32, x):
            x = x32
    return np.ascontiguousarray(x)


# ------------------------------------------------------------------------------------------ ranks
@dataclass
class RankBlock:
    """Ranks for queries [start, end): ``groups`` holds, per query class present in the block,
    (query indices (b,), ranks (b, n_relevant) 1-based int64 ascending)."""

    start: int
    end: int
    groups: list


def iter_rank_blocks(scores, labels: LabelIndex, *, higher_is_better: bool = True, ties: str = "stable",
                     seed: int | None = None, secondary=None, secondary_higher_is_better: bool | None = None,
                     block_size: int = 1024, num_threads: int | None = None) -> Iterator[RankBlock]:
    """Yield the exact ranks of the relevant items of every query (see module docstring).

    Queries whose class has no gallery item get no group (callers decide to raise or skip).
    """
    tb = tiebreak_ranks(labels.n_gallery, ties, seed)
    if ties == "secondary" and secondary is None and _is_matrix(scores):
        raise ValueError("ties='secondary' needs secondary= scores (same shape as scores)")
    if ties != "secondary" and secondary is not None:
        raise ValueError("secondary= scores are only used with ties='secondary'")
    sec_hib = higher_is_better if secondary_higher_is_better is None else secondary_higher_is_better
    ctx = _Context(labels, tb, ties, bool(higher_is_better), bool(sec_hib))
    threads = max(1, num_threads or torch.get_num_threads())
    with ThreadPoolExecutor(threads) as pool:
        for start, end, block, sec in iter_score_blocks(scores, len(labels.query_codes), labels.n_gallery,
                                                         secondary=secondary, block_size=block_size):
            if ties == "secondary" and sec is None:
                raise ValueError("ties='secondary' needs a secondary block for every score block")
            if ties != "secondary" and sec is not None:
                raise ValueError("score blocks carry secondary scores but ties is not 'secondary'")
            yield ctx.rank_block(start, end, block, sec, pool, threads)


def rank_positions(scores, query_labels, gallery_labels, *, higher_is_better: bool = True, ties: str = "stable",
                   seed: int | None = None, secondary=None, secondary_higher_is_better: bool | None = None,
                   block_size: int = 1024, num_threads: int | None = None) -> list[np.ndarray]:
    """Per query, the ascending 1-based ranks of its relevant gallery items (empty if none).

    Holds every rank in memory (sum of class sizes per query): meant for small problems and
    inspection; ``zssbir.eval.metrics.evaluate`` streams instead.
    """
    labels = label_index(query_labels, gallery_labels)
    out = [np.empty(0, dtype=np.int64)] * len(labels.query_codes)
    for rb in iter_rank_blocks(scores, labels, higher_is_better=higher_is_better, ties=ties, seed=seed,
                               secondary=secondary, secondary_higher_is_better=secondary_higher_is_better,
                               block_size=block_size, num_threads=num_threads):
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
    s = _as_numpy(scores.detach().cpu() if isinstance(scores, torch.Tensor) else np.asarray(scores)).astype(np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores must be (queries, gallery items), got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or inf")
    tb = tiebreak_ranks(s.shape[1], ties, seed)
    if ties == "secondary":
        if secondary is None:
            raise ValueError("ties='secondary' needs secondary= scores (same shape as scores)")
        sec = _as_numpy(secondary.detach().cpu() if isinstance(secondary, torch.Tensor) else np.asarray(secondary))
        _check_shape(sec, s.shape, "secondary")
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
