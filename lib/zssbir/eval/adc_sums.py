"""The ADC sums of cluster-then-retrieve: per item (or PQ cell) the sum of its M table entries.

Every path adds a query's M table entries of an item from left to right in float32, so the same entries always
give bit-identical distances, whichever path computes them (``tests/test_cluster_paths.py``):

  adc = ((t_0[k_0] + t_1[k_1]) + t_2[k_2]) + ... + t_{M-1}[k_{M-1}]

``gather_sum`` (query-major, the score path) and ``gather_sum_cellmajor`` (cell-major, the cell path): one
``index_select`` per sub-space below ``_FUSED_FROM_M`` sub-spaces, else one fused gather-add.

Tried and left out: summing the first p sub-spaces once per query into a (K^p, rows) table (the same order, so the
same bits) to save p - 1 gathers per cell. Interleaved against the plain gather in one process at Sketchy size it
was 0.91-1.01x as fast (M = 4-16, K = 8-64): at large M the cell path's time was then in the ranking (numpy then,
compiled since), not the gathers.
"""
from __future__ import annotations

import torch

_FUSED_FROM_M = 3  # gather_sum: fused gather-add from this many sub-spaces on (measured faster from M = 3-4)


def gather_sum(lut: torch.Tensor, cols: torch.Tensor, out: torch.Tensor, tmp: torch.Tensor) -> torch.Tensor:
    """ADC from tables, query-major: ``out[b, n] = lut[b, cols[n, 0]] + lut[b, cols[n, 1]] + ... +
    lut[b, cols[n, M - 1]]``, summed from left to right in float32, so that the same entries always
    give bit-identical sums. ``lut`` (B, M K) tables, ``cols`` (n, M) int64 columns, ``out``/``tmp``
    (B, n) float32 buffers. M < 3: one ``index_select`` per sub-space over the (B, n) block; larger
    M: ``gather_sum_cellmajor`` (one fused pass instead of M), transposed into ``out``."""
    if cols.shape[1] < _FUSED_FROM_M:
        torch.index_select(lut, 1, cols[:, 0].contiguous(), out=out)
        for m in range(1, cols.shape[1]):
            out.add_(torch.index_select(lut, 1, cols[:, m].contiguous(), out=tmp))
        return out
    out.copy_(gather_sum_cellmajor(lut.T.contiguous(), cols).T)
    return out


def gather_sum_cellmajor(lut_t: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """The same sums, item- (or cell-) major: ``(n, B)`` from the transposed tables ``lut_t`` (M K, B),
    whose rows are the B contiguous entries of one table column. M < 3: ``index_select`` of rows
    per sub-space; larger M: one fused gather-add, ``embedding_bag(cols, lut_t, mode="sum")``, whose
    CPU kernel starts from zero and adds the M rows in index order: the same left-to-right sum
    (0 + t_0 = t_0; table entries are never -0.0). ``tests/test_cluster_paths.py`` checks
    bit-equality with the per-sub-space sum on entries of mixed magnitudes, where another order
    would round differently."""
    if cols.shape[1] < _FUSED_FROM_M:
        out = torch.index_select(lut_t, 0, cols[:, 0].contiguous())
        for m in range(1, cols.shape[1]):
            out.add_(torch.index_select(lut_t, 0, cols[:, m].contiguous()))
        return out
    return torch.nn.functional.embedding_bag(cols, lut_t, mode="sum")
