"""Cluster-then-retrieve by product quantisation (PQ) and asymmetric distance (ADC) (ClusterRetri,
shared reference ``methods.md`` part A): a quantiser fitted on the unlabeled gallery, queries scored by ADC.

Transductive: the quantiser sees the GALLERY features only (never the queries or any label).
Features are L2-normalised first (``normalize=True``, as retrieval features are); everything is
float32. Definitions, for a gallery of N items in D dimensions split into M contiguous sub-spaces
of d = D / M dimensions, with K centroids each:

Fit      per sub-space m, k-means with K centroids on the gallery sub-vectors x^(m) (faiss.Kmeans,
         ``niter`` = 20 Lloyd iterations, seed ``seed + m``, on ALL gallery points: faiss's default
         subsampling to 256 K points is switched off, as the authors' scipy ``kmeans2`` uses all).
         The same k-means is used for every K, power of two or not (faiss.ProductQuantizer would
         only allow K = 2^nbits and trains the same per-sub-space k-means with its own sampling
         and seeds): one code path, so K = 25 and K = 32 are fitted alike. M = 1 is plain k-means.
         Defaults follow the authors: 20 iterations, seed 123. Same seed, same centroids.
Encode   codes[n, m] = argmin_k ||x_n^(m) - c_{m,k}||^2 (the nearest centroid, re-assigned to the
         final centroids), by float64 distances (computed in float32 where that provably gives the same
         argmin, see ``pq_encode.encode``); ``reconstruct()`` is x_hat_n = concat_m c_{m, codes[n, m]}.
ADC      adc(q, n) = sum_m ||q^(m) - c_{m, codes[n, m]}||^2 = ||q - x_hat_n||^2, a squared
         distance: SMALLER IS BETTER. Computed per query block from lookup tables
         T[b, m, k] = ||q_b^(m) - c_{m,k}||^2 (shape [B, M, K]) gathered by the codes. Items with
         the same code tuple get bit-identical scores (same table entries, same summation order,
         m = 0 .. M-1 from left to right in float32; ``gather_sum``), so at M = 1 every member of
         a cluster ties exactly.
Ranking  (how, never what: ``ClusterIndex.evaluate(path=...)``). "scores": the (B, N) distance
         blocks through ``metrics.evaluate`` / ``relevant_ranks`` (an O(N log N) sort per query).
         "cells" (variant "adc"): the distances of the C <= N distinct code tuples (PQ cells),
         ranked by ``zssbir.eval.cell_ranks`` (a compiled pass, ``cell_rank_kernel``) in
         O(C + relevant items log relevant items) per query, with the same
         ranks and so bit-identical per-query values under every tie policy and convention.
         "auto" (default) takes "cells" for "adc" (except under AP "tie_merged", which needs
         the item scores), "scores" for "fuse" and "rerank".
Variants ("adc", "fuse", "rerank"), all distances ranked ascending (``higher_is_better=False``):
  "adc"     the ADC alone; ties (items sharing a code tuple) follow the tie policy "random"
            (default, seeded by the k-means seed) or "stable" (gallery index), see ``zssbir.eval.relevant_ranks``.
            Random is the default because published lists are sorted by class: "stable" then keeps
            each class's tied photos together, which raises AP (``03_cluster_analysis`` measures by
            how much).
  "fuse"    (1 - w) * adc(q, n) + w * ||q - x_n||, w = ``fuse_weight`` (lambda_f, default 0.2).
            Exactly as methods.md writes it: the SQUARED PQ distance plus the plain (NOT squared)
            exact Euclidean distance. On unit vectors the first lies in [0, ~4], the second in [0, 2].
  "rerank"  ADC first; items tied in ADC ordered by the exact distance ||q - x_n||, NEAREST first
            (the released code had a sign error putting the farthest first), then by index. It is
            ``metrics.evaluate(..., ties="secondary", secondary_higher_is_better=False)`` on blocks
            ``(start, end, adc, exact_distance)``.
The ITQ hashing baseline of the released code is a retrieval kind of its own: ``zssbir.eval.itq``.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
import math

import numpy as np
import torch

from ..runtime import ensure_threads_configured, kmeans_threads, openmp_threads
from .adc_sums import gather_sum, gather_sum_cellmajor
from .cell_ranks import CellRanker, cells_of
from .pq_encode import encode
from .metrics import DEFAULT_METRICS, MetricResult, evaluate, evaluate_rank_blocks, resolve_convention
from .exact_search import as_features, l2_normalize

VARIANTS = ("adc", "fuse", "rerank")
KMEANS_BACKENDS = ("faiss", "scipy")
PATHS = ("auto", "cells", "scores")  # how ClusterIndex.evaluate ranks (see choose_path)
_CELL_KWARGS = {"ap", "map_k_denominator", "prec_k_denominator", "average", "skip_missing", "num_threads"}
DEFAULT_SEED = 123  # the authors' k-means seed
DEFAULT_FUSE_WEIGHT = 0.2  # lambda_f of the released logs


def divisors(d: int) -> list[int]:
    """The values of M that split a D-dimensional space into equal contiguous sub-spaces."""
    return [m for m in range(1, d + 1) if d % m == 0]


def check_mk(d: int, n: int, M: int, K: int) -> None:
    """Raise ValueError unless M sub-spaces and K centroids are possible for N items of dimension D."""
    for name, v in (("M", M), ("K", K)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if d % M:
        raise ValueError(f"M = {M} sub-spaces do not divide the feature dimension D = {d}; "
                         f"valid M for D = {d}: {', '.join(map(str, divisors(d)))}")
    if K > n:
        raise ValueError(f"K = {K} centroids need at least {K} gallery items, got {n}; use K <= {n}")


def prepare_features(x, name: str, normalize: bool) -> torch.Tensor:
    """Validated float32 features, L2-normalised with ``normalize``, in new memory (a ``Prepared``
    made with the same ``normalize`` is returned as it is)."""
    if isinstance(x, Prepared):
        if x.normalize == normalize:
            return x.tensor
        x = x.tensor
    t = as_features(x, name).float()
    return l2_normalize(t, name) if normalize else t.clone()  # never share memory with the caller


class Prepared:
    """Features already through ``prepare_features(x, name, normalize)``. ``ClusterIndex.fit`` and
    ``ClusterIndex.evaluate`` take it in place of raw features and skip preparing them again, so
    many indexes of one gallery (``cluster_grid.grid``) validate and normalise once. Read-only:
    indexes may share its tensor."""

    def __init__(self, x, name: str, normalize: bool):
        self.tensor, self.normalize = prepare_features(x, name, normalize), bool(normalize)

    def __len__(self) -> int:
        return len(self.tensor)


class ClusterIndex:
    """A product quantiser of a gallery: ``centroids`` (M, K, d) float32, ``codes`` (N, M) int64,
    and the (normalised) gallery itself for the exact-distance variants. Build with ``fit``."""

    def __init__(self, centroids: np.ndarray, codes: np.ndarray, gallery: torch.Tensor, *, normalize: bool,
                 seed: int, niter: int, backend: str = "faiss"):
        self.centroids, self.codes, self.gallery = centroids, codes, gallery
        self.normalize, self.seed, self.niter, self.backend = normalize, seed, niter, backend
        self.M, self.K, self.d_sub = centroids.shape
        self._c = torch.from_numpy(centroids)
        self._c_sq = (self._c * self._c).sum(-1)  # (M, K)
        # column of every item's entry in the flattened [B, M * K] table, per sub-space: (N, M)
        self._cols = (torch.from_numpy(codes) + torch.arange(self.M)[None, :] * self.K).contiguous()
        self._g_sq = (gallery * gallery).sum(1)
        self._cells = None  # (cell_codes, cell_of, sizes, cell columns), see cells()

    @property
    def dim(self) -> int:
        return self.M * self.d_sub

    @classmethod
    def fit(cls, gallery, M: int, K: int, seed: int = DEFAULT_SEED, *, niter: int = 20,
            normalize: bool = True, backend: str = "faiss") -> ClusterIndex:
        """k-means with K centroids in each of M contiguous sub-spaces of the gallery features.

        ``backend`` "faiss" (default): faiss.Kmeans on all points, seed ``seed + m`` per sub-space;
        "scipy": the authors' k-means exactly (``utils/nanopq/pq.py``: numpy's random state seeded once
        with ``seed``, then ``scipy.cluster.vq.kmeans2(..., iter=niter, minit="points")`` per sub-space in
        order), for replicating their centroids."""
        if backend not in KMEANS_BACKENDS:
            raise ValueError(f"unknown k-means backend {backend!r}; expected one of {KMEANS_BACKENDS}")
        g = prepare_features(gallery, "gallery features", normalize)
        n, d = g.shape
        check_mk(d, n, M, K)
        ds = d // M
        cents = np.empty((M, K, ds), dtype=np.float32)
        state = np.random.RandomState(int(seed))  # the scipy backend's stream, as np.random.seed(seed) gives
        if backend == "faiss":
            ensure_threads_configured()  # the process's thread budget, once, before faiss's first use
        # the fit (k-means and the codes) on runtime.kmeans_threads() OpenMP threads (default 1: on shared cores
        # more collapse, see zssbir.runtime); how, never what: any count gives the same centroids and codes
        with openmp_threads(kmeans_threads()):
            for m in range(M):
                sub = np.ascontiguousarray(g[:, m * ds:(m + 1) * ds].numpy())
                if backend == "scipy":
                    from scipy.cluster.vq import kmeans2

                    cents[m] = kmeans2(sub, int(K), iter=int(niter), minit="points", seed=state)[0]
                    continue
                import faiss

                km = faiss.Kmeans(ds, int(K), niter=int(niter), seed=int(seed) + m, verbose=False,
                                  max_points_per_centroid=max(1, math.ceil(n / K)) + 1, min_points_per_centroid=1)
                km.train(sub)
                cents[m] = km.centroids
            if not np.isfinite(cents).all():
                raise ValueError("k-means produced non-finite centroids; check the gallery features")
            codes = encode(g, cents)
        return cls(cents, codes, g, normalize=normalize, seed=int(seed), niter=int(niter), backend=backend)

    # ------------------------------------------------------------------------------- quantiser
    def reconstruct(self) -> np.ndarray:
        """(N, D) PQ reconstruction of the gallery: the assigned centroids, concatenated."""
        return np.concatenate([self.centroids[m][self.codes[:, m]] for m in range(self.M)], axis=1)

    def quantization_error(self) -> float:
        """Mean over the gallery of ||x - x_hat||^2."""
        return float(((self.gallery.numpy() - self.reconstruct()) ** 2).sum(1).mean())

    def prepare_queries(self, query) -> torch.Tensor:
        q = prepare_features(query, "query features", self.normalize)
        if q.shape[1] != self.dim:
            raise ValueError(f"query features have {q.shape[1]} dimensions but the index was fitted on "
                             f"{self.dim}-dimensional gallery features; both must share one embedding space")
        return q

    def tables(self, q: torch.Tensor) -> torch.Tensor:
        """Lookup tables T[b, m, k] = ||q_b^(m) - c_{m,k}||^2, shape (B, M, K), for prepared queries."""
        qs = q.reshape(len(q), self.M, self.d_sub)
        dots = torch.einsum("bmd,mkd->bmk", qs, self._c)
        # (|c|^2 - 2 q.c) + |q|^2 in place, rounded exactly as that expression: -2 x is exact and
        # a + (-b) is a - b, so the tables are bit-identical to the out-of-place form, without its
        # three temporaries of shape (B, M, K)
        return dots.mul_(-2).add_(self._c_sq[None]).add_((qs * qs).sum(-1, keepdim=True)).clamp_(min=0)

    def cells(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The distinct code tuples (PQ cells) of the gallery: ``(cell_codes (C, M), cell_of (N,), sizes (C,))``
        (``zssbir.eval.cell_ranks.cells_of``). Items of a cell get bit-identical ADC scores."""
        if self._cells is None:
            cell_codes, cell_of, sizes = cells_of(self.codes)
            cols = (torch.from_numpy(cell_codes) + torch.arange(self.M)[None, :] * self.K).contiguous()
            self._cells = (cell_codes, cell_of, sizes, cols)
        return self._cells[:3]

    def _adc_into(self, q: torch.Tensor, out: torch.Tensor, tmp: torch.Tensor) -> torch.Tensor:
        return gather_sum(self.tables(q).reshape(len(q), self.M * self.K), self._cols, out, tmp)

    def _exact_into(self, q: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        torch.add(self._g_sq[None, :], (q * q).sum(1, keepdim=True), out=out)  # |x|^2 + |q|^2
        return out.addmm_(q, self.gallery.T, alpha=-2).clamp_(min=0).sqrt_()

    def adc(self, query) -> np.ndarray:
        """(Q, N) asymmetric distances ||q - x_hat_n||^2 (squared; smaller is better)."""
        return np.concatenate([blk[2].numpy() for blk in self.score_blocks(query, "adc")])

    # ---------------------------------------------------------------------------------- scoring
    def score_blocks(self, query, variant: str = "adc", *, fuse_weight: float = DEFAULT_FUSE_WEIGHT,
                     block_size: int = 1024, reuse_buffer: bool = False
                     ) -> Iterator[tuple[int, int, torch.Tensor] | tuple[int, int, torch.Tensor, torch.Tensor]]:
        """Yield distance blocks (smaller is better) for ``metrics.evaluate(..., higher_is_better=False)``:
        ``(start, end, adc)`` ("adc"), ``(start, end, fused)`` ("fuse") or ``(start, end, adc, exact)``
        ("rerank", for ``ties="secondary", secondary_higher_is_better=False``); exact = ||q - x||.
        With ``reuse_buffer=True`` the buffers are overwritten by the next block (consume each first)."""
        check_variant(variant)
        if not 0.0 <= fuse_weight <= 1.0:
            raise ValueError(f"fuse_weight must lie in [0, 1], got {fuse_weight}")
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        q = self.prepare_queries(query)
        n = len(self.codes)
        shape = (min(block_size, len(q)), n)
        bufs = None
        for start in range(0, len(q), block_size):
            end = min(start + block_size, len(q))
            if bufs is None or not reuse_buffer:
                bufs = [torch.empty(shape) for _ in range(2 if variant == "adc" else 3)]
            out, tmp = bufs[0][:end - start], bufs[1][:end - start]
            adc = self._adc_into(q[start:end], out, tmp)
            if variant == "adc":
                yield start, end, adc
                continue
            exact = self._exact_into(q[start:end], bufs[2][:end - start])
            if variant == "rerank":
                yield start, end, adc, exact
            else:
                yield start, end, adc.lerp_(exact, fuse_weight)  # adc + w (exact - adc)

    def evaluate(self, query, query_labels, gallery_labels, *, variant: str = "adc", ties: str | None = None,
                 metrics: Sequence[str] | str = DEFAULT_METRICS, preset: str | None = None,
                 fuse_weight: float = DEFAULT_FUSE_WEIGHT, tie_seed: int | None = None, block_size: int = 1024,
                 path: str = "auto", **evaluate_kwargs) -> dict[str, MetricResult]:
        """``metrics.evaluate`` on this index's distance blocks. ``ties`` defaults to "random" for
        "adc"/"fuse" and must be (and defaults to) "secondary" for "rerank"; ``tie_seed`` (default:
        the k-means seed) seeds ``ties="random"``. Each result's convention records M, K, variant.

        ``path`` (how, never what): "scores" ranks the (B, N) item distances (``relevant_ranks``);
        "cells" (variant "adc" only) ranks the (B, C) distances of the C distinct PQ cells
        (``cell_ranks``), with identical per-query values; "auto" (default) takes "cells" for "adc"
        (see ``choose_path``)."""
        ties = resolve_ties(variant, ties)
        if len(gallery_labels) != len(self.codes):
            raise ValueError(f"{len(gallery_labels)} gallery labels for an index of {len(self.codes)} items")
        path = self.choose_path(variant, path, evaluate_kwargs, preset=preset)
        seed = self.seed if tie_seed is None else tie_seed
        if path == "cells":
            res = self._evaluate_cells(query, query_labels, gallery_labels, ties, seed, metrics, preset, block_size,
                                       **evaluate_kwargs)
        else:
            extra = ({"secondary_higher_is_better": False} if ties == "secondary"
                     else {"seed": seed} if ties == "random" else {})
            blocks = self.score_blocks(query, variant, fuse_weight=fuse_weight, block_size=block_size,
                                       reuse_buffer=True)
            res = evaluate(blocks, query_labels, gallery_labels, metrics=metrics, preset=preset, ties=ties,
                           higher_is_better=False, block_size=block_size, **extra, **evaluate_kwargs)
        info = {"retrieval": "cluster_then_retrieve", "variant": variant, "M": self.M, "K": self.K,
                "kmeans_seed": self.seed, "kmeans_niter": self.niter, "kmeans_backend": self.backend,
                "normalize": self.normalize,
                "fuse_weight": fuse_weight if variant == "fuse" else None}
        return {k: replace(r, convention={**r.convention, **info}) for k, r in res.items()}

    def choose_path(self, variant: str, path: str = "auto", evaluate_kwargs: dict | None = None,
                    preset: str | None = None) -> str:
        """The ranking path ``evaluate`` takes: "cells" or "scores" (validates ``path``).

        "auto": "cells" for variant "adc" (ties "stable" or "random") unless ``evaluate_kwargs``
        holds an argument only ``metrics.evaluate`` takes, or the convention's AP flavour is
        "tie_merged" (then "scores", which handles it as before). The cell path costs O(C M)
        table look-ups plus O(C) counting per query, C <= N distinct cells; the score path O(N M)
        look-ups plus an O(N log N) sort. Even with every cell distinct (C = N, large M) the
        counting is several times cheaper than the sort (``bench/bench_cluster_grid.py``), so
        "auto" never needs the score path for "adc"."""
        check_variant(variant)
        if path not in PATHS:
            raise ValueError(f"unknown path={path!r}; expected one of {PATHS}")
        if path == "cells" and variant != "adc":
            raise ValueError(f"path='cells' ranks PQ cells and applies to variant='adc' only, got variant={variant!r}"
                             " (fuse and rerank scores differ within a cell); use path='auto' or 'scores'")
        merged = resolve_convention(preset, ap=(evaluate_kwargs or {}).get("ap"))["ap"] == "tie_merged"
        if path == "cells" and merged:
            raise ValueError("ap='tie_merged' (Sem-PCYC's AP) needs the item distances: use path='auto' or 'scores'")
        if path != "auto":
            return path
        if variant != "adc" or merged or set(evaluate_kwargs or ()) - _CELL_KWARGS:
            return "scores"
        return "cells"

    def _evaluate_cells(self, query, query_labels, gallery_labels, ties: str, seed: int, metrics, preset,
                        block_size: int, *, num_threads: int | None = None, **convention) -> dict[str, MetricResult]:
        """Variant "adc" ranked by cells: same results as the score path (``cell_ranks``)."""
        self.cells()
        _, cell_of, sizes, cols = self._cells

        def rank_blocks(labels):
            ranker = CellRanker(cell_of, sizes, labels, ties, seed)
            if block_size < 1:
                raise ValueError(f"block_size must be >= 1, got {block_size}")
            q = self.prepare_queries(query)
            n_queries = len(labels.query_codes)
            threads = max(1, num_threads or torch.get_num_threads())
            with ThreadPoolExecutor(threads) as pool:
                for start in range(0, len(q), block_size):
                    end = min(start + block_size, len(q))
                    if end > n_queries:
                        raise ValueError(f"score block [{start}, {end}) runs past the {n_queries} query labels")
                    # the block's tables exactly as the score path computes them (B, M, K); the workers
                    # copy their rows out transposed, (M K, rows) (in a worker thread torch runs
                    # single-threaded)
                    lut = self.tables(q[start:end])

                    def dist(a, b, lut=lut):  # cell-major (C, b - a) distances of block rows [a, b)
                        lut_t = lut[a:b].permute(1, 2, 0).reshape(self.M * self.K, b - a).contiguous()
                        return gather_sum_cellmajor(lut_t, cols).numpy()
                    yield ranker.rank_block(start, end, dist, pool, threads)
            if len(q) != n_queries:
                raise ValueError(f"score blocks covered {len(q)} queries but {n_queries} query labels were given")

        order = {"ties": ties, "seed": seed if ties == "random" else None, "higher_is_better": False}
        return evaluate_rank_blocks(rank_blocks, query_labels, gallery_labels, order, metrics=metrics, preset=preset,
                                    **convention)


def check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant={variant!r}; expected one of {VARIANTS}")


def resolve_ties(variant: str, ties: str | None) -> str:
    """The tie policy of a variant: rerank is ties="secondary" by definition; the others take
    "random" (default; see the module docstring) or "stable"."""
    check_variant(variant)
    if variant == "rerank":
        if ties not in (None, "secondary"):
            raise ValueError(f"variant='rerank' orders ADC ties by the exact distance (ties='secondary'); "
                             f"got ties={ties!r}. Use variant='adc' for ties='stable' or 'random'")
        return "secondary"
    ties = "random" if ties is None else ties
    if ties not in ("stable", "random"):
        raise ValueError(f"variant={variant!r} takes ties='stable' or 'random', got {ties!r} "
                         "(ties broken by the exact distance are variant='rerank')")
    return ties


def evaluate_clustered(query, gallery, query_labels, gallery_labels, M: int, K: int, *, variant: str = "adc",
                       ties: str | None = None, metrics: Sequence[str] | str = DEFAULT_METRICS,
                       preset: str | None = None, seed: int = DEFAULT_SEED, fuse_weight: float = DEFAULT_FUSE_WEIGHT,
                       niter: int = 20, normalize: bool = True, block_size: int = 1024, kmeans_backend: str = "faiss",
                       **evaluate_kwargs) -> dict[str, MetricResult]:
    """Fit a ``ClusterIndex`` on the gallery (M sub-spaces, K centroids, ``seed``) and evaluate the
    queries with ``variant``; see ``ClusterIndex.evaluate`` for ties and the recorded convention."""
    resolve_ties(variant, ties)  # fail before fitting
    index = ClusterIndex.fit(gallery, M, K, seed, niter=niter, normalize=normalize, backend=kmeans_backend)
    return index.evaluate(query, query_labels, gallery_labels, variant=variant, ties=ties, metrics=metrics,
                          preset=preset, fuse_weight=fuse_weight, block_size=block_size, **evaluate_kwargs)

