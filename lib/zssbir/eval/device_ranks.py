"""The torch backend of ``relevant_ranks`` (issue 24): the same exact ranks, computed where the score blocks are
(a CUDA tensor stays on the GPU), so that only the ranks come back to the host. See ``relevant_ranks``'s
docstring for the keys and the order; the numpy backend gives the same integers on the same scores."""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from .rank_blocks import LabelIndex, RankBlock, as_numpy


def as_device_tensor(x, device: torch.device) -> torch.Tensor:
    """``as_numpy``'s dtypes as a contiguous torch tensor on ``device`` (float32, or float64 where float32
    would not hold the values exactly)."""
    if not isinstance(x, torch.Tensor):
        return torch.from_numpy(as_numpy(np.asarray(x))).to(device)
    t = x.detach()
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    elif t.dtype == torch.bool or not (t.is_floating_point() or t.is_complex()):
        t = t.double()
    elif t.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"scores must be real numbers, got dtype {t.dtype}")
    t = t.to(device)
    if t.dtype == torch.float64:  # exactly representable in float32 -> the unique-key path, as numpy's
        t32 = t.float()
        if torch.equal(t32.double(), t):
            t = t32
    return t.contiguous()


def _order_key(x: torch.Tensor, higher_is_better: bool) -> torch.Tensor:
    """Integers in the order of ``x`` (ascending = ranked first), as ``_Context._negate``: the IEEE
    sign-magnitude bits turned into two's complement, negated for higher-first; -0.0 and +0.0 both give
    0. int32 for float32, int64 for float64; x must be finite."""
    wide = x.dtype == torch.float64
    bits = x.view(torch.int64 if wide else torch.int32)
    mag = bits & (0x7FFFFFFFFFFFFFFF if wide else 0x7FFFFFFF)
    flip = bits >> (63 if wide else 31)  # -1 for negative values, else 0
    if higher_is_better:
        flip.bitwise_not_()
    return mag.bitwise_xor_(flip).sub_(flip)


@contextmanager
def _exact_counts():
    """torch's deterministic mode refuses ``bincount`` on CUDA; integer counts are exact in any order."""
    if not torch.are_deterministic_algorithms_enabled():
        yield
        return
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(False)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(True, warn_only=warn_only)


def _count_before(keys: torch.Tensor, bounds: torch.Tensor, strict: bool) -> torch.Tensor:
    """(b, n) int64: for each row and each of its ascending ``bounds`` R_j, the number of ``keys`` (b, N) below
    R_j (``strict``) or at most R_j. Each key's position among the bounds (binary search), then a per-row
    histogram of positions, summed: key < R_j exactly when #{R <= key} <= j, key <= R_j when #{R < key} <= j."""
    b, n = bounds.shape
    small = b * (n + 1) < 2 ** 31 and keys.device.type == "cuda"  # int32 halves the memory; slow on the CPU
    pos = torch.searchsorted(bounds, keys, right=strict, out_int32=small)
    pos += (torch.arange(b, device=keys.device, dtype=pos.dtype) * (n + 1))[:, None]
    with _exact_counts():
        hist = torch.bincount(pos.view(-1), minlength=b * (n + 1))
    return hist.view(b, n + 1).cumsum_(1)[:, :n]


def _take_rows(x: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
    """x[rows]: a view when the rows are consecutive (queries sorted by class), else a copy."""
    if rows[-1] - rows[0] + 1 == len(rows):
        return x[int(rows[0]):int(rows[-1]) + 1]
    return x[torch.from_numpy(rows).to(x.device)]


class TorchRanker:
    """The ranks of one score block with torch, on the block's device (see the module docstring)."""

    def __init__(self, labels: LabelIndex, tb: np.ndarray, ties: str, hib: bool, sec_hib: bool,
                 device: torch.device):
        self.labels, self.ties, self.hib, self.sec_hib, self.device = labels, ties, hib, sec_hib, device
        self.tb = torch.from_numpy(tb).to(device)
        self.tb_order = torch.argsort(self.tb) if ties == "random" else None  # lexsort's last key
        self.gallery_codes = torch.from_numpy(labels.gallery_codes).to(device)
        self.cols: dict[int, torch.Tensor] = {}

    def _relevant(self, c: int) -> torch.Tensor:
        if c not in self.cols:
            self.cols[c] = torch.from_numpy(self.labels.relevant[c]).to(self.device)
        return self.cols[c]

    def rank_block(self, start: int, end: int, block: torch.Tensor, sec: torch.Tensor | None,
                   tie_groups: bool) -> RankBlock:
        _check_finite_tensor(block, start, "scores")
        if sec is not None:
            _check_finite_tensor(sec, start, "secondary scores")
        codes = self.labels.query_codes[start:end]
        groups, uppers = [], []
        for c in np.unique(codes):
            if self.labels.n_relevant[c] == 0:
                continue
            rows = np.flatnonzero(codes == c)
            cols = self._relevant(int(c))
            s = _take_rows(block, rows)
            sc = None if sec is None else _take_rows(sec, rows)
            groups.append((rows + start, self._ranks(s, sc, int(c), cols).cpu().numpy()))
            if tie_groups:
                key = _order_key(s, self.hib)
                uppers.append(_count_before(key, key[:, cols].sort(dim=1).values, strict=False).cpu().numpy())
        return RankBlock(start, end, groups, uppers if tie_groups else None)

    def _ranks(self, s: torch.Tensor, sc: torch.Tensor | None, c: int, cols: torch.Tensor) -> torch.Tensor:
        unique = False
        if s.dtype == torch.float32:
            key = _order_key(s, self.hib).to(torch.int64).mul_(1 << 32)  # the score in the high 32 bits
            if self.ties != "secondary":
                key.add_(self.tb)  # stable/random tiebreak (< 2**31) in the low 32 bits: unique keys
                unique = True
            elif sc.dtype == torch.float32:  # the secondary score in the low 32 bits (unsigned order)
                key.add_(_order_key(sc, self.sec_hib).to(torch.int64).add_(1 << 31))
        else:
            key = _order_key(s, self.hib)  # the score alone; ties go to the exact path
        bounds = key[:, cols].sort(dim=1).values
        ranks = _count_before(key, bounds, strict=True).add_(1)
        if unique:
            return ranks
        ties = (_count_before(key, bounds, strict=False) - ranks >= 1).any(dim=1)  # a relevant key not alone
        del key, bounds
        if bool(ties.any()):
            t = ties.nonzero()[:, 0]
            ranks[t] = self._exact(s[t], None if sc is None else sc[t], c, len(cols))
        return ranks

    def _exact(self, s: torch.Tensor, sc: torch.Tensor | None, c: int, n_relevant: int) -> torch.Tensor:
        """Ranks of ``np.lexsort((tiebreak, secondary, score))``: stable sorts from the last key to the first."""
        b, n = s.shape
        base = self.tb_order if self.tb_order is not None else torch.arange(n, device=s.device)
        order = base.expand(b, n)
        for k, hib in (((sc, self.sec_hib),) if sc is not None else ()) + ((s, self.hib),):
            keys = _order_key(k, hib).gather(1, order)
            order = order.gather(1, torch.sort(keys, dim=1, stable=True).indices)
        hits = (self.gallery_codes == c)[order].nonzero()[:, 1]  # row-major: each row's positions, ascending
        return hits.view(b, n_relevant) + 1


def _check_finite_tensor(x: torch.Tensor, row0: int, what: str) -> None:
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        i, j = (int(v) for v in bad.nonzero()[0])
        raise ValueError(f"{what} contain NaN or inf (first at query {row0 + i}, gallery item {j}); "
                         "fix the features or scores upstream, metrics are undefined there")
