"""Iterative quantisation (ITQ; Gong & Lazebnik, CVPR 2011) as a retrieval kind: binary codes, Hamming ranking.

Where the recipe comes from. SAKE's own repository (github qliu24/SAKE) holds no ITQ code: its test
scripts rank the 64-d hashing-layer features by Euclidean distance. The ZS-SBIR code that computes
ITQ codes is one numpy function, ``compressITQ(Xtrain, Xtest, n_iter=50)`` with its helper ``ITQ``:
Sem-PCYC ``src/itq.py`` (github AnjanDutta/sem-pcyc) and, the same function, ClusterRetri
``src/utils/tools.py`` (github curiosity654/ClusterRetr), called by ClusterRetri's
``src/test_cse_resnet_sketchy_zeroshot_itq.py`` as ``compressITQ(query sketches, gallery photos)``.
Read there, that recipe is (this module's defaults follow it except where marked):
  fit        on the FIRST argument, the query sketches (``fit_on="query"``).
  centring   each set minus ITS OWN mean, the gallery too (``center="own"``; ``"fit"``: the fitting
             set's mean for every set, the usual out-of-sample encoding).
  PCA        eigenvectors of the sample covariance (ddof 1, ``numpy.linalg.eigh`` reading the upper triangle,
             which fixes their signs and so the codes), largest eigenvalue first. They keep every
             component, so there the code length equals the feature width (64 bits for SAKE's 64-d
             layer). Here ``bits`` < width keeps the top ``bits`` components (Gong & Lazebnik's
             PCA-ITQ); ``bits`` = width is their case.
  start      R_0 = the left singular vectors of a bits x bits standard-normal matrix drawn from numpy's
             legacy generator seeded with the iteration count (so seed 50). Here the seed is ``seed``
             (legacy ``RandomState(seed)``, default 0): ``seed=50`` draws their R_0.
  iterations 50. Each: B = sgn(V R) with sgn(0) = +1; C = B^T V = U S W^T (SVD); R <- W U^T, the
             orthogonal Procrustes solution minimising the quantisation loss ||B - V R||_F^2 for fixed B.
  codes      sgn(V R) with STRICT > 0 (a projection of exactly 0 gives -1 here, 0 there): +-1 int8 here,
             booleans there. Their Hamming ranking is scipy ``cdist`` (Euclidean on booleans, i.e.
             sqrt(Hamming), the same order) sorted by numpy's unstable argsort, nearest first.
THE UPDATE (``update=``). With numpy's ``svd`` returning (U, S, Vh = W^T), their port sets R = Vh U^T =
W^T U^T, where Gong's MATLAB ``ITQ.m`` (``R = UA * UB'``, MATLAB's svd returning W) has the Procrustes
solution R = W U^T. The port's update is no descent
step: its loss goes up and down (tests). ``update="procrustes"`` (default) is ITQ; ``"as_released"``
reproduces the port; ``AS_RELEASED`` holds every setting of the port (``evaluate_itq(..., **AS_RELEASED)``).
Everything is computed in float64 (their features are float32: codes may differ where a projection is
within rounding of 0).

Hamming ranks TIE massively (a 64-bit distance takes 65 values for thousands of photos), so the tie
policy is explicit (``ties``, the policies of ``zssbir.eval.relevant_ranks``):
  "random"     (default) photos at the same distance in a seeded random order (``tie_seed``): the order
               carries no information, which is what an arbitrary sort is meant to give.
  "stable"     by gallery index. Gallery lists are sorted by class, so a tie group keeps each class's
               photos together: AP then depends on where the query's class sits in the list.
  "secondary"  by the exact Euclidean distance of the real-valued features (as given), nearest first:
               a Hamming lookup re-ranked inside each tie group.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from .exact_search import as_features, score_blocks
from .metrics import DEFAULT_METRICS, MetricResult, evaluate

ITERATIONS = 50
FIT_ON = ("query", "gallery", "both")
CENTERS = ("own", "fit")
UPDATES = ("procrustes", "as_released")
AS_RELEASED = {"seed": 50, "iterations": ITERATIONS, "fit_on": "query", "center": "own", "update": "as_released"}


def _features(x, name: str) -> np.ndarray:
    return as_features(x, name).numpy().astype(np.float64)


@dataclass(frozen=True)
class ItqModel:
    """A fitted ITQ: codes of x are sgn((x - mean) @ projection @ rotation), +1 only where > 0."""

    mean: np.ndarray  # (D,) mean of the fitting set
    projection: np.ndarray  # (D, bits) PCA components, largest variance first
    rotation: np.ndarray  # (bits, bits) orthogonal R
    loss_history: np.ndarray = field(repr=False)  # (iterations,) ||B_t - V R_t||_F^2 after each update
    update: str = "procrustes"

    @property
    def bits(self) -> int:
        return self.rotation.shape[0]

    def project(self, x, *, center: str = "fit") -> np.ndarray:
        """(n, bits) float64 rotated PCA projections V R of x, centred by the fitted mean ("fit") or x's own ("own")."""
        x = _features(x, "features to encode")
        if x.shape[1] != len(self.mean):
            raise ValueError(f"features have {x.shape[1]} dimensions but ITQ was fitted on {len(self.mean)}")
        if center not in CENTERS:
            raise ValueError(f"unknown center={center!r}; expected one of {CENTERS}")
        x = x - (self.mean if center == "fit" else x.mean(0, keepdims=True))
        return (x @ self.projection) @ self.rotation

    def encode(self, x, *, center: str = "fit") -> np.ndarray:
        """(n, bits) int8 codes, +1 where the projection is > 0 and -1 elsewhere."""
        return np.where(self.project(x, center=center) > 0, 1, -1).astype(np.int8)


def fit_itq(features, bits: int = 64, iterations: int = ITERATIONS, seed: int = 0,
            update: str = "procrustes") -> ItqModel:
    """Fit PCA to ``bits`` components and the ITQ rotation on ``features`` (n x D), recipe in the module docstring."""
    x = _features(features, "ITQ fitting features")
    n, d = x.shape
    if int(bits) != bits or bits < 1:
        raise ValueError(f"bits must be a positive integer, got {bits!r}")
    if bits > d:
        raise ValueError(f"bits={bits} exceeds the feature width {d}: ITQ keeps at most one bit per PCA component")
    if bits > n or n < 2:
        raise ValueError(f"bits={bits} needs at least {max(bits, 2)} fitting samples, got {n}")
    if int(iterations) != iterations or iterations < 0:
        raise ValueError(f"iterations must be a non-negative integer, got {iterations!r}")
    if update not in UPDATES:
        raise ValueError(f"unknown update={update!r}; expected one of {UPDATES}")
    mean = x.mean(0)
    centred = x - mean
    _, vectors = np.linalg.eigh(np.cov(centred, rowvar=False), "U")  # ascending eigenvalues
    projection = np.ascontiguousarray(vectors[:, ::-1][:, :bits])
    v = centred @ projection
    rotation = np.linalg.svd(np.random.RandomState(seed).randn(bits, bits))[0]
    losses = []
    for _ in range(int(iterations)):
        b = np.where(v @ rotation >= 0, 1.0, -1.0)
        u, _, w_t = np.linalg.svd(b.T @ v)
        rotation = w_t.T @ u.T if update == "procrustes" else w_t @ u.T
        losses.append(float(np.sum((b - v @ rotation) ** 2)))
    return ItqModel(mean, projection, rotation, np.array(losses), update)


def _codes(codes, name: str) -> np.ndarray:
    c = np.asarray(codes)
    if c.ndim != 2 or 0 in c.shape:
        raise ValueError(f"{name} must be a non-empty 2-D array (items x bits), got shape {c.shape}")
    if not np.isin(c, (-1, 1)).all():
        raise ValueError(f"{name} must hold only -1 and +1 (ItqModel.encode); for 0/1 codes pass 2 * codes - 1")
    return c.astype(np.float32)


def hamming_blocks(query_codes, gallery_codes, block_size: int = 1024) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(start, end, distances)``: exact Hamming distances (float32 integers) of a block of queries
    to every gallery code, (bits - q . g) / 2 for +-1 codes (exact: every value is an integer below 2^24)."""
    q, g = _codes(query_codes, "query codes"), _codes(gallery_codes, "gallery codes")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query codes have {q.shape[1]} bits but gallery codes have {g.shape[1]}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    bits, gt = np.float32(q.shape[1]), np.ascontiguousarray(g.T)
    for start in range(0, len(q), block_size):
        end = min(start + block_size, len(q))
        block = q[start:end] @ gt
        np.subtract(bits, block, out=block)
        block *= np.float32(0.5)
        yield start, end, block


def hamming_distances(query_codes, gallery_codes, block_size: int = 1024) -> np.ndarray:
    """(Q, N) exact Hamming distances in the smallest unsigned type that holds them (uint8 up to 255 bits),
    computed block by block: 15k x 17k at 64 bits is a 255 MB result plus one float32 block."""
    bits = np.asarray(query_codes).shape[-1]
    dtype = np.uint8 if bits <= 255 else np.uint16 if bits <= 65535 else np.uint32
    out = np.empty((len(query_codes), len(gallery_codes)), dtype=dtype)
    for start, end, block in hamming_blocks(query_codes, gallery_codes, block_size):
        out[start:end] = block
    return out


def itq_codes(query, gallery, *, bits: int = 64, seed: int = 0, iterations: int = ITERATIONS,
              fit_on: str = "query", center: str = "own",
              update: str = "procrustes") -> tuple[ItqModel, np.ndarray, np.ndarray]:
    """(model, query codes, gallery codes): ITQ fitted on ``fit_on`` ("query", "gallery" or "both"), each
    set centred by ``center`` ("own": its own mean; "fit": the fitting set's mean)."""
    if fit_on not in FIT_ON:
        raise ValueError(f"unknown fit_on={fit_on!r}; expected one of {FIT_ON}")
    if center not in CENTERS:
        raise ValueError(f"unknown center={center!r}; expected one of {CENTERS}")
    q, g = _features(query, "query features"), _features(gallery, "gallery features")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query features have {q.shape[1]} dimensions but gallery features have {g.shape[1]}")
    fitted = {"query": q, "gallery": g, "both": np.concatenate([q, g])}[fit_on]
    model = fit_itq(fitted, bits, iterations, seed, update)
    return model, model.encode(q, center=center), model.encode(g, center=center)


def evaluate_hamming(query_codes, gallery_codes, query_labels, gallery_labels, *, ties: str = "random",
                     tie_seed: int | None = 0, features: tuple | None = None, block_size: int = 1024,
                     **evaluate_kwargs) -> dict[str, MetricResult]:
    """``metrics.evaluate`` on Hamming distances (smaller first) of +-1 codes, block by block. ``ties="secondary"``
    orders tied photos by the exact Euclidean distance of ``features = (query features, gallery features)``."""
    if "higher_is_better" in evaluate_kwargs or "secondary" in evaluate_kwargs:
        raise ValueError("Hamming distances rank smaller first; secondary scores come from features=")
    blocks = hamming_blocks(query_codes, gallery_codes, block_size)
    if ties == "secondary":
        if features is None:
            raise ValueError("ties='secondary' needs features=(query features, gallery features): the exact "
                             "distance orders the ties")
        exact = score_blocks(*features, metric="euclidean", normalize=False, block_size=block_size)
        blocks = ((s, e, h, x.numpy()) for (s, e, h), (_, _, x) in zip(blocks, exact))
    return evaluate(blocks, query_labels, gallery_labels, higher_is_better=False, ties=ties, seed=tie_seed,
                    secondary_higher_is_better=False if ties == "secondary" else None, block_size=block_size,
                    **evaluate_kwargs)


def evaluate_itq(query, gallery, query_labels, gallery_labels, *, bits: int = 64, seed: int = 0,
                 iterations: int = ITERATIONS, fit_on: str = "query", center: str = "own",
                 update: str = "procrustes", preset: str | None = "clusterretri", ties: str = "random",
                 tie_seed: int | None = 0, metrics: Sequence[str] | str = DEFAULT_METRICS, block_size: int = 1024,
                 **evaluate_kwargs) -> dict[str, MetricResult]:
    """ITQ codes of both sets (``itq_codes``), then ``metrics.evaluate`` on their Hamming distances, nearest
    first, ties by ``ties`` (module docstring); the same return type as ``exact_search.evaluate_features``.
    Each result's convention also records the ITQ settings (key "itq")."""
    _, qc, gc = itq_codes(query, gallery, bits=bits, seed=seed, iterations=iterations, fit_on=fit_on, center=center,
                          update=update)
    results = evaluate_hamming(qc, gc, query_labels, gallery_labels, ties=ties, tie_seed=tie_seed,
                               features=(query, gallery), block_size=block_size, metrics=metrics, preset=preset,
                               **evaluate_kwargs)
    itq = {"bits": int(bits), "seed": seed, "iterations": int(iterations), "fit_on": fit_on, "center": center,
           "update": update}
    return {name: replace(r, convention={**r.convention, "itq": itq}) for name, r in results.items()}
