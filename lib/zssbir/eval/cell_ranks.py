"""Exact ranks of the relevant gallery items when each query scores the gallery cell by cell.

A product quantiser puts every gallery item in a CELL (its code tuple), and asymmetric distances
(ADC) give all items of a cell the same, bit-identical distance. A query's ranking is then fixed
by its C cell distances and by where each item sits among the items it ties with, which the tie
policy fixes once for all queries. From the cell distances of a block of queries this module
computes exactly the ranks ``zssbir.eval.relevant_ranks`` computes from the (B, N) item distances
(smaller first; ties "stable" or "random"), in O(C + relevant items) per query instead of an
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

before(c) for the cells of the query's class, in O(C) per query, without sorting the C distances:
  1. integer keys in the order of the distances (their float32 bits when all are >= +0.0, as
     ADC is; else an order-preserving map with -0.0 == +0.0) and bins (key - min key) >> shift,
     at most about C / 2 a row: monotone in the distance;
  2. a histogram of the bins counting each cell's items, and its cumulative sum: the items in
     the lower bins of the row;
  3. the cells sharing a bin with a relevant cell (about two per relevant cell), sorted by
     (row, key): before(c) = items in lower bins + items of the cells ahead of c in its bin; an
     equal key next to c is a tie across cells.
Rows are processed in cache-sized chunks of cell-major (C, rows) distances (the layout of the fused
ADC gather) over ``num_threads`` worker threads (numpy releases the GIL).
"""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .relevant_ranks import LabelIndex, RankBlock, tiebreak_ranks

_F32_INF = 0x7F800000  # bits of +inf; larger: NaN
_CHUNK_ELEMENTS = 1 << 18  # cell distances per chunk of rows (1 MiB of float32; bins, histogram and flags in cache)
_BINS_BELOW = 1  # bins per row: the power of two in [C / 2**_BINS_BELOW, 2 C / 2**_BINS_BELOW)


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


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated aranges [starts[i], starts[i] + counts[i]) as one int64 array."""
    counts = np.asarray(counts, np.int64)
    total = int(counts.sum())
    offsets = np.cumsum(counts) - counts
    return np.repeat(np.asarray(starts, np.int64) - offsets, counts) + np.arange(total, dtype=np.int64)


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
        # Per class k: its distinct cells (CSR uptr/ucell; global index uptr[k] + j for its j-th cell).
        # "Class items": all items ordered by class (cptr), each class in ascending gallery index as
        # labels.relevant; per class item the index j of its cell among its class's cells and its
        # within-cell position; per global cell index the class items in that cell (CSR uiptr/uitems).
        ucells, loc_parts, uitems, ucounts = [], [], [], []
        self.cptr = np.concatenate([[0], np.cumsum(labels.n_relevant)]).astype(np.int64)
        for k, items in enumerate(labels.relevant):
            cells, loc = np.unique(self.cell_of[items], return_inverse=True)
            loc = loc.reshape(-1).astype(np.int64)
            ucells.append(cells)
            loc_parts.append(loc)
            uitems.append(self.cptr[k] + np.argsort(loc, kind="stable"))
            ucounts.append(np.bincount(loc, minlength=len(cells)))
        self.class_items = np.concatenate(labels.relevant).astype(np.int64)
        self.flat_loc = np.concatenate(loc_parts).astype(np.int64)
        self.flat_within = within[self.class_items]
        self.ulen = np.array([len(u) for u in ucells], np.int64)
        self.uptr = np.concatenate([[0], np.cumsum(self.ulen)]).astype(np.int64)
        self.ucell = np.concatenate(ucells).astype(np.int64)
        self.uitems = np.concatenate(uitems).astype(np.int64)
        self.uiptr = np.concatenate([[0], np.cumsum(np.concatenate(ucounts))]).astype(np.int64)
        self.bin_bits = max(0, int(self.n_cells - 1).bit_length() - _BINS_BELOW)  # at most 2**bin_bits bins a row
        self.chunk = int(max(1, _CHUNK_ELEMENTS // self.n_cells))
        # cells not of exactly one item (several, or none): few when cells are nearly unique (then
        # corrected on top of a plain histogram of the cells), else the histogram is weighted by size
        self.irregular = np.flatnonzero(self.sizes != 1)
        self.weighted = len(self.irregular) * 8 > self.n_cells
        self._weights: dict[int, np.ndarray] = {}

    # ------------------------------------------------------------------------------------ blocks
    def rank_block(self, start: int, end: int, dist: Callable[[int, int], np.ndarray], pool: ThreadPoolExecutor,
                   threads: int) -> RankBlock:
        """Ranks for queries [start, end). ``dist(a, b)`` returns the cell distances of queries
        [start + a, start + b) CELL-MAJOR, a (C, b - a) float32 array (called from ``threads`` worker
        threads on chunks of rows, so it must be thread-safe)."""
        codes = self.labels.query_codes[start:end]
        pptr = np.concatenate([[0], np.cumsum(self.ulen[codes])]).astype(np.int64)
        optr = np.concatenate([[0], np.cumsum(self.labels.n_relevant[codes])]).astype(np.int64)
        out = np.empty(int(optr[-1]), np.int64)  # every row's ranks, ascending, rows one after the other
        bounds = np.linspace(0, end - start, min(threads, end - start) + 1).astype(int)
        jobs = [pool.submit(self._rows, dist, codes, pptr, optr, out, int(a), int(b), start)
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

    def _rows(self, dist, codes, pptr, optr, out, a, b, start):
        for r0 in range(a, b, self.chunk):
            r1 = min(r0 + self.chunk, b)
            x = np.ascontiguousarray(dist(r0, r1), dtype=np.float32)
            if x.shape != (self.n_cells, r1 - r0):
                raise ValueError(f"cell distances must have shape {(self.n_cells, r1 - r0)}, got {x.shape}")
            before = np.empty(int(pptr[r1] - pptr[r0]), np.int64)
            ties = self._before(x, codes[r0:r1], before, start + r0)
            self._ranks(codes[r0:r1], pptr[r0:r1] - pptr[r0], before, ties, out[optr[r0]:optr[r1]])

    def _ranks(self, codes, pstart, before, ties, out):
        """1-based ranks of every row's relevant items, ascending per row, into ``out`` (rows in
        order): before(cell) + within + 1, plus the tied cells' items of lower tie rank."""
        n_items = self.labels.n_relevant[codes]
        if n_items.sum() == 0:
            return
        row = np.repeat(np.arange(len(codes), dtype=np.int64), n_items)
        item = _ranges(self.cptr[codes], n_items)  # class items of each row (ascending gallery index)
        ranks = before[pstart[row] + self.flat_loc[item]] + self.flat_within[item] + 1
        if ties is not None:
            t_row, t_item, lower = ties
            at = (np.cumsum(n_items) - n_items)[t_row] + t_item - self.cptr[codes[t_row]]
            np.add.at(ranks, at, lower)
        key = row * (self.labels.n_gallery + 1) + ranks  # sort every row's ranks at once
        key.sort()
        out[:] = key - row * (self.labels.n_gallery + 1)

    def _before(self, x, codes, out, row0):
        """Fill ``out`` with before(c) of every (row, cell of the row's class) pair, rows in order,
        for cell-major distances x (C, rows). Returns None, or (row, class item, count) triples for
        items whose cell ties exactly with other cells: count = items there with a lower tie rank."""
        n_cells, rows = x.shape
        k, lo, hi, koff = self._order(x, row0)
        counts = self.ulen[codes]
        n_pairs = int(counts.sum())
        if n_pairs == 0:
            return None
        pr = np.repeat(np.arange(rows, dtype=np.int64), counts)  # (row, relevant cell) pairs
        pj = np.arange(n_pairs, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        pglob = self.uptr[codes][pr] + pj  # global index of the pair's cell among the class cells
        pu = self.ucell[pglob]
        # 1. bins (k - lo) >> shift: monotone in k, at most 2**bin_bits a row; row r's bins start at r * nb
        span = hi - lo
        shift = max(0, span.bit_length() - self.bin_bits)
        nb = (span >> shift) + 1
        itype = np.int32 if k.dtype == np.int32 and (rows * nb) << shift < 2**31 else np.int64
        g = np.subtract(k, (lo - ((np.arange(rows, dtype=np.int64) * nb) << shift)).astype(itype)[None, :])
        g >>= shift
        g = g.reshape(-1)  # cell-major: element (c, r) at c * rows + r
        # 2. items in the lower bins of the row: a flat cumulative histogram minus the rows before
        #    (each row's histogram sums to the gallery size)
        hist = self._histogram(g, rows, rows * nb)
        below = np.cumsum(hist)
        gu = g[pu * rows + pr]
        base = (below[gu] - hist[gu]).astype(np.int64) - pr * self.labels.n_gallery
        # 3. the cells sharing a bin with a relevant cell (cell-major order), sorted by (row, distance)
        flag = np.zeros(rows * nb, bool)
        flag[gu] = True
        cand = np.flatnonzero(flag.take(g))
        cc, cr = np.divmod(cand, rows)
        key = (cr << 32) | (k.reshape(-1)[cand].astype(np.int64) + koff)
        n_cand = len(cand)
        ib = n_cand.bit_length()
        if int(rows - 1).bit_length() + 32 + ib <= 63:  # sort the keys with their index in the low bits
            packed = np.sort((key << ib) | np.arange(n_cand, dtype=np.int64))
            order, skey = packed & ((1 << ib) - 1), packed >> ib
        else:
            order = np.argsort(key)
            skey = key[order]
        scell, sbin = cc[order], g[cand[order]]  # sbin is sorted too: bins are monotone in the distance
        ku = (pr << 32) | (k[pu, pr].astype(np.int64) + koff)
        left = np.searchsorted(skey, ku, "left")  # the first cell with the pair's distance (maybe itself)
        new_bin = np.ones(n_cand, bool)
        np.not_equal(sbin[1:], sbin[:-1], out=new_bin[1:])
        first = np.maximum.accumulate(np.where(new_bin, np.arange(n_cand), 0))[left]  # first cell of its bin
        cum = np.zeros(n_cand + 1, np.int64)
        np.cumsum(self.sizes[scell], out=cum[1:])
        out[:] = base + cum[left] - cum[first]
        # 4. ties: another cell with exactly the distance of a relevant cell (the pair's cell is one of
        #    the equal keys from ``left`` on, so there is another iff the next key is equal too)
        tied = np.flatnonzero(skey[np.minimum(left + 1, n_cand - 1)] == ku)
        tied = tied[left[tied] + 1 < n_cand]
        if len(tied) == 0:
            return None
        left = left[tied]
        n_equal = np.searchsorted(skey, ku[tied], "right") - left
        # other cells with exactly the distance of a relevant cell: (pair, other cell) entries ...
        pos = _ranges(left, n_equal)
        e_pair = np.repeat(tied, n_equal)
        e_cell = scell[pos]
        keep = e_cell != pu[e_pair]
        e_pair, e_cell = e_pair[keep], e_cell[keep]
        # ... times the class items of the pair's cell: count the other cell's items of lower tie rank
        g_cell = pglob[e_pair]
        n_items = self.uiptr[g_cell + 1] - self.uiptr[g_cell]
        f_item = self.uitems[_ranges(self.uiptr[g_cell], n_items)]
        f_cell = np.repeat(e_cell, n_items)
        n = self.labels.n_gallery
        lower = np.searchsorted(self.cell_tb, f_cell * n + self.tb[self.class_items[f_item]]) - self.cell_start[f_cell]
        return np.repeat(pr[e_pair], n_items), f_item, lower

    def _order(self, x, row0):
        """Integer keys in the order of the float32 distances x (-0.0 == +0.0), their min and max,
        and the offset that makes them non-negative. Distances >= +0.0 (ADC): their own bits."""
        bits = x.view(np.int32)
        lo, hi = int(bits.min()), int(bits.max())
        if lo >= 0 and hi < _F32_INF:  # no sign bit set, no inf or NaN
            return bits, lo, hi, 0
        if not np.isfinite(x).all():
            self._raise_nonfinite(x, row0)
        b = bits.astype(np.int64)
        mag = b & 0x7FFFFFFF
        k = np.where(b < 0, -mag, mag)
        return k, int(k.min()), int(k.max()), 1 << 31

    def _histogram(self, g: np.ndarray, rows: int, length: int) -> np.ndarray:
        """Items per bin: the cells of a cell-major chunk of ``rows`` rows (bins ``g``) weighted by their sizes."""
        if self.weighted:
            if rows not in self._weights:
                self._weights[rows] = np.repeat(self.sizes.astype(np.float64), rows)
            return np.bincount(g, weights=self._weights[rows], minlength=length)  # exact: integers below 2**53
        hist = np.bincount(g, minlength=length)
        if len(self.irregular):
            at = g.reshape(self.n_cells, rows)[self.irregular].reshape(-1)
            np.add.at(hist, at, np.repeat(self.sizes[self.irregular] - 1, rows))
        return hist

    def _raise_nonfinite(self, x, row0):
        i = int(np.flatnonzero(~np.isfinite(x).all(0))[0])
        j = int(np.flatnonzero(~np.isfinite(x[:, i])[self.cell_of])[0])
        raise ValueError(f"scores contain NaN or inf (first at query {row0 + i}, gallery item {j}); "
                         "fix the features or scores upstream, metrics are undefined there")
