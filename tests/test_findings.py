"""Claims as paired comparisons over seeds: the statistics against scipy and by hand, rows matched correctly."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from zssbir.study import findings


def test_paired_statistics_match_scipy_and_a_hand_computed_interval():
    a = pd.Series([0.50, 0.55, 0.60, 0.58], index=[0, 1, 2, 3])
    b = pd.Series([0.40, 0.50, 0.45, 0.52, 0.99], index=[0, 1, 2, 3, 4])  # seed 4 has no partner: left out
    r = findings.paired(a, b)
    d = np.array([0.10, 0.05, 0.15, 0.06])
    half = stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2
    assert r["seeds"] == [0, 1, 2, 3] and r["n"] == 4
    assert r["difference"] == pytest.approx(d.mean()) and r["mean_without"] == pytest.approx(0.4675)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half))
    assert r["p_value"] == pytest.approx(stats.ttest_rel(a.loc[:3], b.loc[:3]).pvalue)
    assert findings.verdict(r) == "supported on this benchmark"
    assert findings.verdict(findings.paired(b.loc[:3], a)) == "contradicted on this benchmark"
    assert findings.verdict(findings.paired(pd.Series([1.0, 0.0]), pd.Series([0.0, 1.0]))).startswith("not resolved")
    assert findings.verdict(findings.paired(a.loc[:0], b)) == "too few paired seeds to tell"


def _rows(method, lda, retrieval, label, values):
    return [{"dataset": "d", "metric": "map@all", "method": method, "lambda_da": lda, "retrieval": retrieval,
             "label": label, "seed": s, "value": v} for s, v in enumerate(values)]


def test_claim_table_pairs_the_right_rows_and_says_it_in_one_sentence():
    frame = pd.DataFrame(
        _rows("clusterretri", 0.0, "exact", None, [0.30, 0.32, 0.31])
        + _rows("clusterretri", 0.1, "exact", None, [0.20, 0.25, 0.21])
        + _rows("clusterretri", 0.1, "cluster", None, [0.26, 0.27, 0.30])
        + _rows("dmwa", 0.0, "exact", "DMWA (weighting both, quadruplet), exact", [0.5, 0.6, 0.55])
        + _rows("dmwa", 0.0, "cluster", "DMWA (weighting both, quadruplet), cluster M=2", [0.9, 0.9, 0.9])
        + _rows("dmwa", 0.0, "exact", "DMWA (weighting none, quadruplet), exact", [0.5, 0.5, 0.5])
        + _rows("chance", None, "random", "chance (random ranking)", [0.1, 0.1, 0.1]))
    table = findings.claim_table(frame, "d").set_index("claim")
    assert list(table.index) == ["L_DA improves retrieval", "cluster-then-retrieve improves on exact retrieval",
                                 "the weight list improves alignment"]  # no triplet rows: that claim is left out
    assert table.at["L_DA improves retrieval", "difference"] == pytest.approx(-0.09)
    assert table.at["L_DA improves retrieval", "verdict"] == "contradicted on this benchmark"
    assert table.at["cluster-then-retrieve improves on exact retrieval", "mean_with"] == pytest.approx(0.83 / 3)
    assert table.at["the weight list improves alignment", "mean_with"] == pytest.approx(0.55)  # exact rows only
    sentences = findings.sentences(table.reset_index())
    assert len(sentences) == 3
    assert sentences[0].startswith('ClusterRetri, "L_DA improves retrieval": map@all 0.220 with L_DA against 0.310 '
                                   "without (baseline) over 3 paired seeds, a difference of -0.090")
    assert sentences[0].endswith("contradicted on this benchmark.")


def test_components_are_compared_from_the_pretrained_start_and_the_start_against_scratch():
    def rows(start, method, lda, label, values):
        return [dict(r, start=start) for r in _rows(method, lda, "exact", label, values)]

    both = "DMWA (weighting both, quadruplet), exact"
    frame = pd.DataFrame(
        rows("pretrained", "clusterretri", 0.0, None, [0.40, 0.42, 0.41]) + rows("pretrained", "clusterretri", 0.1,
                                                                                None, [0.45, 0.46, 0.44])
        + rows("scratch", "clusterretri", 0.0, None, [0.20, 0.25, 0.21]) + rows("scratch", "clusterretri", 0.1,
                                                                               None, [0.10, 0.12, 0.11])
        + rows("pretrained", "dmwa", 0.0, both, [0.5, 0.6, 0.55]) + rows("scratch", "dmwa", 0.0, both, [0.1, 0.2, 0.1])
        + rows("pretrained", "dmwa", 0.0, "DMWA (weighting none, quadruplet), exact", [0.5, 0.5, 0.5]))
    table = findings.claim_table(frame, "d").set_index("claim")
    # L_DA from the pretrained start only: +0.04, not the scratch runs' -0.11
    assert table.at["L_DA improves retrieval", "difference"] == pytest.approx(0.04)
    assert table.at["the weight list improves alignment", "mean_with"] == pytest.approx(0.55)
    assert table.at["a pretrained start improves on scratch (baseline)", "difference"] == pytest.approx(0.19)
    assert table.at["a pretrained start improves on scratch (L_DA)", "mean_without"] == pytest.approx(0.11)
    assert table.at["a pretrained start improves on scratch", "difference"] == pytest.approx(0.4167, abs=1e-4)
    assert (table["paper"] == "DMWA").sum() == 2 and table.loc["a pretrained start improves on scratch", "paper"] == \
        "DMWA"
