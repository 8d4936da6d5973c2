"""Exact ranks of the relevant gallery items when each query scores the gallery cell by cell.

A product quantiser puts every gallery item in a CELL (its code tuple), and asymmetric distances
(ADC) give all items of a cell the same, bit-identical distance. A query's ranking is then fixed
by its C cell distances and by where each item sits among the items it ties with, which the tie
policy fixes once for all queries. From the cell distances of a block of queries this module
computes exactly the ranks ``zssbir.eval.relevant_ranks`` computes from the (B, N) item distances
(smaller first; ties "stable" or "random"), in O(C + R log R) per query (R relevant items) instead of an
O(N log N) sort of every item.

Definitions. Item n lies in cell c(n); t_n is its tie rank (``relevant_ranks.tiebreak_ranks``: the
gallery index for "stable", a permutation drawn from ``default_rng(seed)`` for "random"). For a
query with cell distances a_c, item n is ranked before item j iff (a_c(n), t_n) < (a_c(j), t_j)
(-0.0 equals +0.0). The 0-based position of item n is therefore

    before(c(n)) + within(n) + across(n)
    before(c)  = sum of |c'| over the cells c' with a_c' < a_c         (per query)
    within(n)  = #{j in c(n): t_j < t_n}                               (once, for every query)
    across(n)  = #{j not in c(n): a_c(j) == a_c(n), t_j < t_n}         (cells with bit-equal distance)

``across`` is non-zero only where another cell has exactly the distance of a relevant item's cell:
common with integer features, and by chance a few times per query among ~17k distinct float32
distances. Those items add, per tied cell, its items of lower tie rank (from the cells' sorted
tie ranks), so tied cells are ordered jointly, as the item-level sort orders them.

before(c) for the cells of the query's class comes from one pass over the C cell distances (a
histogram against the class's distinct cell distances, no sort of the C cells), compiled in
``zssbir.eval.cell_rank_kernel``. Rows are processed in cache-sized chunks of cell-major (C, rows)
distances (the layout of the fused ADC gather) over ``num_threads`` worker threads (the kernel
releases the GIL).
"""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .cell_rank_kernel import rank_rows
from .relevant_ranks import LabelIndex, RankBlock, tiebreak_ranks

_CHUNK_ELEMENTS = 1 << 18  # cell distances per chunk of rows (1 MiB of float32, in cache between gather and ranks)


def cells_of(codes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct rows of (N, M) non-negative integer ``codes``: ``(cell_codes (C, M), cell_of (N,),
    sizes (C,))``, cells in lexicographic order of their codes, ``cell_codes[cell_of] == codes``."""
    codes = np.ascontiguousarray(codes, dtype=np.int64)
    if codes.ndim != 2 or codes.shape[1] == 0 or len(codes) == 0:
        raise ValueError(f"codes must be a non-empty (N, M) array, got shape {codes.shape}")
    if codes.min() < 0:
        raise ValueError("codes must be non-negative")
    bits = max(1, int(codes.max()).bit_length())
    if bits * codes.shape[1] <= 62:  # one int64 per tuple, same (lexicographic) order as the tuples
        key = np.zeros(len(codes), np.int64)
        for m in range(codes.shape[1]):
            key = (key << bits) | codes[:, m]
        _, first, cell_of, sizes = np.unique(key, return_index=True, return_inverse=True, return_counts=True)
        cell_codes = codes[first]
    else:
        cell_codes, cell_of, sizes = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    return cell_codes, cell_of.reshape(-1).astype(np.int64), sizes.astype(np.int64)


class CellRanker:
    """Ranks of the relevant items of queries from their cell distances (smaller first).

    Built once per gallery layout (``cell_of``, ``sizes``), labels and tie policy; ``rank_block``
    then returns the same ``RankBlock`` as ``relevant_ranks.iter_rank_blocks`` on the item
    distances ``a[:, cell_of]`` with ``higher_is_better=False``.
    """

    def __init__(self, cell_of: np.ndarray, sizes: np.ndarray, labels: LabelIndex, ties: str, seed: int | None):
        if ties not in ("stable", "random"):
            raise ValueError(f"cell ranks support ties='stable' or 'random', got {ties!r}")
        n = labels.n_gallery
        if len(cell_of) != n:
            raise ValueError(f"{len(cell_of)} cell assignments for a gallery of {n} items")
        self.tb = tiebreak_ranks(n, ties, seed)
        self.labels, self.cell_of, self.sizes = labels, np.asarray(cell_of, np.int64), np.asarray(sizes, np.int64)
        self.n_cells = len(self.sizes)
        if n and (self.cell_of.min() < 0 or self.cell_of.max() >= self.n_cells
                  or not np.array_equal(np.bincount(self.cell_of, minlength=self.n_cells), self.sizes)):
            raise ValueError("sizes must count the items of every cell: sizes == bincount(cell_of, minlength=C)")
        order = np.lexsort((self.tb, self.cell_of))  # items by cell, then tie rank
        self.cell_start = np.cumsum(self.sizes) - self.sizes
        within = np.empty(n, np.int64)
        within[order] = np.arange(n) - self.cell_start[self.cell_of[order]]
        self.cell_tb = self.cell_of[order] * n + self.tb[order]  # ascending: (cell, tie rank) of every item
        # Per class k: its distinct cells (CSR uptr/ucell). "Class items": all items ordered by class
        # (cptr), each class in ascending gallery index as labels.relevant, with their within-cell
        # position (flat_within); per class cell uptr[k] + j its class items by that position (CSR
        # citem_ptr/citems).
        ucells, loc_parts = [], []
        self.cptr = np.concatenate([[0], np.cumsum(labels.n_relevant)]).astype(np.int64)
        for items in labels.relevant:
            cells, loc = np.unique(self.cell_of[items], return_inverse=True)
            ucells.append(cells)
            loc_parts.append(loc.reshape(-1))
        self.class_items = np.concatenate(labels.relevant).astype(np.int64)
        self.flat_within = within[self.class_items]
        ulen = np.array([len(u) for u in ucells], np.int64)
        self.uptr = np.concatenate([[0], np.cumsum(ulen)]).astype(np.int64)
        self.ucell = np.concatenate(ucells).astype(np.int64)
        item_cell = np.repeat(self.uptr[:-1], labels.n_relevant) + np.concatenate(loc_parts).astype(np.int64)
        self.citems = np.lexsort((self.flat_within, item_cell)).astype(np.int64)
        self.citem_ptr = np.concatenate([[0], np.cumsum(np.bincount(item_cell, minlength=len(self.ucell)))]
                                        ).astype(np.int64)
        self.chunk = int(max(1, _CHUNK_ELEMENTS // self.n_cells))

    # ------------------------------------------------------------------------------------ blocks
    def rank_block(self, start: int, end: int, dist: Callable[[int, int], np.ndarray], pool: ThreadPoolExecutor,
                   threads: int) -> RankBlock:
        """Ranks for queries [start, end). ``dist(a, b)`` returns the cell distances of queries
        [start + a, start + b) CELL-MAJOR, a (C, b - a) float32 array (called from ``threads`` worker
        threads on chunks of rows, so it must be thread-safe)."""
        codes = self.labels.query_codes[start:end]
        optr = np.concatenate([[0], np.cumsum(self.labels.n_relevant[codes])]).astype(np.int64)
        out = np.empty(int(optr[-1]), np.int64)  # every row's ranks, ascending, rows one after the other
        bounds = np.linspace(0, end - start, min(threads, end - start) + 1).astype(int)
        jobs = [pool.submit(self._rows, dist, codes, optr, out, int(a), int(b), start)
                for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        for job in jobs:  # in row order: the first error is that of the first bad query
            job.result()
        groups = []
        for c in np.unique(codes):  # as relevant_ranks groups them: per class present, rows ascending
            n = int(self.labels.n_relevant[c])
            if n == 0:
                continue
            rows = np.flatnonzero(codes == c)
            groups.append((rows + start, out[optr[rows][:, None] + np.arange(n)]))
        return RankBlock(start, end, groups)

    def _rows(self, dist, codes, optr, out, a, b, start):
        for r0 in range(a, b, self.chunk):
            r1 = min(r0 + self.chunk, b)
            x = np.ascontiguousarray(dist(r0, r1), dtype=np.float32)
            if x.shape != (self.n_cells, r1 - r0):
                raise ValueError(f"cell distances must have shape {(self.n_cells, r1 - r0)}, got {x.shape}")
            bad = rank_rows(x, codes[r0:r1], self.uptr, self.ucell, self.citem_ptr, self.citems, self.cptr,
                            self.flat_within, self.class_items, self.tb, self.sizes, self.cell_start, self.cell_tb,
                            out[optr[r0]:optr[r1]], optr[r0:r1 + 1] - optr[r0])
            if bad >= 0:
                self._raise_nonfinite(x, start + r0)

    def _raise_nonfinite(self, x, row0):
        i = int(np.flatnonzero(~np.isfinite(x).all(0))[0])
        j = int(np.flatnonzero(~np.isfinite(x[:, i])[self.cell_of])[0])
        raise ValueError(f"scores contain NaN or inf (first at query {row0 + i}, gallery item {j}); "
                         "fix the features or scores upstream, metrics are undefined there")
