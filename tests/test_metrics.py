"""zssbir.eval.metrics / zssbir.eval.relevant_ranks against hand-computed rankings, a naive loop and sklearn."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from zssbir.eval.metrics import PRESETS, evaluate, parse_metric, query_values
from zssbir.eval.relevant_ranks import rank_positions

ALL = ("map@all", "map@1", "map@2", "map@3", "map@4", "map@10", "prec@1", "prec@3", "prec@5", "prec@10")


def _eval(scores, ql, gl, **kw):
    return {k: v.value for k, v in evaluate(scores, ql, gl, metrics=ALL, **kw).items()}


# ------------------------------------------------------------------------------ hand-computed
# Query A, 6-item gallery scored 0.9 > 0.8 > ... > 0.4; relevance in ranked order [1,0,1,0,0,1]:
#   relevant ranks 1, 3, 6 (n = 3); precision at the hits 1/1, 2/3, 3/6.
#   exact AP = (1 + 2/3 + 1/2) / 3 = 13/18; VOC: the precision is already non-increasing -> 13/18.
#   AP@2: hit at rank 1 only, sum 1 -> min_k_relevant 1/min(2,3) = 1/2; relevant_in_topk 1/1 = 1.
#   AP@3: hits at 1, 3, sum 5/3 -> min_k_relevant 5/9; relevant_in_topk 5/6.
#   P@3 = 2/3 both ways; P@5: 2/5 (min_k_gallery), 2/min(5,3) over the top 3 -> 2/3 (min_k_relevant);
#   P@10: K clipped to 6 -> 3/6; min_k_relevant: top min(10,3) = 3 -> 2/3.
# Query B, same scores, relevance [0,1,0,1,1,0]: ranks 2, 4, 5; precision 1/2, 2/4, 3/5.
#   exact AP = (1/2 + 1/2 + 3/5) / 3 = 8/15; VOC envelope (3/5, 3/5, 3/5) -> 3/5.
#   AP@4: hits at 2, 4; the envelope over the TRUNCATED ranking is (1/2, 1/2) (the 3/5 at rank 5 is
#   cut off), so VOC = exact: sum 1 -> min_k_relevant 1/3, relevant_in_topk 1/2.
#   AP@1: no hit -> 0 both ways. P@1 = 0; P@3 = 1/3; P@5: 3/5 and, top min(5,3)=3, 1/3.
SCORES = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]] * 2, dtype=np.float32)
GALLERY = np.array(["a", "b", "a", "b", "b", "a"])  # query A ("a") pattern [1,0,1,0,0,1]
QUERIES = np.array(["a", "b"])  # query B ("b") pattern [0,1,0,1,1,0]


@pytest.mark.parametrize("ap, expected", [("exact", [13 / 18, 8 / 15]), ("voc", [13 / 18, 3 / 5])])
def test_hand_ap_all(ap, expected):
    r = evaluate(SCORES, QUERIES, GALLERY, metrics=["map@all"], ap=ap)["map@all"]
    np.testing.assert_allclose(r.per_query, expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("ap", ["exact", "voc"])  # the truncated envelopes equal the precisions here
@pytest.mark.parametrize("den, expected", [
    # A: hits (rank, precision) (1, 1), (3, 2/3); B: (2, 1/2), (4, 1/2); n = 3 for both.
    ("min_k_relevant", {"map@1": [1, 0], "map@2": [1 / 2, (1 / 2) / 2], "map@3": [(5 / 3) / 3, (1 / 2) / 3],
                        "map@4": [(5 / 3) / 3, 1 / 3]}),
    ("relevant_in_topk", {"map@1": [1, 0], "map@2": [1, 1 / 2], "map@3": [5 / 6, 1 / 2], "map@4": [5 / 6, 1 / 2]}),
])
def test_hand_ap_at_k(ap, den, expected):
    res = evaluate(SCORES, QUERIES, GALLERY, metrics=list(expected), ap=ap, map_k_denominator=den)
    for name, values in expected.items():
        np.testing.assert_allclose(res[name].per_query, values, rtol=0, atol=1e-15, err_msg=name)


@pytest.mark.parametrize("den, expected", [
    ("min_k_gallery", {"prec@1": [1, 0], "prec@3": [2 / 3, 1 / 3], "prec@5": [2 / 5, 3 / 5], "prec@10": [1 / 2, 1 / 2]}),
    ("min_k_relevant", {"prec@1": [1, 0], "prec@3": [2 / 3, 1 / 3], "prec@5": [2 / 3, 1 / 3], "prec@10": [2 / 3, 1 / 3]}),
])
def test_hand_precision(den, expected):
    res = evaluate(SCORES, QUERIES, GALLERY, metrics=list(expected), prec_k_denominator=den)
    for name, values in expected.items():
        np.testing.assert_allclose(res[name].per_query, values, rtol=0, atol=1e-15, err_msg=name)


def test_voc_envelope_is_over_truncated_ranking():
    # Query B: the full-ranking envelope would give AP@4 = (3/5 + 3/5) / 3 = 0.4; truncated gives 1/3.
    v = query_values(np.array([[2, 4, 5]]), 6, "map@4", ap="voc")
    assert v[0] == pytest.approx(1 / 3, abs=1e-15)


def test_class_versus_query_averaging():
    # class 0 has queries with AP 1 and 1/2, class 1 one query with AP 1/2:
    # query mean (1 + 1/2 + 1/2)/3 = 2/3, class mean (3/4 + 1/2)/2 = 5/8
    scores = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    ql, gl = np.array([0, 0, 1]), np.array([0, 1])
    # query 0: relevant item 0 at rank 1 -> 1; query 1: item 0 at rank 2 -> 1/2; query 2: item 1 at rank 2 -> 1/2
    r = evaluate(scores, ql, gl, metrics=["map@all"], ap="exact")["map@all"]
    np.testing.assert_allclose(r.per_query, [1, 0.5, 0.5])
    assert r.value == pytest.approx(2 / 3)
    assert r.with_average("class").value == pytest.approx(((1 + 0.5) / 2 + 0.5) / 2)
    assert evaluate(scores, ql, gl, metrics=["map@all"], ap="exact", average="class")["map@all"].value == \
        pytest.approx(0.625)
    assert r.per_class() == {0: 0.75, 1: 0.5}


# ------------------------------------------------------------------------------------- ties
# Gallery scores [0.9, 0.5, 0.5, 0.5]; only item 3 is relevant; items 1, 2, 3 tie.
#   stable: order 0,1,2,3 -> rank 4 -> AP 1/4.
#   secondary [0, 0.3, 0.1, 0.2] (higher first): ties ordered 1, 3, 2 -> rank 3 -> AP 1/3.
#   random: ties ordered by tb = default_rng(seed).permutation(4); rank = 2 + #{j in {1,2}: tb[j] < tb[3]}.
#     (numpy 2.x: seed 3 gives tb [3,2,1,0] -> rank 2 -> 1/2; seed 2 gives [3,2,0,1] -> rank 3 -> 1/3.)
TIE_SCORES = np.array([[0.9, 0.5, 0.5, 0.5]], dtype=np.float32)
TIE_SECONDARY = np.array([[0.0, 0.3, 0.1, 0.2]], dtype=np.float32)


def _tie_ap(**kw):
    return evaluate(TIE_SCORES, [1], [0, 0, 0, 1], metrics=["map@all"], **kw)["map@all"].value


def test_tie_policies_hand_known():
    assert _tie_ap(ties="stable") == pytest.approx(1 / 4)
    assert _tie_ap(ties="secondary", secondary=TIE_SECONDARY) == pytest.approx(1 / 3)
    for seed in (2, 3, 11):
        tb = np.random.default_rng(seed).permutation(4)
        assert _tie_ap(ties="random", seed=seed) == pytest.approx(1 / (2 + int((tb[[1, 2]] < tb[3]).sum())))
    values = {seed: _tie_ap(ties="random", seed=seed) for seed in range(8)}
    assert len(set(values.values())) > 1  # the seed matters
    assert all(_tie_ap(ties="random", seed=s) == v for s, v in values.items())  # and reproduces
    # direction of the secondary: [0, 0.3, 0.2, 0.1] higher-first orders the ties 1, 2, 3 -> rank 4;
    # lower-first orders them 3, 2, 1 -> rank 2
    sec = np.array([[0.0, 0.3, 0.2, 0.1]], dtype=np.float32)
    assert _tie_ap(ties="secondary", secondary=sec) == pytest.approx(1 / 4)  # 1, 2, 3
    assert _tie_ap(ties="secondary", secondary=sec, secondary_higher_is_better=False) == pytest.approx(1 / 2)


def test_negative_zero_ties_with_zero():
    s = np.array([[0.0, -0.0, 0.0]], dtype=np.float32)
    assert rank_positions(s, [1], [0, 1, 0])[0].tolist() == [2]
    assert rank_positions(s, [1], [0, 1, 0], higher_is_better=False)[0].tolist() == [2]
    assert rank_positions(np.array([[1e-300, -0.0, 0.0]]), [1], [0, 1, 0])[0].tolist() == [2]  # float64 path


# ------------------------------------------------------------------------------- naive loop
def _naive_order(s, ties, seed, sec, hib, sec_hib):
    n = len(s)
    tb = np.random.default_rng(seed).permutation(n) if ties == "random" else np.arange(n)
    sign, ssign = (-1 if hib else 1), (-1 if sec_hib else 1)
    if ties == "secondary":
        return sorted(range(n), key=lambda j: (sign * float(s[j]), ssign * float(sec[j]), j))
    return sorted(range(n), key=lambda j: (sign * float(s[j]), tb[j]))


def _naive_values(rel, metric, ap, map_den, prec_den):
    """Textbook definitions on one 0/1 relevance vector in ranked order."""
    kind, k = parse_metric(metric)
    n_gal, n_rel = len(rel), int(sum(rel))
    k = n_gal if k is None else min(k, n_gal)
    if kind == "prec":
        top = k if prec_den == "min_k_gallery" else min(k, n_rel)
        return sum(rel[:top]) / top
    cut = rel[:k]
    tp = np.cumsum(cut)
    prec = tp / np.arange(1, k + 1)
    if ap == "voc":  # SAKE-style envelope from the right over the truncated list
        env = prec.copy()
        for i in range(k - 2, -1, -1):
            env[i] = max(env[i], env[i + 1])
        prec = env
    total = sum(prec[i] for i in range(k) if cut[i])
    if map_den == "min_k_relevant":
        return total / min(k, n_rel)
    return total / tp[-1] if tp[-1] else 0.0


def _naive_average(values, labels, average):
    if average == "query":
        return float(np.mean(values))
    return float(np.mean([np.mean([v for v, l in zip(values, labels) if l == c]) for c in sorted(set(labels))]))


@pytest.fixture(scope="module")
def tied_problem():
    rng = np.random.default_rng(7)
    q, n = 23, 41
    ql = rng.integers(0, 4, q)
    gl = np.concatenate([np.arange(4), rng.integers(0, 4, n - 4)])
    scores = np.round(rng.uniform(-1, 1, (q, n)), 1).astype(np.float32)  # many ties
    secondary = np.round(rng.uniform(-1, 1, (q, n)), 1).astype(np.float32)  # ties remain after it too
    return scores, secondary, ql, gl


@pytest.mark.parametrize("ties, hib", [("stable", True), ("random", True), ("secondary", True),
                                        ("stable", False), ("random", False), ("secondary", False)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_naive_loop_all_conventions(tied_problem, ties, hib, dtype):
    scores, secondary, ql, gl = tied_problem
    scores = scores.astype(dtype) + (np.float64(1e-12) if dtype == np.float64 else 0)  # not float32-exact
    seed = 5 if ties == "random" else None
    sec = secondary if ties == "secondary" else None
    rels = [[int(gl[j] == ql[i]) for j in _naive_order(scores[i], ties, seed, None if sec is None else sec[i],
                                                         hib, hib)] for i in range(len(ql))]
    for ap, map_den, prec_den, average in itertools.product(("voc", "exact"), ("min_k_relevant", "relevant_in_topk"),
                                                            ("min_k_gallery", "min_k_relevant"), ("query", "class")):
        res = evaluate(scores, ql, gl, metrics=ALL, ap=ap, map_k_denominator=map_den, prec_k_denominator=prec_den,
                       average=average, ties=ties, seed=seed, secondary=sec, higher_is_better=hib, block_size=5)
        for name in ALL:
            naive = [_naive_values(r, name, ap, map_den, prec_den) for r in rels]
            np.testing.assert_allclose(res[name].per_query, naive, rtol=0, atol=1e-12, err_msg=name)
            assert res[name].value == pytest.approx(_naive_average(naive, ql, average), abs=1e-12)


def test_block_inputs_agree(tied_problem):
    scores, _, ql, gl = tied_problem
    full = _eval(scores, ql, gl, ties="random", seed=1, block_size=1000)
    assert _eval(torch.from_numpy(scores), ql, gl, ties="random", seed=1, block_size=3) == full
    assert _eval(lambda a, b: scores[a:b], ql, gl, ties="random", seed=1, block_size=4) == full
    blocks = [(0, 10, scores[:10]), (10, 11, torch.from_numpy(scores[10:11])), (11, 23, scores[11:])]
    assert _eval(iter(blocks), ql, gl, ties="random", seed=1) == full
    assert _eval(scores, ql, gl, ties="random", seed=1, num_threads=1, block_size=7) == full


def test_secondary_in_blocks(tied_problem):
    scores, secondary, ql, gl = tied_problem
    full = _eval(scores, ql, gl, ties="secondary", secondary=secondary)
    blocks = [(a, min(a + 6, 23), scores[a:a + 6], secondary[a:a + 6]) for a in range(0, 23, 6)]
    assert _eval(iter(blocks), ql, gl, ties="secondary") == full
    assert _eval(lambda a, b: (scores[a:b], secondary[a:b]), ql, gl, ties="secondary", block_size=4) == full
    assert _eval(iter(blocks[:1]), ql[:6], gl, ties="secondary") == \
        _eval(scores[:6], ql[:6], gl, ties="secondary", secondary=secondary[:6])


def test_rank_positions_and_one_thread_many_blocks(tied_problem):
    scores, _, ql, gl = tied_problem
    ranks = rank_positions(scores, ql, gl, block_size=2, num_threads=3)
    for i, r in enumerate(ranks):
        order = _naive_order(scores[i], "stable", None, None, True, True)
        assert r.tolist() == [p + 1 for p, j in enumerate(order) if gl[j] == ql[i]]


def test_exact_equals_sklearn_without_ties():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((30, 200))  # float64, no ties
    ql, gl = rng.integers(0, 5, 30), rng.integers(0, 5, 200)
    r = evaluate(scores, ql, gl, metrics=["map@all"], ap="exact")["map@all"]
    sk = [average_precision_score(gl == ql[i], scores[i]) for i in range(30)]
    np.testing.assert_allclose(r.per_query, sk, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------- presets, records
def test_presets_and_convention_record():
    res = evaluate(SCORES, QUERIES, GALLERY, preset="sem_pcyc", metrics=["map@3", "prec@5"])
    assert res["map@3"].convention["ap"] == "tie_merged"  # sklearn's AP, as Sem-PCYC computes it
    assert res["map@3"].convention["map_k_denominator"] == "relevant_in_topk"
    assert res["prec@5"].convention["prec_k_denominator"] == "min_k_gallery"
    assert res["map@3"].convention["preset"] == "sem_pcyc" and res["map@3"].convention["ties"] == "stable"
    over = evaluate(SCORES, QUERIES, GALLERY, preset="sake", average="query", metrics=["prec@5"])["prec@5"]
    assert over.convention["average"] == "query"  # explicit argument beats the preset
    assert set(PRESETS) == {"sake", "zse_sbir", "sem_pcyc", "clusterretri"}
    zse = evaluate(SCORES, QUERIES, GALLERY, preset="zse_sbir", metrics=["prec@5"])["prec@5"]
    np.testing.assert_allclose(zse.per_query, [2 / 3, 1 / 3])
    d = zse.to_dict(per_query=True)
    assert d["name"] == "prec@5" and d["per_query"] == pytest.approx([2 / 3, 1 / 3])


# ----------------------------------------------------------------------------------- errors
def test_nan_and_inf_scores_raise():
    for bad in (np.nan, np.inf, -np.inf):
        s = SCORES.copy()
        s[1, 2] = bad
        with pytest.raises(ValueError, match="NaN or inf.*query 1, gallery item 2"):
            evaluate(s, QUERIES, GALLERY)
        with pytest.raises(ValueError, match="NaN or inf"):
            evaluate(s.astype(np.float64) + 1e-12, QUERIES, GALLERY)
    with pytest.raises(ValueError, match="secondary scores contain NaN"):
        evaluate(TIE_SCORES, [1], [0, 0, 0, 1], ties="secondary", secondary=np.full((1, 4), np.nan, np.float32))


def test_queries_without_relevant_items():
    s = np.ones((3, 6), dtype=np.float32)
    with pytest.raises(ValueError, match="'z'.*missing from the gallery.*skip_missing=True"):
        evaluate(s, ["a", "z", "b"], GALLERY)
    r = evaluate(SCORES[[0, 0, 1]], ["a", "z", "b"], GALLERY, metrics=["map@all"], ap="exact",
                 skip_missing=True)["map@all"]
    assert np.isnan(r.per_query[1]) and r.value == pytest.approx((13 / 18 + 8 / 15) / 2)
    assert r.convention["n_evaluated"] == 2 and r.with_average("class").value == pytest.approx(r.value)


@pytest.mark.parametrize("kwargs, match", [
    ({"scores": np.ones((2, 5), np.float32)}, r"shape \(2, 6\)"),
    ({"query_labels": ["a"]}, r"shape \(1, 6\)"),
    ({"gallery_labels": GALLERY[:5]}, r"shape \(2, 5\)"),
    ({"query_labels": [[0], [1]]}, "must be 1-D"),
    ({"query_labels": [0.0, 1.0]}, "floats"),
    ({"query_labels": [0, 1]}, "both numbers or both strings"),
    ({"metrics": ["map@0"]}, "unknown metric"),
    ({"metrics": ["prec@all"]}, "unknown metric"),
    ({"ap": "11point"}, "unknown ap"),
    ({"average": "micro"}, "unknown average"),
    ({"ties": "random"}, "explicit integer seed"),
    ({"ties": "secondary"}, "needs secondary"),
    ({"ties": "bogus"}, "unknown ties"),
    ({"secondary": SCORES}, "only used with ties='secondary'"),
    ({"preset": "nope"}, "unknown preset"),
    ({"scores": iter([(0, 1, SCORES[:1])])}, "covered 1 queries"),
    ({"scores": iter([(1, 2, SCORES[1:])])}, "expected a block starting at 0"),
    ({"scores": np.ones((2, 6), dtype=complex)}, "real numbers"),
])
def test_input_errors(kwargs, match):
    args = {"scores": SCORES, "query_labels": QUERIES, "gallery_labels": GALLERY}
    args.update({k: kwargs.pop(k) for k in list(kwargs) if k in args})
    with pytest.raises(ValueError, match=match):
        evaluate(args["scores"], args["query_labels"], args["gallery_labels"], **kwargs)
