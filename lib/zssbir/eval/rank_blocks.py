"""The blocks the rankers share: labels as integer codes (``LabelIndex``), the tie order of the gallery
(``tiebreak_ranks``), score matrices or callables turned into query blocks (``iter_score_blocks``), and the ranks
of one block (``RankBlock``). ``relevant_ranks`` ranks them on the CPU (numpy), ``device_ranks`` with torch where
the blocks are; both import this module, never each other."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

TIES = ("stable", "random", "secondary")
RANK_BACKENDS = ("numpy", "torch")  # where ranks are computed: numpy on the CPU, or torch on the blocks' device


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
    for start, end, block, sec in raw_score_blocks(scores, n_queries, n_gallery, secondary=secondary,
                                                    block_size=block_size):
        yield start, end, as_numpy(block), (None if sec is None else as_numpy(sec))


def raw_score_blocks(scores, n_queries: int, n_gallery: int, *, secondary=None, block_size: int = 1024):
    """``iter_score_blocks``'s checks, the blocks left as given (numpy, or torch on any device)."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if is_matrix(scores):
        check_shape(scores, (n_queries, n_gallery), "scores")
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
        check_shape(secondary, (n_queries, n_gallery), "secondary")
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
        check_shape(block, (end - start, n_gallery), f"scores block [{start}, {end})")
        if sec is not None:
            check_shape(sec, (end - start, n_gallery), f"secondary block [{start}, {end})")
        yield start, end, block, sec
        expected = end
    if expected != n_queries:
        raise ValueError(f"score blocks covered {expected} queries but {n_queries} query labels were given")


def is_matrix(x) -> bool:
    return isinstance(x, (np.ndarray, torch.Tensor))


def _as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def check_shape(x, shape, name):
    if not is_matrix(x) or tuple(x.shape) != tuple(shape):
        got = tuple(x.shape) if is_matrix(x) else type(x).__name__
        raise ValueError(f"{name} must have shape {tuple(shape)} (queries x gallery items), got {got}")


def as_numpy(x) -> np.ndarray:
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
    upper: list | None = None  # torch backend with tie_groups=True: per group, (b, n) ascending tie-group ends
                               # (``metrics.tie_group_ends`` of the same rows and relevant items)


def check_secondary(ties: str, sec) -> None:
    if ties == "secondary" and sec is None:
        raise ValueError("ties='secondary' needs a secondary block for every score block")
    if ties != "secondary" and sec is not None:
        raise ValueError("score blocks carry secondary scores but ties is not 'secondary'")
