"""The generic transductive re-ranker (gallery augmentation + alpha query expansion) against a naive loop."""
import numpy as np
import pytest

from zssbir.eval import transductive
from zssbir.eval.exact_search import evaluate_features


def _naive(query, gallery, k, alpha):
    unit = lambda x: x / np.linalg.norm(x)  # noqa: E731
    g = np.array([unit(x) for x in gallery], float)
    q = np.array([unit(x) for x in query], float)
    g_aug = []
    for gi in g:
        sims = g @ gi
        top = sorted(range(len(g)), key=lambda j: (-sims[j], j))[:k]
        g_aug.append(unit(sum(max(sims[j], 0) ** alpha * g[j] for j in top)))
    g_aug = np.array(g_aug)
    q_new = []
    for qi in q:
        sims = g_aug @ qi
        top = sorted(range(len(g)), key=lambda j: (-sims[j], j))[:k]
        q_new.append(unit(qi + sum(max(sims[j], 0) ** alpha * g_aug[j] for j in top)))
    return np.array(q_new), g_aug


@pytest.mark.parametrize("k, alpha", [(3, 3.0), (5, 0.0), (1, 1.0)])
def test_expanded_features_equal_a_naive_loop(k, alpha):
    rng = np.random.default_rng(0)
    query, gallery = rng.normal(size=(7, 4)), rng.normal(size=(12, 4))
    q, g = transductive.expand(query, gallery, k=k, alpha=alpha)
    q_ref, g_ref = _naive(query, gallery, k, alpha)
    assert g == pytest.approx(g_ref, abs=1e-5) and q == pytest.approx(q_ref, abs=1e-5)


def test_one_neighbour_without_query_expansion_is_exact_retrieval():
    rng = np.random.default_rng(1)
    query, gallery = rng.normal(size=(6, 5)), rng.normal(size=(9, 5))
    q, g = transductive.expand(query, gallery, k=1, query_expansion=False)
    assert g == pytest.approx(gallery / np.linalg.norm(gallery, axis=1, keepdims=True), abs=1e-6)
    assert q == pytest.approx(query / np.linalg.norm(query, axis=1, keepdims=True), abs=1e-6)


def test_the_gallery_structure_lifts_noisy_queries():
    # photos of a class sit tightly around their class centre, sketches far from it: using the gallery's own
    # neighbourhoods pulls each sketch toward its class
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(4, 16))
    gl, ql = np.repeat(np.arange(4), 20), np.repeat(np.arange(4), 10)
    gallery = centres[gl] + 0.3 * rng.normal(size=(80, 16))
    query = centres[ql] + 2.5 * rng.normal(size=(40, 16))
    exact = evaluate_features(query, gallery, ql, gl, preset="clusterretri")["map@all"].value
    reranked = transductive.evaluate_transductive(query, gallery, ql, gl, k=10, preset="clusterretri")["map@all"].value
    assert reranked > exact + 0.02


def test_bad_settings_are_refused_in_one_line():
    with pytest.raises(ValueError, match="k \\(neighbours\\) must be at least 1"):
        transductive.expand(np.ones((2, 3)), np.ones((3, 3)), k=0)
    with pytest.raises(ValueError, match="differ in width"):
        transductive.expand(np.ones((2, 3)), np.ones((3, 4)))
