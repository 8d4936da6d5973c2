"""Cluster-then-retrieve against direct numpy computations, hand cases and sklearn."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from zssbir.eval.cluster_grid import cluster_stats, grid
from zssbir.eval.cluster_retrieval import ClusterIndex, evaluate_clustered
from zssbir.eval.metrics import evaluate
from zssbir.eval.relevant_ranks import rank_positions
from zssbir.eval.exact_search import evaluate_features


def clustered(n_classes=5, dim=32, n_gallery=200, n_query=60, noise=0.25, seed=0):
    """Unit class centres plus Gaussian noise of total norm about ``noise``; L2-normalised."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def draw(n):
        y = np.arange(n) % n_classes
        x = centres[y] + noise * rng.standard_normal((n, dim)) / np.sqrt(dim)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), y

    (g, gl), (q, ql) = draw(n_gallery), draw(n_query)
    return q, g, ql, gl


def sq_dists(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


@pytest.fixture(scope="module")
def data():
    return clustered()


def test_m1_adc_is_distance_to_assigned_centroid_and_clusters_tie(data):
    q, g, ql, gl = data
    index = ClusterIndex.fit(g, 1, 5)
    assigned = index.centroids[0][index.codes[:, 0]]  # (N, D)
    direct = sq_dists(q, assigned)
    adc = index.adc(q)
    np.testing.assert_allclose(adc, direct, atol=1e-5)
    same = rank_positions(adc, ql, gl, higher_is_better=False)
    ref = rank_positions(direct, ql, gl, higher_is_better=False)
    assert all(np.array_equal(a, b) for a, b in zip(same, ref))
    for k in range(5):  # every member of a cluster gets bit-identical scores
        cols = adc[:, index.codes[:, 0] == k]
        assert cols.shape[1] > 0 and np.all(cols == cols[:, :1])


@pytest.mark.parametrize("M", [2, 4])
def test_adc_is_squared_distance_to_reconstruction(data, M):
    q, g, _, _ = data
    index = ClusterIndex.fit(g, M, 8)
    assert index.centroids.shape == (M, 8, 32 // M) and index.codes.shape == (len(g), M)
    np.testing.assert_allclose(index.adc(q), sq_dists(q, index.reconstruct()), atol=1e-5)
    # lookup tables are the query-to-centroid squared distances
    t = index.tables(index.prepare_queries(q[:3])).numpy()
    for m in range(M):
        np.testing.assert_allclose(t[:, m], sq_dists(q[:3, m * (32 // M):(m + 1) * (32 // M)], index.centroids[m]),
                                   atol=1e-5)


def test_matches_faiss_pq_for_power_of_two_k(data):
    # K = 2^nbits: faiss's own PQ, given our centroids, encodes and scores identically
    import faiss

    q, g, _, _ = data
    index = ClusterIndex.fit(g, 2, 16)
    ipq = faiss.IndexPQ(32, 2, 4)
    faiss.copy_array_to_vector(index.centroids.ravel(), ipq.pq.centroids)
    ipq.is_trained = True
    gn = index.gallery.numpy()
    ipq.add(gn)
    np.testing.assert_array_equal(ipq.pq.decode(ipq.pq.compute_codes(gn)), index.reconstruct())
    dist, order = ipq.search(index.prepare_queries(q).numpy(), len(g))
    np.testing.assert_allclose(np.take_along_axis(index.adc(q), order, 1), dist, atol=1e-5)


@pytest.mark.parametrize("M,K", [(1, 7), (2, 25), (4, 16)])
def test_codes_are_nearest_centroids(data, M, K):
    _, g, _, _ = data
    index = ClusterIndex.fit(g, M, K)
    ds = 32 // M
    for m in range(M):
        brute = sq_dists(g[:, m * ds:(m + 1) * ds], index.centroids[m]).argmin(1)
        np.testing.assert_array_equal(index.codes[:, m], brute)


def test_fuse_and_rerank_blocks_match_hand_formulas(data):
    q, g, _, _ = data
    index = ClusterIndex.fit(g, 2, 8)
    adc = sq_dists(q, index.reconstruct())
    exact = np.sqrt(sq_dists(q, g))  # NOT squared
    fused = np.concatenate([b[2].numpy().copy() for b in index.score_blocks(q, "fuse", fuse_weight=0.3,
                                                                               block_size=7)])
    np.testing.assert_allclose(fused, 0.7 * adc + 0.3 * exact, atol=1e-5)
    default = np.concatenate([b[2].numpy() for b in index.score_blocks(q, "fuse")])
    np.testing.assert_allclose(default, 0.8 * adc + 0.2 * exact, atol=1e-5)
    blocks = [(s, e, a.numpy().copy(), x.numpy().copy())
              for s, e, a, x in index.score_blocks(q, "rerank", block_size=9)]
    np.testing.assert_allclose(np.concatenate([b[2] for b in blocks]), adc, atol=1e-5)
    np.testing.assert_allclose(np.concatenate([b[3] for b in blocks]), exact, atol=1e-5)


def test_rerank_puts_nearest_first_hand_case():
    # one cluster (K = 1): every ADC ties, so rerank is the exact-distance order
    ang = np.array([2.0, 1.5, 1.0, 0.5, 0.0])
    g = np.stack([np.cos(ang), np.sin(ang)], 1).astype(np.float32)
    gl, q, ql = np.array([1, 1, 0, 1, 0]), np.array([[1.0, 0.0]], np.float32), np.array([0])
    index = ClusterIndex.fit(g, 1, 1)
    adc = index.adc(q)
    assert np.all(adc == adc[0, 0])
    nearest = rank_positions(index.score_blocks(q, "rerank"), ql, gl, higher_is_better=False, ties="secondary",
                             secondary_higher_is_better=False)
    np.testing.assert_array_equal(nearest[0], [1, 3])  # items 4 (angle 0) and 2 (angle 1)
    right = index.evaluate(q, ql, gl, variant="rerank", metrics=["map@all"], ap="exact")["map@all"].value
    wrong = evaluate(index.score_blocks(q, "rerank"), ql, gl, metrics=["map@all"], ap="exact", ties="secondary",
                     higher_is_better=False, secondary_higher_is_better=True)["map@all"].value  # the sign error
    assert right == pytest.approx((1 / 1 + 2 / 3) / 2) and wrong == pytest.approx((1 / 3 + 2 / 5) / 2)


def test_rerank_matches_naive_lexsort_and_beats_sign_error(data):
    q, g, ql, gl = data
    index = ClusterIndex.fit(g, 1, 3)  # fewer clusters than classes: big tied groups
    adc, exact = index.adc(q).astype(np.float64), np.sqrt(sq_dists(q, g))
    got = rank_positions(index.score_blocks(q, "rerank"), ql, gl, higher_is_better=False, ties="secondary",
                         secondary_higher_is_better=False)
    for i in range(len(q)):
        order = np.lexsort((np.arange(len(g)), exact[i], adc[i]))  # ADC, then exact distance, then index
        np.testing.assert_array_equal(got[i], np.flatnonzero(gl[order] == ql[i]) + 1)
    right = index.evaluate(q, ql, gl, variant="rerank", metrics=["map@all"])["map@all"].value
    wrong = evaluate(index.score_blocks(q, "rerank"), ql, gl, metrics=["map@all"], ties="secondary",
                     higher_is_better=False, secondary_higher_is_better=True)["map@all"].value
    tied = index.evaluate(q, ql, gl, variant="adc", metrics=["map@all"])["map@all"].value
    assert right > tied > wrong


def test_deterministic_with_seed_and_k_not_power_of_two(data):
    _, g, _, _ = data
    a, b = ClusterIndex.fit(g, 2, 25, seed=7), ClusterIndex.fit(g, 2, 25, seed=7)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    np.testing.assert_array_equal(a.codes, b.codes)
    assert a.centroids.shape == (2, 25, 16) and a.codes.max() < 25 and a.codes.min() >= 0
    c = ClusterIndex.fit(g, 2, 25, seed=8)
    assert not np.array_equal(a.centroids, c.centroids)
    assert ClusterIndex.fit(g, 1, 25).seed == 123


def test_clustered_features_sane_metrics():
    # noisy enough that exact retrieval is far from perfect (mAP@all about 0.7), while the class
    # centres are still what k-means finds: the centroids denoise the gallery (the ClusterRetri effect)
    q, g, ql, gl = clustered(dim=64, n_gallery=300, n_query=100, noise=2.0, seed=1)
    metrics = ["map@all", "prec@100", "map@200", "prec@200"]
    exact = evaluate_features(q, g, ql, gl, metrics=metrics, preset="clusterretri")
    assert 0.5 < exact["map@all"].value < 0.85
    res = evaluate_clustered(q, g, ql, gl, 1, 5, metrics=metrics, preset="clusterretri")
    assert res["map@all"].value > 0.95 > exact["map@all"].value
    assert res["prec@100"].value >= exact["prec@100"].value and res["prec@100"].value <= 0.6  # 60 relevant
    stats = cluster_stats(ClusterIndex.fit(g, 1, 5).codes, gl)
    assert stats["purity"] > 0.95 and stats["n_clusters"] == 5 and stats["nmi"] > 0.8
    conv = res["map@all"].convention
    assert conv["M"] == 1 and conv["K"] == 5 and conv["variant"] == "adc" and conv["ties"] == "random"
    assert conv["higher_is_better"] is False and conv["average"] == "class"
    for variant in ("adc", "fuse", "rerank"):
        r = evaluate_clustered(q, g, ql, gl, 2, 8, variant=variant, metrics=metrics)
        assert r["map@all"].value > exact["map@all"].value and r["map@200"].value > exact["map@200"].value
    rnd = evaluate_clustered(q, g, ql, gl, 1, 5, ties="random", seed=3, metrics=["map@all"])["map@all"]
    assert rnd.convention["ties"] == "random" and rnd.convention["seed"] == 3


def test_grid_rows_and_invalid_combos(data):
    q, g, ql, gl = data
    df = grid(q, g, ql, gl, Ms=(1, 2, 3), Ks=(4, 5, 1000), ties=("stable", "random"), metrics=["map@all", "prec@100"])
    ok, skipped = df[~df.skipped], df[df.skipped]
    assert len(ok) == 4 * 5 * 2  # (M, K) x (adc, fuse) x (stable, random) + rerank x metrics
    assert set(zip(ok.M, ok.K)) == {(1, 4), (1, 5), (2, 4), (2, 5)}
    assert set(zip(ok.variant, ok.ties)) == {("adc", "stable"), ("adc", "random"), ("fuse", "stable"),
                                             ("fuse", "random"), ("rerank", "secondary")}
    assert ok.value.between(0, 1).all() and ok.value.notna().all()
    assert set(zip(skipped.M, skipped.K)) == {(1, 1000), (2, 1000), (3, 4), (3, 5), (3, 1000)}
    assert skipped.value.isna().all()
    assert all("valid M for D = 32: 1, 2, 4, 8, 16, 32" in r for r in skipped[skipped.M == 3].reason)
    assert "K = 1000" in skipped[(skipped.M == 1)].reason.iloc[0]
    one = evaluate_clustered(q, g, ql, gl, 2, 5, variant="fuse", metrics=["prec@100"])["prec@100"].value
    row = ok[(ok.M == 2) & (ok.K == 5) & (ok.variant == "fuse") & (ok.ties == "stable") & (ok.metric == "prec@100")]
    assert row.value.item() == pytest.approx(one)


def test_cluster_stats_hand_case_and_sklearn():
    assign = np.array([0, 0, 0, 1, 1, 2])
    labels = np.array(["a", "a", "b", "b", "b", "c"])
    s = cluster_stats(assign, labels)
    assert s["purity"] == pytest.approx(5 / 6)  # 2 (a in 0) + 2 (b in 1) + 1 (c in 2)
    assert s["nmi"] == pytest.approx(normalized_mutual_info_score(labels, assign))
    assert s["ari"] == pytest.approx(adjusted_rand_score(labels, assign))
    assert s["n_clusters"] == 3
    assert cluster_stats(assign[:, None], labels) == s  # (N, 1) codes are the clusters
    codes = np.array([[0, 1], [0, 1], [0, 0], [1, 0], [1, 0], [1, 1]])  # cells: 3 distinct tuples + 1
    p = cluster_stats(codes, labels)
    cells = np.array([0, 0, 1, 2, 2, 3])
    assert p["purity"] == pytest.approx(1.0) and p["n_clusters"] == 4
    assert p["ari"] == pytest.approx(adjusted_rand_score(labels, cells))
    assert p["per_subspace"][0] == cluster_stats(codes[:, 0], labels) and len(p["per_subspace"]) == 2


def test_clear_errors(data):
    q, g, ql, gl = data
    with pytest.raises(ValueError, match=r"do not divide .* D = 32; valid M for D = 32: 1, 2, 4, 8, 16, 32"):
        ClusterIndex.fit(g, 3, 8)
    with pytest.raises(ValueError, match="K = 500 centroids need at least 500 gallery items"):
        ClusterIndex.fit(g, 1, 500)
    with pytest.raises(ValueError, match="M must be a positive integer"):
        ClusterIndex.fit(g, 0, 8)
    bad = g.copy()
    bad[5, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ClusterIndex.fit(bad, 1, 4)
    index = ClusterIndex.fit(g, 2, 4)
    with pytest.raises(ValueError, match="16 dimensions but the index was fitted on 32"):
        index.adc(q[:, :16])
    with pytest.raises(ValueError, match="NaN"):
        index.adc(np.full((2, 32), np.nan, np.float32))
    with pytest.raises(ValueError, match="unknown variant='exact'"):
        next(index.score_blocks(q, "exact"))
    with pytest.raises(ValueError, match="unknown variant"):
        evaluate_clustered(q, g, ql, gl, 1, 4, variant="itq")
    with pytest.raises(ValueError, match="rerank.*ties='secondary'"):
        index.evaluate(q, ql, gl, variant="rerank", ties="stable")
    with pytest.raises(ValueError, match="variant='rerank'"):
        index.evaluate(q, ql, gl, variant="adc", ties="secondary")
    with pytest.raises(ValueError, match="fuse_weight"):
        next(index.score_blocks(q, "fuse", fuse_weight=1.5))
    with pytest.raises(ValueError, match="gallery labels"):
        index.evaluate(q, ql, gl[:-1])
