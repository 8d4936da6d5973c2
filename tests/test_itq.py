"""ITQ hashing (zssbir.eval.itq): against a naive loop of the same recipe, and by its properties."""
import numpy as np
import pytest

from zssbir.eval.itq import (AS_RELEASED, evaluate_hamming, evaluate_itq, fit_itq, hamming_blocks,
                             hamming_distances, itq_codes)
from zssbir.study.conventions import itq_tie_study


# ------------------------------------------------------------------ naive reference, written out step by step
def _naive_mean(x):
    return np.array([sum(x[i, j] for i in range(len(x))) / len(x) for j in range(x.shape[1])])


def _naive_sign(z, zero):
    return np.array([[1.0 if (v > 0 or (v == 0 and zero == 1)) else -1.0 for v in row] for row in z])


def _polar_rotation(c):
    """The orthogonal R maximising trace(C R), as the polar factor C^T (C C^T)^(-1/2) (no SVD)."""
    vals, vecs = np.linalg.eigh(c @ c.T)
    return c.T @ (vecs @ np.diag(1 / np.sqrt(vals)) @ vecs.T)


def reference_codes(train, test, bits, seed, iterations, update="procrustes"):
    """ITQ fitted on ``train``, each set centred by its own mean; codes +1 where the projection is > 0."""
    n, d = train.shape
    centred = train - _naive_mean(train)
    cov = sum(np.outer(row, row) for row in centred) / (n - 1)
    vals, vecs = np.linalg.eigh(cov, UPLO="U")  # the recipe reads the upper triangle: it fixes the signs
    keep = sorted(range(d), key=lambda j: -vals[j])[:bits]
    pca = vecs[:, keep]
    v = centred @ pca
    r = np.linalg.svd(np.random.RandomState(seed).standard_normal((bits, bits)))[0]
    for _ in range(iterations):
        b = _naive_sign(v @ r, zero=1)
        c = b.T @ v
        if update == "procrustes":
            r = _polar_rotation(c)
        else:  # the released numpy port: numpy's Vh (= W^T) where the Procrustes solution has W
            u, _, vh = np.linalg.svd(c)
            r = vh @ u.T
    code = lambda x: _naive_sign(((x - _naive_mean(x)) @ pca) @ r, zero=-1).astype(np.int8)  # noqa: E731
    return code(train), code(test), r


def clustered(n_query=60, n_gallery=90, dim=8, classes=3, noise=1.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 2
    ql, gl = np.sort(rng.integers(0, classes, n_query)), np.sort(rng.integers(0, classes, n_gallery))
    query = centres[ql] + noise * rng.normal(size=(n_query, dim))
    return query, centres[gl] + noise * rng.normal(size=(n_gallery, dim)), ql, gl


# ------------------------------------------------------------------------------------------------- the recipe
@pytest.mark.parametrize("seed", [0, 7, 50])
@pytest.mark.parametrize("update", ["procrustes", "as_released"])
def test_codes_equal_the_naive_reference(seed, update):
    rng = np.random.default_rng(seed)
    q, g = rng.normal(size=(40, 8)) * np.arange(1, 9), rng.normal(size=(30, 8)) + 0.3
    ref_q, ref_g, ref_r = reference_codes(q, g, bits=4, seed=seed, iterations=50, update=update)
    model, qc, gc = itq_codes(q, g, bits=4, seed=seed, update=update)
    np.testing.assert_array_equal(qc, ref_q)
    np.testing.assert_array_equal(gc, ref_g)
    np.testing.assert_allclose(model.rotation, ref_r, atol=1e-8)


def test_as_released_is_the_port_fitted_on_the_queries():
    rng = np.random.default_rng(3)
    q, g = rng.normal(size=(40, 8)), rng.normal(size=(25, 8))
    ref_q, ref_g, _ = reference_codes(q, g, bits=8, seed=50, iterations=50, update="as_released")
    _, qc, gc = itq_codes(q, g, bits=8, **AS_RELEASED)
    np.testing.assert_array_equal(qc, ref_q)
    np.testing.assert_array_equal(gc, ref_g)


def test_fit_on_and_centring():
    q, g, _, _ = clustered()
    model, qc, gc = itq_codes(q, g, bits=4, fit_on="gallery", center="fit")
    alone = fit_itq(g, 4)
    np.testing.assert_allclose(model.rotation, alone.rotation)
    np.testing.assert_array_equal(qc, np.where((q - g.mean(0)) @ alone.projection @ alone.rotation > 0, 1, -1))
    _, _, own = itq_codes(q, g, bits=4, fit_on="gallery", center="own")
    np.testing.assert_array_equal(own, alone.encode(g))  # the fitting set's own mean is the fitted mean
    both, _, _ = itq_codes(q, g, bits=4, fit_on="both")
    np.testing.assert_allclose(both.mean, np.concatenate([q, g]).mean(0))


# --------------------------------------------------------------------------------------------- the properties
@pytest.mark.parametrize("update", ["procrustes", "as_released"])
@pytest.mark.parametrize("bits", [1, 5, 16])
def test_rotation_is_orthogonal(update, bits):
    rng = np.random.default_rng(bits)
    model = fit_itq(rng.normal(size=(200, 16)), bits, update=update)
    np.testing.assert_allclose(model.rotation @ model.rotation.T, np.eye(bits), atol=1e-10)
    np.testing.assert_allclose(model.projection.T @ model.projection, np.eye(bits), atol=1e-10)


def test_quantisation_loss_never_increases():
    q, _, _, _ = clustered(n_query=300, dim=32, classes=6)
    loss = fit_itq(q, 32).loss_history
    assert len(loss) == 50
    assert np.all(np.diff(loss) <= 1e-9 * loss[0])
    assert loss[-1] < loss[0]
    # the released port's update is no descent step: on the same data its loss goes back up
    released = fit_itq(q, 32, seed=50, update="as_released").loss_history
    assert np.any(np.diff(released) > 1e-6 * released[0])
    assert released.min() > loss[-1]


def test_codes_are_plus_minus_one_and_seeded():
    q, g, _, _ = clustered(n_query=120, dim=16, classes=5)
    _, qc, gc = itq_codes(q, g, bits=12, seed=0)
    assert qc.dtype == np.int8 and gc.dtype == np.int8 and qc.shape == (120, 12)
    assert set(np.unique(np.concatenate([qc, gc]))) <= {-1, 1}
    model = fit_itq(q, 12)
    np.testing.assert_array_equal(model.encode(model.mean[None]), -np.ones((1, 12)))  # a projection of 0 gives -1
    _, again, _ = itq_codes(q, g, bits=12, seed=0)
    np.testing.assert_array_equal(qc, again)
    assert any(not np.array_equal(qc, itq_codes(q, g, bits=12, seed=s)[1]) for s in range(1, 6))


def test_hamming_distances_equal_a_naive_count():
    rng = np.random.default_rng(1)
    for bits, dtype in ((70, np.uint8), (300, np.uint16)):
        a, b = rng.choice([-1, 1], size=(7, bits)), rng.choice([-1, 1], size=(9, bits)).astype(np.int8)
        naive = np.array([[sum(x != y for x, y in zip(qa, gb)) for gb in b] for qa in a])
        d = hamming_distances(a, b, block_size=3)
        assert d.dtype == dtype
        np.testing.assert_array_equal(d, naive)
        blocks = list(hamming_blocks(a, b, block_size=4))
        assert [(s, e) for s, e, _ in blocks] == [(0, 4), (4, 7)]
        np.testing.assert_array_equal(np.concatenate([x for _, _, x in blocks]), naive)


# ------------------------------------------------------------------------------------------------ tie policies
def test_tie_policy_changes_map_and_stable_follows_gallery_order():
    query = np.array([[1, 1, 1, 1]])
    gallery = np.array([[1, 1, 1, -1], [1, 1, -1, 1], [1, -1, 1, 1], [-1, 1, 1, 1]])  # all at distance 1
    labels = np.array([1, 1, 0, 0])
    kw = dict(metrics="map@all", ap="exact")
    stable = evaluate_hamming(query, gallery, [0], labels, ties="stable", **kw)["map@all"].value
    assert stable == pytest.approx((1 / 3 + 2 / 4) / 2)  # gallery order: the two relevant photos come last
    flipped = evaluate_hamming(query, gallery[::-1], [0], labels[::-1], ties="stable", **kw)["map@all"].value
    assert flipped == pytest.approx(1.0)
    randoms = {evaluate_hamming(query, gallery, [0], labels, ties="random", tie_seed=s, **kw)["map@all"].value
               for s in range(8)}
    assert len(randoms) > 1 and randoms != {stable}
    feats = (np.zeros((1, 2)), np.array([[3.0, 0], [2, 0], [1, 0], [0.5, 0]]))  # relevant photos nearest
    secondary = evaluate_hamming(query, gallery, [0], labels, ties="secondary", features=feats, **kw)
    assert secondary["map@all"].value == pytest.approx(1.0)
    assert secondary["map@all"].convention["secondary_higher_is_better"] is False


def test_evaluate_itq_end_to_end_records_its_settings():
    q, g, ql, gl = clustered(n_query=80, n_gallery=120, dim=16, classes=4, noise=0.8)
    results = evaluate_itq(q, g, ql, gl, bits=8, ties="random", tie_seed=3)
    assert set(results) == {"map@all", "prec@100", "map@200", "prec@200"}
    conv = results["map@all"].convention
    assert conv["itq"] == {"bits": 8, "seed": 0, "iterations": 50, "fit_on": "query", "center": "own",
                           "update": "procrustes"}
    assert conv["ties"] == "random" and conv["seed"] == 3 and conv["higher_is_better"] is False
    assert conv["preset"] == "clusterretri" and conv["average"] == "class"
    assert results["map@all"].value > 0.6  # 4 separated classes: chance is about 0.25


def test_itq_tie_study():
    q, g, ql, gl = clustered(n_query=60, n_gallery=150, dim=8, classes=3, noise=2.0)
    frame = itq_tie_study(q, g, ql, gl, bits=3, tie_seeds=3, metrics=("map@all", "prec@100"))
    assert list(frame["tie rule"]) == ["stable (gallery index)", "random (seed 0)", "random (seed 1)",
                                       "random (seed 2)", "rerank by exact distance"]
    assert set(frame.columns) == {"scores", "tie rule", "map@all", "prec@100"}
    assert frame["scores"].unique().tolist() == ["ITQ 3-bit Hamming"]
    direct = evaluate_itq(q, g, ql, gl, bits=3, ties="stable", metrics="map@all")["map@all"].value
    assert frame["map@all"].iloc[0] == pytest.approx(direct)
    assert frame["map@all"].nunique() > 1  # 8 codes for 150 photos: the tie rule moves the number


# ------------------------------------------------------------------------------------------------------ errors
def test_clear_errors():
    q, g, ql, gl = clustered()
    with pytest.raises(ValueError, match="exceeds the feature width 8"):
        fit_itq(q, 9)
    with pytest.raises(ValueError, match="needs at least 6 fitting samples, got 5"):
        fit_itq(q[:5], 6)
    for bad in (0, -2, 2.5):
        with pytest.raises(ValueError, match="positive integer"):
            fit_itq(q, bad)
    nan = q.copy()
    nan[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_itq(nan, 4)
    with pytest.raises(ValueError, match="NaN"):
        fit_itq(q, 4).encode(nan)
    with pytest.raises(ValueError, match="NaN"):
        evaluate_itq(q, nan, ql, gl, bits=4)
    with pytest.raises(ValueError, match="7 dimensions but ITQ was fitted on 8"):
        fit_itq(q, 4).encode(q[:, :7])
    with pytest.raises(ValueError, match="unknown fit_on"):
        itq_codes(q, g, bits=4, fit_on="photos")
    with pytest.raises(ValueError, match="unknown center"):
        itq_codes(q, g, bits=4, center="none")
    with pytest.raises(ValueError, match="unknown update"):
        fit_itq(q, 4, update="svd")
    with pytest.raises(ValueError, match="only -1 and \\+1"):
        hamming_distances(np.array([[0, 1]]), np.array([[1, 1]]))
    with pytest.raises(ValueError, match="3 bits but gallery codes have 2"):
        hamming_distances(np.ones((1, 3)), np.ones((1, 2)))
    codes = np.ones((2, 4), np.int8)
    with pytest.raises(ValueError, match="needs features="):
        evaluate_hamming(codes, codes, [0, 1], [0, 1], ties="secondary")
    with pytest.raises(ValueError, match="unknown ties"):
        evaluate_itq(q, g, ql, gl, bits=4, ties="first")
