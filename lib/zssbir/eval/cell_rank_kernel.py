"""The compiled kernel of ``zssbir.eval.cell_ranks``: exact ranks of a query's relevant items from its cell distances.

For one query (a row of cell distances x_c, smaller first) and its class's cells, the 1-based rank of relevant item n
in cell c(n) is

    rank(n) = before(c(n)) + within(n) + across(n) + 1        (definitions in ``zssbir.eval.cell_ranks``)

computed per row with one pass over the C cells, without sorting them:

1. thresholds: the distinct distances s_0 < ... < s_{U-1} of the class's cells (sorted: U is small);
2. a branch-free pass keeps the cells with x_c <= s_{U-1} (the others rank after every relevant item);
3. each kept cell adds its size to hist[idx], idx = #{i: s_i <= x_c}, so that before(s_i) = hist[0] + ... +
   hist[i]. idx comes from a lookup table over the integer keys of the floats (order-preserving, -0.0 == +0.0)
   between s_0 and s_{U-1}: up to 2**``_LUT_BITS`` buckets, each holding the number of thresholds below it;
   only a bucket holding two thresholds or more needs a loop;
4. a cell whose distance equals a threshold exactly is an equality event; where a threshold has more than one
   cell (cells tied across), each relevant item there adds, per other tied cell, that cell's items of lower tie
   rank (a binary search in the (cell, tie rank) order);
5. the ranks, cell by cell in the order of distance and by tie rank within a cell, are ascending; a row with
   cells tied across is sorted.

Comparisons are on the float32 values, so the ranks are the ones ``relevant_ranks`` finds by sorting the item
distances (tests/test_cluster_paths.py). Compiled with numba (``nogil``: ``CellRanker`` runs chunks of rows on
worker threads), cached next to this file after the first call.
"""
from __future__ import annotations

import numba
import numpy as np

_LUT_BITS = 12  # at most 2**_LUT_BITS lookup-table buckets a row (16 a threshold): 32 KiB of int32 pairs


@numba.njit(nogil=True, cache=True, inline="always")
def _key(bits):
    """Order-preserving integer of a float32's bits (finite values; -0.0 and +0.0 both 0)."""
    b = np.int64(bits)
    return b if b >= 0 else -(b & 0x7FFFFFFF)


@numba.njit(nogil=True, cache=True)
def rank_rows(x, codes, uptr, ucell, citem_ptr, citems, cptr, flat_within, class_items, tb, sizes, cell_start, cell_tb,
              out, optr):
    """Ranks of every row's relevant items, ascending, into ``out[optr[r]:optr[r + 1]]``. Returns -1, or the
    first row holding NaN or +-inf (its ranks are not computed).

    x (C, rows) float32 cell-major distances; codes (rows,) class codes. Per class k: its cells
    ``ucell[uptr[k]:uptr[k + 1]]``; its items as "class items" ``cptr[k] .. cptr[k + 1] - 1`` (gallery index
    ``class_items[ci]``, within-cell position ``flat_within[ci]``); the class items in its cell g = uptr[k] + j
    ``citems[citem_ptr[g]:citem_ptr[g + 1]]`` by within-cell position. tb: tie ranks; sizes, cell_start: per
    cell; cell_tb: the ascending keys cell * N + tie rank of all items."""
    n_cells, rows = x.shape
    n = len(tb)
    nb_max = 1 << _LUT_BITS
    max_u = 1
    for r in range(rows):
        max_u = max(max_u, uptr[codes[r] + 1] - uptr[codes[r]])
    vals = np.empty(max_u, np.float32)
    vals_bits = vals.view(np.int32)
    packed = np.empty(max_u, np.int64)
    cell_thr = np.empty(max_u, np.int64)
    s = np.empty(max_u, np.float32)
    s_bits = s.view(np.int32)
    hist = np.empty(max_u + 1, np.int64)
    n_equal = np.empty(max_u, np.int64)
    lut_lo = np.empty(nb_max, np.int32)
    lut_hi = np.empty(nb_max, np.int32)
    cand_cell = np.empty(n_cells, np.int32)
    cand_val = np.empty(n_cells, np.float32)
    cand_bits = cand_val.view(np.int32)
    event_key = np.empty(n_cells, np.int64)
    for r in range(rows):
        k = codes[r]
        n_items = cptr[k + 1] - cptr[k]
        if n_items == 0:
            finite = True
            for c in range(n_cells):
                finite &= abs(x[c, r]) < np.inf
            if not finite:
                return r
            continue
        # 1. thresholds: the class's cell distances, sorted, distinct (-0.0 == +0.0 in value and key)
        n_rel = uptr[k + 1] - uptr[k]
        for j in range(n_rel):
            vals[j] = x[ucell[uptr[k] + j], r]
        for j in range(n_rel):  # sort by distance: keys with the cell's index in the low 31 bits
            packed[j] = ((_key(vals_bits[j]) + (1 << 31)) << 31) | j
        order = np.sort(packed[:n_rel])
        u = 0
        for jj in range(n_rel):
            j = order[jj] & 0x7FFFFFFF
            order[jj] = j
            if u == 0 or vals[j] != s[u - 1]:
                s[u] = vals[j]
                u += 1
            cell_thr[j] = u - 1
        s_lo, s_hi = s[0], s[u - 1]
        # 2. the cells at or below the largest threshold (branch-free), and the items below all of them
        finite = True
        below = 0
        n_cand = 0
        for c in range(n_cells):
            v = x[c, r]
            finite &= abs(v) < np.inf
            cand_cell[n_cand] = c
            cand_val[n_cand] = v
            n_cand += v <= s_hi
        if not finite:
            return r
        # the lookup table over the keys in [key(s_lo), key(s_hi)]: bucket b holds the keys
        # k0 + (b << shift) .. k0 + ((b + 1) << shift) - 1; lut_lo[b] = #thresholds below the bucket,
        # lut_hi[b] = #thresholds at or below its last key
        k0 = _key(s_bits[0])
        span = _key(s_bits[u - 1]) - k0
        nb_row = min(nb_max, 16 * u)  # about 16 buckets a threshold: most hold none, few more than one
        shift = 0
        while (span >> shift) >= nb_row:
            shift += 1
        nb = (span >> shift) + 1
        i = 0
        for b in range(nb):
            start = k0 + (b << shift)
            while i < u and _key(s_bits[i]) < start:
                i += 1
            lut_lo[b] = i
        for b in range(nb):  # the flag bit 30: more than one threshold in the bucket
            hi = lut_lo[b + 1] if b + 1 < nb else u
            lut_hi[b] = hi
            if hi - lut_lo[b] > 1:
                lut_lo[b] |= 1 << 30
        for j in range(u):
            hist[j] = 0
            n_equal[j] = 0
        hist[u] = 0
        n_events = 0
        for t in range(n_cand):
            v = cand_val[t]
            if v < s_lo:
                below += sizes[cand_cell[t]]
                continue
            b = (_key(cand_bits[t]) - k0) >> shift
            e = lut_lo[b]
            lo = e & 0x3FFFFFFF
            idx = lo + (s[lo] <= v)  # branch-free for a bucket with at most one threshold (lo < u here)
            if e >> 30:
                while idx < lut_hi[b] and s[idx] <= v:
                    idx += 1
            hist[idx] += sizes[cand_cell[t]]
            if idx > 0 and s[idx - 1] == v:  # equal to threshold idx - 1
                n_equal[idx - 1] += 1
                event_key[n_events] = (idx - 1) * n_cells + cand_cell[t]
                n_events += 1
        hist[0] += below
        for j in range(1, u):
            hist[j] += hist[j - 1]  # now before(s_j)
        ties = False
        for j in range(u):
            if n_equal[j] > 1:
                ties = True
        events = np.sort(event_key[:n_events]) if ties else event_key[:0]
        # 3. ranks of the class's items, cell by cell in the order of distance and by tie rank within a
        #    cell: ascending already unless cells tie across
        o = optr[r]
        for jj in range(n_rel):
            j = order[jj]
            g = uptr[k] + j
            thr = cell_thr[j]
            for p in range(citem_ptr[g], citem_ptr[g + 1]):
                ci = citems[p]
                rank = hist[thr] + flat_within[ci] + 1
                if n_equal[thr] > 1:
                    t_item = tb[class_items[ci]]
                    e = np.searchsorted(events, thr * n_cells)
                    while e < n_events and events[e] < (thr + 1) * n_cells:
                        other = events[e] - thr * n_cells
                        if other != ucell[g]:
                            rank += np.searchsorted(cell_tb, other * n + t_item) - cell_start[other]
                        e += 1
                out[o] = rank
                o += 1
        if ties:
            out[optr[r]:o] = np.sort(out[optr[r]:o])
    return -1
