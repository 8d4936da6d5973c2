"""zssbir.eval.exact_search: faiss and torch agree, cosine and Euclidean rank alike, inputs are validated."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zssbir.eval.metrics import evaluate
from zssbir.eval.exact_search import evaluate_features, score_blocks, search

faiss = pytest.importorskip("faiss")


@pytest.fixture(scope="module")
def feats():
    g = torch.Generator().manual_seed(0)
    return torch.randn(57, 32, generator=g), torch.randn(300, 32, generator=g)


def _exact_scores(q, g, metric):
    q = torch.nn.functional.normalize(q.double(), dim=1)
    g = torch.nn.functional.normalize(g.double(), dim=1)
    return (q @ g.T).numpy() if metric == "cosine" else torch.cdist(q, g).numpy()


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("k", [1, 10, None])
def test_faiss_and_torch_agree(feats, metric, k):
    q, g = feats
    sf, i_f = search(q, g, k, metric=metric, backend="faiss")
    st, i_t = search(q, g, k, metric=metric, backend="torch", block_size=16)
    assert sf.shape == st.shape == i_f.shape == (57, k or 300)
    np.testing.assert_allclose(sf, st, rtol=0, atol=2e-6)
    exact = _exact_scores(q, g, metric)
    # where the two index lists differ, the items must be float32 near-ties of each other
    rows, cols = np.nonzero(i_f != i_t)
    np.testing.assert_allclose(exact[rows, i_f[rows, cols]], exact[rows, i_t[rows, cols]], rtol=0, atol=2e-6)
    assert (i_f == i_t).mean() > 0.99
    # and both are the true top-k of the exact float64 scores
    order = np.argsort(-exact if metric == "cosine" else exact, axis=1, kind="stable")[:, :k or 300]
    np.testing.assert_allclose(np.take_along_axis(exact, i_t, 1), np.take_along_axis(exact, order, 1), atol=2e-6)


def test_tied_scores_same_sets(feats):
    q, g = feats
    g = torch.cat([g[:5], g[:5], g[:5]])  # every gallery vector three times: exact ties
    sf, i_f = search(q, g, None, backend="faiss")
    st, i_t = search(q, g, None, backend="torch")
    np.testing.assert_allclose(sf, st, atol=2e-6)
    for a, b in zip(i_f, i_t):  # positions 3j..3j+2 hold the three copies of one vector
        assert [sorted(x % 5 for x in a[j:j + 3]) for j in range(0, 15, 3)] == \
               [sorted(x % 5 for x in b[j:j + 3]) for j in range(0, 15, 3)]
        assert all(len({x % 5 for x in b[j:j + 3]}) == 1 for j in range(0, 15, 3))
        assert all(list(b[j:j + 3]) == sorted(b[j:j + 3]) for j in range(0, 15, 3))  # torch: stable by index


def test_cosine_and_euclidean_rank_alike(feats):
    q, g = (x.double() for x in feats)  # float64: no rounding near-ties
    sc, ic = search(q, g, None, metric="cosine", backend="torch")
    se, ie = search(q, g, None, metric="euclidean", backend="torch")
    np.testing.assert_array_equal(ic, ie)
    np.testing.assert_allclose(se ** 2, 2 - 2 * sc, atol=1e-12)  # d^2 = 2 - 2 cos on unit vectors
    rc = evaluate_features(q, g, np.arange(57) % 4, np.arange(300) % 4, metric="cosine")
    re = evaluate_features(q, g, np.arange(57) % 4, np.arange(300) % 4, metric="euclidean")
    assert {k: v.value for k, v in rc.items()} == {k: v.value for k, v in re.items()}


def test_score_blocks_cover_and_match(feats):
    q, g = feats
    full = torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(g, dim=1).T
    for reuse in (False, True):
        seen = []
        for start, end, s in score_blocks(q, g, block_size=10, reuse_buffer=reuse):
            assert s.shape == (end - start, 300) and s.dtype == torch.float32
            np.testing.assert_allclose(s.numpy(), full[start:end].numpy(), atol=1e-6)
            seen.append((start, end))
        assert seen[0][0] == 0 and seen[-1][1] == 57 and all(a[1] == b[0] for a, b in zip(seen, seen[1:]))
    d = torch.cat([s.clone() for _, _, s in score_blocks(q, g, metric="euclidean", block_size=20)])
    np.testing.assert_allclose(d.numpy(), _exact_scores(q, g, "euclidean"), atol=1e-5)


def test_evaluate_features_equals_full_matrix(feats):
    q, g = feats
    ql, gl = np.arange(57) % 3, np.arange(300) % 3
    full = torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(g, dim=1).T
    a = evaluate_features(q, g, ql, gl, block_size=8, preset="sake")
    b = evaluate(full, ql, gl, preset="sake")
    for name in a:
        np.testing.assert_allclose(a[name].per_query, b[name].per_query, atol=1e-12)
    with pytest.raises(ValueError, match="follows from metric"):
        evaluate_features(q, g, ql, gl, higher_is_better=False)


@pytest.mark.parametrize("query, gallery, kwargs, match", [
    (np.ones((3, 4)), np.ones((5, 6)), {}, "4 dimensions but gallery features have 6"),
    (np.ones(4), np.ones((5, 4)), {}, "must be 2-D"),
    (np.array([[1.0, np.nan]]), np.ones((5, 2)), {}, "NaN or inf.*row 0"),
    (np.ones((2, 2)), np.array([[1.0, 1.0], [0.0, 0.0]]), {}, "zero-norm rows.*row 1"),
    (np.ones((2, 2)) * 3, np.ones((5, 2)), {"normalize": False}, "unit-norm query"),
    (np.ones((2, 2)), np.ones((5, 2)), {"metric": "manhattan"}, "unknown metric"),
    (np.ones((2, 2)), np.ones((5, 2)), {"backend": "annoy"}, "unknown backend"),
    (np.ones((2, 2)), np.ones((5, 2)), {"k": 6}, "k must be between 1"),
])
def test_input_validation(query, gallery, kwargs, match):
    with pytest.raises(ValueError, match=match):
        search(query, gallery, **kwargs)


def test_euclidean_without_normalisation(feats):
    q, g = feats
    s, i = search(q, g, 5, metric="euclidean", normalize=False, backend="torch")
    d = torch.cdist(q.double(), g.double()).numpy()
    np.testing.assert_allclose(s, np.sort(d, axis=1)[:, :5], atol=1e-4)
    sf, _ = search(q, g, 5, metric="euclidean", normalize=False, backend="faiss")
    np.testing.assert_allclose(s, sf, atol=1e-4)
