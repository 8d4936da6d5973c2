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
    assert "contradicted on this benchmark; the interval supports a loss of at least" in sentences[0]
    assert "Holm-corrected p = " in sentences[0] and "over 3 claims" in sentences[0]


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
    assert table.at["a pretrained start with distillation improves on scratch (baseline)", "difference"] == \
        pytest.approx(0.19)
    assert table.at["a pretrained start with distillation improves on scratch (L_DA)", "mean_without"] == \
        pytest.approx(0.11)
    assert table.at["a pretrained start improves on scratch (DMWA)", "difference"] == pytest.approx(0.4167, abs=1e-4)
    assert (table["paper"] == "DMWA").sum() == 1 and (table["paper"] == "starting point").sum() == 3


def _claim_frame(with_values, without_values, start=0):
    return pd.DataFrame(_rows("clusterretri", 0.1, "exact", None, with_values)
                        + _rows("clusterretri", 0.0, "exact", None, without_values)).assign(
        seed=lambda f: f["seed"] + start)


L_DA = (findings.CLAIMS[0],)


def test_holm_correction_matches_the_step_down_rule_by_hand():
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan])
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04 -> running maximum 0.02, 0.03, 0.06, 0.06
    assert findings.holm(p)[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert np.isnan(findings.holm(p)[4])


def test_a_claim_significant_alone_is_not_supported_after_holm():
    r = {"n": 5, "ci_low": 0.001, "ci_high": 0.06, "p_value": 0.035}
    assert findings.verdict(r) == findings.SUPPORTED  # uncorrected: the interval is above 0
    assert findings.verdict({**r, "p_holm": 0.035 * 7}) == findings.UNRESOLVED
    assert findings.verdict({**r, "ci_low": -0.06, "ci_high": -0.001, "p_holm": 0.01}) == findings.CONTRADICTED


def test_minimum_detectable_effect_has_the_stated_power():
    from scipy import stats

    sd, n, alpha = 0.02, 5, 0.05 / 7
    mde = findings.minimum_detectable_effect(sd, n, alpha)
    crit = stats.t.ppf(1 - alpha / 2, n - 1)
    nc = mde / sd * np.sqrt(n)
    power = stats.nct.sf(crit, n - 1, nc) + stats.nct.cdf(-crit, n - 1, nc)
    assert power == pytest.approx(0.8, abs=1e-3)
    assert findings.minimum_detectable_effect(sd, 10, alpha) < mde  # more seeds detect smaller effects
    assert np.isnan(findings.minimum_detectable_effect(sd, 1))


def test_two_rows_for_one_seed_are_an_error_naming_them():
    frame = _claim_frame([0.5, 0.6, 0.55], [0.4, 0.5, 0.45])
    frame["name"] = [f"run{i}" for i in range(len(frame))]
    extra = frame.iloc[[0]].assign(name="another_lda_weight", lambda_da=0.3)
    with pytest.raises(ValueError, match=r"2 rows for seed 0: run0, another_lda_weight"):
        findings.claim_table(pd.concat([frame, extra]), "d", claims=L_DA)


def test_a_verdict_that_one_seed_carries_is_fragile():
    # seeds 0-3 gain about +0.01 with some spread; seed 4 gains +0.2: with it the mean is carried by one seed
    table = findings.claim_table(_claim_frame([0.51, 0.52, 0.505, 0.515, 0.70], [0.50, 0.50, 0.50, 0.50, 0.50]), "d",
                                 claims=L_DA)
    steady = findings.claim_table(_claim_frame([0.61, 0.62, 0.605, 0.615, 0.62], [0.50, 0.50, 0.50, 0.50, 0.50]),
                                  "d", claims=L_DA)
    assert not steady.at[0, "fragile"] and steady.at[0, "verdict"] == findings.SUPPORTED
    row = table.iloc[0]
    assert row["fragile"] and "leaving out seed" in row["fragility"]
    assert "Fragile, not a finding" in findings.sentences(table)[0]


def test_seed_halves_that_disagree_make_a_claim_fragile():
    gain = [0.60, 0.62, 0.61, 0.63, 0.60] + [0.50, 0.51, 0.49, 0.505, 0.495]  # seeds 0-4 gain, 5-9 do not
    table = findings.claim_table(_claim_frame(gain, [0.5] * 10), "d", claims=L_DA)
    row = table.iloc[0]
    assert row["fragile"] and "its seed halves disagree (0-4: +0.112, supported" in row["fragility"]
    assert "5-9: not resolved" in row["halves"]
    both = findings.claim_table(_claim_frame([0.60, 0.62, 0.61, 0.63, 0.60] * 2, [0.5] * 10), "d", claims=L_DA)
    assert not both.at[0, "fragile"] and both.at[0, "halves"].count(findings.SUPPORTED) == 2


def test_an_unresolved_sentence_says_what_the_interval_rules_out():
    table = findings.claim_table(_claim_frame([0.50, 0.52, 0.49, 0.51], [0.50, 0.50, 0.50, 0.50]), "d", claims=L_DA)
    text = findings.sentences(table)[0]
    r = table.iloc[0]
    assert r["verdict"] == findings.UNRESOLVED
    assert f"rules out a gain above {r['ci_high']:+.3f} and a loss beyond {r['ci_low']:+.3f}" in text
    assert f"a true difference below about {r['mde']:.3f} would likely go unnoticed" in text
    assert findings.p_text(3e-6) == "p < 1e-4" and findings.p_text(0.0312) == "p = 0.031"


def test_convergence_counts_the_runs_that_selected_their_last_epoch():
    rows = [{"name": f"r{i}", "dataset": "d", "retrieval": r, "epochs": 5, "best_epoch": b, "method": "clusterretri",
             "start": "pretrained"} for i, b in enumerate([4, 4, 2, 4]) for r in ("exact", "cluster")]
    rows += [{"name": "one", "dataset": "d", "retrieval": "exact", "epochs": 1, "best_epoch": 0, "method": "dmwa",
              "start": "pretrained"}]
    table = findings.convergence(pd.DataFrame(rows), "d")
    assert table.to_dict("records") == [{"method": "clusterretri", "start": "pretrained", "runs": 4,
                                         "selected_last_epoch": 3, "epochs": 5}]  # one-epoch runs have no choice
    assert findings.convergence_sentence(table).startswith("Selected their last epoch: 3 of 4 clusterretri runs")


def test_a_half_too_small_to_resolve_the_claim_alone_does_not_make_it_fragile():
    # five seeds with a steady gain: the half of two seeds cannot be significant over 12 claims, but its interval
    # holds the other half's estimate, so the halves are consistent
    strong = findings.claim_table(_claim_frame([0.61, 0.66, 0.605, 0.615, 0.612], [0.5] * 5), "d",
                                  claims=findings.CLAIMS[:1])
    row = strong.iloc[0]
    assert row["verdict"] == findings.SUPPORTED and not row["fragile"]
    assert "0, 1: not resolved" in row["halves"] and "2-4: supported" in row["halves"]
