"""The cell path of cluster-then-retrieve (zssbir.eval.cell_ranks) against the score path.

Variant "adc" can be ranked from the C distinct PQ cells (``path="cells"``) or from the (Q, N) item
distances (``path="scores"``, ``relevant_ranks``). Both must give the SAME ranks and therefore
bit-identical per-query values under every tie policy and metric convention. The layouts here are
random and hostile: integer centroids and queries (exact arithmetic, so many different cells get
exactly equal ADC), empty cells, a class in one cell, K above the number of classes, query classes
absent from the gallery, many small chunks of rows.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
import itertools
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import torch

from zssbir.eval import cell_ranks
from zssbir.eval.cell_ranks import CellRanker, cells_of
from zssbir.eval.cluster_grid import grid
from zssbir.eval.adc_sums import gather_sum, gather_sum_cellmajor
from zssbir.eval.cluster_retrieval import ClusterIndex, Prepared, evaluate_clustered, prepare_features
from zssbir.eval.pq_encode import encode
from zssbir.eval.metrics import PRESETS
from zssbir.eval.relevant_ranks import label_index, rank_positions

METRICS = ("map@all", "map@1", "map@3", "map@10", "prec@1", "prec@4", "prec@10", "prec@500")
# every convention the cell path computes (ap "tie_merged", the sem_pcyc preset's, needs the item distances:
# that preset is compared with its ordered AP here; tests/test_fidelity.py covers the route to the score path)
CONVENTIONS = [{"preset": p, **({"ap": "exact"} if PRESETS.get(p, {}).get("ap") == "tie_merged" else {})}
               for p in [None, *PRESETS]] + [
    {"ap": ap, "map_k_denominator": mk, "prec_k_denominator": pk}
    for ap, mk, pk in itertools.product(("exact", "voc"), ("min_k_relevant", "relevant_in_topk"),
                                        ("min_k_gallery", "min_k_relevant"))]


def fold(lut: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """The reference ADC sum (the original implementation): table columns added one sub-space at a
    time, left to right, in float32."""
    out = lut[:, cols[:, 0]].clone()
    for m in range(1, cols.shape[1]):
        out += lut[:, cols[:, m]]
    return out


def random_layout(seed: int, integer: bool = True):
    """A ClusterIndex built by hand (any centroids and codes) with labels and queries. Integer
    features make exact ADC ties between different cells common."""
    rng = np.random.default_rng(seed)
    M, K, d = int(rng.integers(1, 5)), int(rng.integers(1, 7)), int(rng.integers(1, 3))
    n, n_q = int(rng.integers(1, 90)), int(rng.integers(1, 40))
    n_classes = int(rng.integers(1, 7))
    if integer:
        cents = rng.integers(-2, 3, (M, K, d)).astype(np.float32)
        q = rng.integers(-2, 3, (n_q, M * d)).astype(np.float32)
    else:
        cents = rng.standard_normal((M, K, d)).astype(np.float32)
        q = rng.standard_normal((n_q, M * d)).astype(np.float32)
    used = max(1, K - int(rng.integers(0, 3)))  # some centroids never used: empty cells
    codes = rng.integers(0, used, (n, M))
    gl = rng.integers(0, n_classes, n)
    if rng.random() < 0.3 and (gl == 0).any():  # one class entirely in one cell
        codes[gl == 0] = codes[np.flatnonzero(gl == 0)[0]]
    if rng.random() < 0.3:  # few cells for many items
        codes[:] = codes[rng.integers(0, min(3, n), n)]
    ql = rng.integers(0, n_classes + 1, n_q)  # class n_classes is never in the gallery
    gallery = torch.from_numpy(np.concatenate([cents[m][codes[:, m]] for m in range(M)], axis=1))
    index = ClusterIndex(cents, codes, gallery, normalize=False, seed=int(seed), niter=0)
    return index, q, ql, gl


def both_paths(index, q, ql, gl, **kw):
    kw = {"metrics": METRICS, "skip_missing": True, **kw}
    return index.evaluate(q, ql, gl, path="cells", **kw), index.evaluate(q, ql, gl, path="scores", **kw)


def assert_same(cells, scores):
    assert cells.keys() == scores.keys()
    for name in cells:
        np.testing.assert_array_equal(cells[name].per_query, scores[name].per_query, err_msg=name)
        assert cells[name].value == scores[name].value or (np.isnan(cells[name].value)
                                                           and np.isnan(scores[name].value))
        assert cells[name].convention == scores[name].convention


@pytest.mark.parametrize("seed", range(40))
def test_random_layouts_identical_per_query_values(seed, monkeypatch):
    """Every metric, every convention, ties stable and random (several seeds), small chunks of rows
    and odd block sizes: per-query values of the cell path equal the score path's exactly."""
    monkeypatch.setattr(cell_ranks, "_CHUNK_ELEMENTS", [1, 40, 1 << 19][seed % 3])
    index, q, ql, gl = random_layout(seed, integer=seed % 4 != 3)
    if not np.isin(ql, gl).any():
        ql[0] = gl[0]
    rng = np.random.default_rng(1000 + seed)
    block = int(rng.integers(1, 12))
    for ties, tie_seed in [("stable", None), ("random", seed), ("random", seed + 1)]:
        # identical ranks give identical values under any convention: each layout tries two (every
        # convention comes up across the layouts), every fourth layout all of them
        every = seed % 4 == 0 and ties == "stable"
        for conv in CONVENTIONS if every else [CONVENTIONS[seed % len(CONVENTIONS)],
                                               CONVENTIONS[(seed + 5) % len(CONVENTIONS)]]:
            cells, scores = both_paths(index, q, ql, gl, ties=ties, tie_seed=tie_seed, block_size=block,
                                       num_threads=int(rng.integers(1, 4)), **conv)
            assert_same(cells, scores)


def test_exact_ties_across_cells_are_ordered_jointly():
    """Hand case: 1-d, two centroids at -1 and +1, query at 0: both cells have ADC exactly 1, so
    all four items tie and the tie policy orders them across the two cells."""
    cents = np.array([[[-1.0], [1.0]]], np.float32)
    codes = np.array([[1], [0], [1], [0]])
    gl = np.array([0, 1, 1, 0])
    index = ClusterIndex(cents, codes, torch.from_numpy(cents[0][codes[:, 0]]), normalize=False, seed=0, niter=0)
    q, ql = np.zeros((1, 1), np.float32), np.array([0])
    assert np.all(index.adc(q) == 1.0)
    for ties, seed in [("stable", None), ("random", 0), ("random", 5)]:
        cells, scores = both_paths(index, q, ql, gl, ties=ties, tie_seed=seed, metrics=["map@all"], ap="exact")
        assert_same(cells, scores)
    # stable: items 0 and 3 (class 0) sit at ranks 1 and 4 although they are in different cells
    r = index.evaluate(q, ql, gl, path="cells", ties="stable", metrics=["map@all"], ap="exact")["map@all"]
    assert r.per_query[0] == pytest.approx((1 / 1 + 2 / 4) / 2)


def distance_cases():
    rng = np.random.default_rng(7)
    for case in range(24):
        n_q, C = int(rng.integers(1, 30)), int(rng.integers(1, 60))
        kind = case % 4
        if kind == 0:  # few distinct values: ties everywhere
            dist = rng.integers(0, 3, (n_q, C)).astype(np.float32)
        elif kind == 1:  # signed values, with -0.0 and +0.0 (equal)
            dist = rng.choice(np.array([-2.5, -1.0, -0.0, 0.0, 1e-30, 3.0], np.float32), (n_q, C))
        elif kind == 2:  # wide range of magnitudes
            dist = (rng.standard_normal((n_q, C)) * 10.0 ** rng.integers(-20, 20, (n_q, C))).astype(np.float32)
        else:
            dist = rng.random((n_q, C)).astype(np.float32)
        # cells of several items (a weighted histogram), or nearly all of one item (plain counts plus the few)
        n = int(rng.integers(C, 3 * C + 2)) if case % 3 else C + int(rng.integers(0, C // 10 + 1))
        cell_of = np.concatenate([np.arange(C), rng.integers(0, C, n - C)])[rng.permutation(n)]
        if case % 5 == 0:  # empty cells: no item points at the last cells
            cell_of = cell_of % max(1, C - 2)
        gl = rng.integers(0, 4, n)
        ql = rng.integers(0, 4, n_q)
        yield dist, cell_of, gl, ql


@pytest.mark.parametrize("chunk", [1, 7, 1 << 19])
def test_cell_ranker_matches_relevant_ranks_on_any_distances(chunk, monkeypatch):
    """CellRanker on arbitrary float32 cell distances (negative, -0.0, huge, many ties, empty cells)
    gives the ranks relevant_ranks computes from the item distances dist[:, cell_of]."""
    monkeypatch.setattr(cell_ranks, "_CHUNK_ELEMENTS", chunk)
    assert_ranker_matches_relevant_ranks(distance_cases(), random_seed=3)


def wide_distance_cases():
    """Thousands of cells, classes spread over hundreds of them (many thresholds a query, so lookup
    buckets with several thresholds, and the kept cells below and above them), distances with few
    significant bits (exact ties across cells), a wide range or one narrow band."""
    rng = np.random.default_rng(11)
    for case in range(6):
        C, n_q = int(rng.integers(1500, 4000)), 7
        base = rng.random((n_q, C)) * [1.0, 1e-3, 1e6][case % 3] + [0.0, 1.0, 0.0][case % 3]
        if case % 2:  # few significant bits: many exact ties between cells (and with thresholds)
            base = np.round(base * 64) / 64
        dist = base.astype(np.float32)
        n = C + int(rng.integers(0, C))
        cell_of = np.concatenate([np.arange(C), rng.integers(0, C, n - C)])[rng.permutation(n)]
        gl = rng.integers(0, 5, n)
        ql = rng.integers(0, 5, n_q)
        yield dist, cell_of, gl, ql


def assert_ranker_matches_relevant_ranks(cases, random_seed: int, rows_per_block: int = 5):
    """For every (cell distances (Q, C), cell_of, gallery labels, query labels) case, ties stable and
    random: CellRanker's ranks of every query equal relevant_ranks' on the item distances."""
    for dist, cell_of, gl, ql in cases:
        for ties, seed in [("stable", None), ("random", random_seed)]:
            expected = rank_positions(dist[:, cell_of], ql, gl, higher_is_better=False, ties=ties, seed=seed)
            ranker = CellRanker(cell_of, np.bincount(cell_of, minlength=dist.shape[1]), label_index(ql, gl), ties,
                                seed)
            got = [np.empty(0, np.int64)] * len(ql)
            with ThreadPoolExecutor(2) as pool:
                for start in range(0, len(ql), rows_per_block):
                    end = min(start + rows_per_block, len(ql))
                    block = ranker.rank_block(start, end, lambda a, b, s=start: dist[s + a:s + b].T, pool, 2)
                    for rows, ranks in block.groups:
                        assert ranks.dtype == np.int64 and ranks.flags.c_contiguous
                        for i, r in zip(rows, ranks):
                            got[i] = r
            for i, (g, e) in enumerate(zip(got, expected)):
                np.testing.assert_array_equal(g, e, err_msg=f"query {i}, ties={ties}")


def test_cell_ranker_on_many_cells_and_thresholds():
    """The lookup table and the kept cells at the size of a real gallery's cells: ranks equal those of
    relevant_ranks on the item distances, ties stable and random."""
    assert_ranker_matches_relevant_ranks(wide_distance_cases(), random_seed=4)


def test_cell_ranker_names_the_first_query_with_nan_or_inf():
    """NaN or +-inf in the cell distances is refused with the first bad query (in query order, across
    worker threads and chunks), also when that query's class has no gallery item."""
    rng = np.random.default_rng(2)
    dist = rng.random((12, 40)).astype(np.float32)
    cell_of = np.concatenate([np.arange(40), rng.integers(0, 40, 20)])
    gl, ql = rng.integers(0, 3, 60), np.array([0, 9, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1])  # class 9: no gallery item
    ranker = CellRanker(cell_of, np.bincount(cell_of, minlength=40), label_index(ql, gl), "stable", None)
    for bad, expected in [([(9, 7, np.nan)], 9), ([(9, 7, np.nan), (5, 0, -np.inf)], 5),
                          ([(9, 7, np.inf), (1, 39, np.nan)], 1)]:
        d = dist.copy()
        for row, cell, value in bad:
            d[row, cell] = value
        with ThreadPoolExecutor(2) as pool, pytest.raises(ValueError, match=f"first at query {expected},"):
            ranker.rank_block(0, 12, lambda a, b: d[a:b].T, pool, 2)


def test_cell_rank_kernel_stays_inside_its_arrays():
    """The compiled kernel indexes without bounds checks. Run the hostile layouts again with numba's
    bounds checking on (a fresh compile in a temporary cache): an index outside an array raises there."""
    cache = os.path.join(tempfile.gettempdir(), "zssbir-numba-boundscheck")  # only ever holds bounds-checked code
    env = {**os.environ, "NUMBA_BOUNDSCHECK": "1", "NUMBA_CACHE_DIR": cache}
    code = ("import numba, sys; assert numba.config.BOUNDSCHECK; import pytest; "
            "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', __file__, '-k', "
            "'random_layouts or any_distances or many_cells or exact_ties']))").replace("__file__", repr(__file__))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_cells_of_groups_equal_code_tuples():
    codes = np.array([[1, 0], [0, 2], [1, 0], [0, 0], [0, 2]])
    cell_codes, cell_of, sizes = cells_of(codes)
    np.testing.assert_array_equal(cell_codes, [[0, 0], [0, 2], [1, 0]])  # lexicographic
    np.testing.assert_array_equal(cell_of, [2, 1, 2, 0, 1])
    np.testing.assert_array_equal(sizes, [1, 2, 2])
    wide = np.random.default_rng(0).integers(0, 300, (50, 9))  # 9 x 9 bits > 62: the row-unique fallback
    wide[10] = wide[3]
    cell_codes, cell_of, sizes = cells_of(wide)
    np.testing.assert_array_equal(cell_codes[cell_of], wide)
    assert len(sizes) == 49 and sizes.sum() == 50


@pytest.mark.parametrize("M", [1, 2, 3, 4, 8, 17])
def test_gather_sums_are_the_left_to_right_float32_sum(M):
    """Both gathers (query-major for the score path, cell-major for the cell path, fused from M = 3)
    equal the sub-space-by-sub-space sum bit for bit, on entries of mixed magnitudes where a
    different summation order rounds differently."""
    rng = np.random.default_rng(M)
    K, B, n = 5, 13, 40
    lut = torch.from_numpy((rng.random((B, M * K)) * 10.0 ** rng.integers(-6, 7, (B, M * K))).astype(np.float32))
    cols = torch.from_numpy(rng.integers(0, K, (n, M)) + np.arange(M) * K)
    ref = fold(lut, cols)
    if M >= 3:  # the order matters on these entries: a reversed sum differs somewhere
        assert not torch.equal(ref, fold(lut, cols.flip(1)))
    out = gather_sum(lut, cols, torch.empty(B, n), torch.empty(B, n))
    assert torch.equal(out, ref)
    assert torch.equal(gather_sum_cellmajor(lut.T.contiguous(), cols), ref.T)


def test_tables_bit_identical_to_the_out_of_place_formula():
    """The lookup tables (computed in place) equal |c|^2 - 2 q.c + |q|^2 evaluated out of place, as
    before, bit for bit, including huge, tiny and zero entries."""
    rng = np.random.default_rng(5)
    for M, K, scale in [(1, 7, 1.0), (4, 16, 1e-3), (8, 3, 1e18), (16, 256, 1.0)]:
        g = (rng.standard_normal((max(K, 20), 64)) * scale).astype(np.float32)
        index = ClusterIndex(rng.standard_normal((M, K, 64 // M)).astype(np.float32) * np.float32(scale),
                             np.zeros((len(g), M), np.int64), torch.from_numpy(g), normalize=False, seed=0, niter=0)
        q = torch.from_numpy((rng.standard_normal((37, 64)) * scale).astype(np.float32))
        q[3] = 0.0
        qs = q.reshape(len(q), M, 64 // M)
        dots = torch.einsum("bmd,mkd->bmk", qs, index._c)
        before = (index._c_sq[None] - 2 * dots + (qs * qs).sum(-1, keepdim=True)).clamp_(min=0)
        assert torch.equal(index.tables(q), before)


@pytest.mark.parametrize("M,K", [(1, 6), (2, 5), (4, 8), (8, 4)])
def test_score_path_adc_unchanged(M, K):
    """The item distances (score path; used by fuse and rerank) are the original per-sub-space sums."""
    rng = np.random.default_rng(M * K)
    g = rng.standard_normal((150, 16)).astype(np.float32)
    q = rng.standard_normal((33, 16)).astype(np.float32)
    index = ClusterIndex.fit(g, M, K)
    lut = index.tables(index.prepare_queries(q)).reshape(len(q), M * K)
    assert torch.equal(torch.from_numpy(index.adc(q)), fold(lut, index._cols))


def test_fitted_indexes_and_grid_identical(monkeypatch):
    """k-means fitted indexes on clustered data (few cells at small M, unique cells at large M) and
    the grid: the default (auto) path gives the score path's values."""
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((6, 32))
    gl, ql = np.arange(400) % 6, np.arange(120) % 6
    g = (centres[gl] + 0.8 * rng.standard_normal((400, 32))).astype(np.float32)
    q = (centres[ql] + 1.2 * rng.standard_normal((120, 32))).astype(np.float32)
    for M, K in [(1, 4), (2, 8), (16, 8), (32, 2)]:
        index = ClusterIndex.fit(g, M, K)
        assert index.choose_path("adc") == "cells"
        for ties in ("stable", "random"):
            assert_same(*both_paths(index, q, ql, gl, ties=ties, preset="clusterretri", block_size=50))
    kw = dict(Ms=(4, 3), Ks=(16,), variants=("adc",), ties=("stable", "random"), metrics=["map@all", "prec@100"])
    auto, scores = grid(q, g, ql, gl, **kw), grid(q, g, ql, gl, path="scores", **kw)
    cols = ["M", "K", "variant", "ties", "metric", "value", "skipped", "reason"]
    assert auto[cols].equals(scores[cols]) and auto.skipped.sum() == 1 and (~auto.skipped).sum() == 4
    # the grid prepares the features once (Prepared): each index sees exactly the tensors it would
    # prepare itself from the grid's (already prepared) features, and gives the same values
    seen = []
    real = ClusterIndex.prepare_queries
    monkeypatch.setattr(ClusterIndex, "prepare_queries", lambda self, x: seen.append(real(self, x)) or seen[-1])
    grid(q, g, ql, gl, Ms=(2, 4), Ks=(8,), variants=("adc",), metrics=["map@all"])
    expected = prepare_features(prepare_features(q, "q", True), "q", True)
    assert len(seen) == 2 and all(torch.equal(t, expected) for t in seen)
    alone = ClusterIndex.fit(g, 4, 16).evaluate(q, ql, gl, ties="stable", metrics=["map@all", "prec@100"])
    for name, r in alone.items():
        assert auto[(auto.ties == "stable") & (auto.metric == name) & (auto.M == 4)].value.item() == r.value
    one = evaluate_clustered(q, g, ql, gl, 2, 8, metrics=["map@all"])["map@all"]
    two = evaluate_clustered(q, g, ql, gl, 2, 8, metrics=["map@all"], path="scores")["map@all"]
    np.testing.assert_array_equal(one.per_query, two.per_query)


def test_prepared_features_are_what_fit_and_evaluate_would_prepare():
    """Prepared (used by the grid) stands for exactly the tensor fit/evaluate would make from its
    input: same centroids, codes and per-query values; raw and Prepared inputs mix freely."""
    rng = np.random.default_rng(11)
    g = prepare_features(rng.standard_normal((120, 16)).astype(np.float32) * 3, "gallery features", True)
    q = prepare_features(rng.standard_normal((30, 16)).astype(np.float32), "query features", True)
    ql, gl = np.arange(30) % 4, np.arange(120) % 4
    twice = prepare_features(g, "gallery features", True)
    assert not torch.equal(twice, g)  # normalising again moves bits: the test below can tell them apart
    assert torch.equal(prepare_features(Prepared(g, "gallery features", True), "x", True), twice)
    assert torch.equal(prepare_features(Prepared(g, "gallery features", False), "x", True), twice)
    a, b = ClusterIndex.fit(g, 2, 8), ClusterIndex.fit(Prepared(g, "gallery features", True), 2, 8)
    assert np.array_equal(a.centroids, b.centroids) and np.array_equal(a.codes, b.codes)
    assert torch.equal(a.gallery, b.gallery)
    for path in ("cells", "scores"):
        ra = a.evaluate(q, ql, gl, path=path, metrics=["map@all"])["map@all"]
        rb = a.evaluate(Prepared(q, "query features", True), ql, gl, path=path, metrics=["map@all"])["map@all"]
        np.testing.assert_array_equal(ra.per_query, rb.per_query)
    with pytest.raises(ValueError, match="8 dimensions but the index was fitted on 16"):
        a.evaluate(Prepared(q[:, :8], "query features", True), ql, gl)


def test_path_choice_and_errors():
    rng = np.random.default_rng(0)
    g = rng.standard_normal((60, 8)).astype(np.float32)
    q, ql, gl = rng.standard_normal((9, 8)).astype(np.float32), np.arange(9) % 3, np.arange(60) % 3
    index = ClusterIndex.fit(g, 2, 4)
    assert [index.choose_path(v) for v in ("adc", "fuse", "rerank")] == ["cells", "scores", "scores"]
    assert index.choose_path("adc", "scores") == "scores"
    assert index.choose_path("adc", "auto", {"secondary": None}) == "scores"  # only metrics.evaluate takes it
    with pytest.raises(ValueError, match="unknown path='fast'"):
        index.evaluate(q, ql, gl, path="fast")
    with pytest.raises(ValueError, match="applies to variant='adc' only"):
        index.evaluate(q, ql, gl, variant="fuse", path="cells")
    # the same errors, word for word, on both paths
    raw = ClusterIndex(index.centroids, index.codes, index.gallery, normalize=False, seed=0, niter=0)
    huge = q.copy()
    huge[4] *= np.float32(1e20)  # its ADC overflows to inf
    cases = [(index, (q, ql[:-1], gl), {}), (index, (np.vstack([q, q]), ql, gl), {}),
             (index, (q, ql, gl), {"block_size": 0}), (index, (q, np.full(9, 7), gl), {}),
             (raw, (huge, ql, gl), {}), (raw, (huge, ql, gl), {"block_size": 2})]
    for idx, args, kw in cases:
        messages = []
        for path in ("cells", "scores"):
            with pytest.raises(ValueError) as err:
                idx.evaluate(*args, path=path, **kw)
            messages.append(str(err.value))
        assert messages[0] == messages[1], messages
    assert "NaN or inf (first at query 4, gallery item 0)" in messages[0]


def encode_float64(gallery: torch.Tensor, centroids: np.ndarray) -> np.ndarray:
    """The reference codes (the original implementation): nearest centroid by float64 |c|^2 - 2 x.c,
    exact ties to the lowest index."""
    M, K, ds = centroids.shape
    x = gallery.double()
    codes = np.empty((len(x), M), dtype=np.int64)
    for m in range(M):
        c = torch.from_numpy(centroids[m]).double()
        codes[:, m] = ((c * c).sum(1)[None, :] - 2 * x[:, m * ds:(m + 1) * ds] @ c.T).argmin(1).numpy()
    return codes


def test_encode_gives_the_float64_codes_on_near_and_exact_ties():
    """encode works in float32 and redoes the rows it cannot certify in float64. Items put halfway
    between two centroids and then moved by less than float32 can resolve (so the float32 argmin is
    wrong for some of them), items exactly halfway, duplicated centroids (exact ties: lowest index),
    and K = 1: the codes equal float64's everywhere."""
    rng = np.random.default_rng(5)
    M, K, ds = 4, 6, 8
    cents = rng.standard_normal((M, K, ds)).astype(np.float32) * 0.3
    cents[1, 4] = cents[1, 2]  # a duplicated centroid: items nearest to it tie exactly
    parts = []
    for m in range(M):
        a, b = rng.integers(0, K, 300), rng.integers(0, K, 300)
        mid = (cents[m][a].astype(np.float64) + cents[m][b]) / 2
        step = cents[m][b].astype(np.float64) - cents[m][a]
        parts.append(mid + step * (10.0 ** rng.uniform(-12, -5, 300) * rng.choice([-1, 0, 1], 300))[:, None])
    near = torch.from_numpy(np.concatenate(parts, axis=1).astype(np.float32))
    plain = torch.from_numpy(rng.standard_normal((200, M * ds)).astype(np.float32))
    x = torch.cat([near, plain])
    expected = encode_float64(x, cents)
    np.testing.assert_array_equal(encode(x, cents), expected)
    # float32 alone gets some of them wrong: without the float64 redo the test above would fail
    f32 = np.stack([torch.addmm((torch.from_numpy(cents[m]) ** 2).sum(1)[None], x[:, m * ds:(m + 1) * ds],
                                torch.from_numpy(cents[m]).T, alpha=-2).argmin(1).numpy() for m in range(M)], 1)
    assert (f32 != expected).any()
    np.testing.assert_array_equal(encode(x[:, :ds], cents[:1, :1]), np.zeros((len(x), 1), np.int64))
    # unnormalised features where float32 overflows (1e20) or underflows (1e-21): float64's codes still
    for scale in (1e20, 1e-21):
        big, c_big = x * scale, (cents.astype(np.float64) * scale).astype(np.float32)
        np.testing.assert_array_equal(encode(big, c_big), encode_float64(big, c_big), err_msg=f"scale {scale}")


def test_encode_of_fitted_indexes_unchanged():
    """On fitted product quantisers (unit features, several M and K) the codes are float64's."""
    rng = np.random.default_rng(8)
    g = rng.standard_normal((400, 32)).astype(np.float32)
    for M, K in [(1, 7), (2, 16), (4, 25), (8, 64)]:
        index = ClusterIndex.fit(g, M, K, 3)
        np.testing.assert_array_equal(index.codes, encode_float64(index.gallery, index.centroids))
