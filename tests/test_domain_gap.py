import numpy as np
import pytest

from zssbir.eval.domain_gap import channel_softmax, frechet_distance, gap_table, mmd_rbf


def test_mmd_separates_distributions_and_is_near_zero_for_the_same_one():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 8)), rng.normal(size=(200, 8))
    shifted = rng.normal(size=(200, 8)) + np.r_[3.0, np.zeros(7)]
    assert abs(mmd_rbf(a, b)) < 0.02 < mmd_rbf(a, shifted)
    with pytest.raises(ValueError, match="two samples"):
        mmd_rbf(a[:1], b)


def test_frechet_matches_the_closed_form_for_gaussians():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20000, 2))
    y = rng.normal(size=(20000, 2)) * 2.0 + 1.0
    # mu diff 2 (1 per dim), covs I and 4I: 2 + (2 + 8 - 2 * 2 * 2) = 4
    assert frechet_distance(x, y, normalize=False) == pytest.approx(4.0, abs=0.1)
    assert frechet_distance(x, x, normalize=False) == pytest.approx(0.0, abs=1e-3)


def test_gap_table_and_channel_softmax():
    rng = np.random.default_rng(2)
    s, p = rng.normal(size=(30, 4)), rng.normal(size=(30, 4))
    table = gap_table(s, [0, 1, 2] * 10, p, [0, 1, 2] * 10, class_names=["a", "b", "c"])
    assert list(table.index) == ["a", "b", "c", "(all)"] and np.isfinite(table.values).all()
    soft = channel_softmax(rng.normal(size=(3, 5)))
    assert np.allclose(soft.sum(1), 1.0) and (soft > 0).all()
