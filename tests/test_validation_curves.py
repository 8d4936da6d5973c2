"""Validation curves and the fine-tuning budget (issue 22, point 4): what the longer runs' curves choose, and the
longer runs kept out of the claims."""
import json

import pandas as pd
import pytest

from zssbir.study import convergence, findings, tables


def _frame(tmp_path, runs):
    """A results frame (exact rows) for fabricated runs {name: (method, start, epochs, seed, curve)} whose
    histories are written under tmp_path/<name>/history.json (epochs from 0, as the loop writes them)."""
    rows = []
    for name, (method, start, epochs, seed, curve) in runs.items():
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "history.json").write_text(json.dumps(
            [{"epoch": e, "val_map@all": v} for e, v in enumerate(curve)]))
        rows.append({"name": f"{name}__exact", "method": method, "start": start, "epochs": epochs, "seed": seed,
                     "dataset": "d", "retrieval": "exact", "label": method, "mismatched_pairs": 0.0,
                     "best_epoch": len(curve) - 1, "metric": "map@all", "value": curve[-1]})
    return pd.DataFrame(rows)


def test_the_long_runs_choose_the_budget_that_reaches_98_percent_of_their_peak(tmp_path):
    frame = _frame(tmp_path, {
        "a0": ("m", "pretrained", 3, 0, [0.30, 0.40, 0.45]),                          # the report's runs
        "long0": ("m", "pretrained", 6, 0, [0.30, 0.40, 0.45, 0.49, 0.50, 0.495]),   # 98 % of 0.50 at epoch 4
        "long1": ("m", "pretrained", 6, 1, [0.30, 0.45, 0.48, 0.49, 0.492, 0.50]),   # at epoch 3 (0.49 >= 0.49)
    })
    curves = convergence.validation_curves(frame, "d", runs_root=tmp_path)
    assert curves["epoch"].min() == 1 and len(curves) == 15  # epochs counted from 1
    table = convergence.budget_table(curves, {"m": 3}).iloc[0]
    assert table["runs"] == 2 and table["epochs"] == 6 and table["chosen_budget"] == 4
    assert table["peak_epoch"] == pytest.approx(5.5)  # epochs 5 and 6
    assert table["share_at_budget"] == pytest.approx((0.45 / 0.50 + 0.48 / 0.50) / 2)
    # the report's own run of seed 0 (its whole 3-epoch schedule) against the longer run of seed 0; seed 1 has no pair
    assert table["paired_seeds"] == 1 and table["report_share"] == pytest.approx(0.45 / 0.50)
    text = convergence.budget_sentences(convergence.budget_table(curves, {"m": 3}))[0]
    assert "the curves choose 4 epochs, more than the report's 3" in text and "after 3 epochs it is at 93%" in text
    assert "same 1 seed, whose learning rate decays over their 3 epochs, end at 90% of that peak" in text
    enough = convergence.budget_sentences(convergence.budget_table(curves, {"m": 5}))[0]
    assert "the report's 5 epochs are enough" in enough  # no report run of 5 epochs: the longer curves decide
    converged = _frame(tmp_path / "converged", {"b0": ("m", "pretrained", 3, 0, [0.30, 0.45, 0.495]),
                                                "c0": ("m", "pretrained", 6, 0, [0.30, 0.40, 0.45, 0.49, 0.50, 0.5])})
    text = convergence.budget_sentences(convergence.budget_table(
        convergence.validation_curves(converged, "d", runs_root=tmp_path / "converged"), {"m": 3}))[0]
    assert "the report's 3 epochs are enough" in text and "end at 99% of that peak" in text
    assert convergence.budget_table(curves, {"m": 6}).empty  # no run longer than the budget: nothing to say
    assert "cannot say whether that budget is enough" in convergence.budget_sentences(pd.DataFrame())[0]


def test_runs_of_another_length_get_their_own_row_and_stay_out_of_the_claims():
    def rows(label, epochs, values, lda):
        return [{"name": f"{label}{epochs}_s{s}", "dataset": "d", "metric": "map@all", "method": "clusterretri",
                 "lambda_da": lda, "lambda_kd": 1.0, "retrieval": "exact", "label": "", "seed": s, "value": v,
                 "start": "pretrained", "epochs": epochs} for s, v in enumerate(values)]
    frame = pd.DataFrame(rows("lda", 5, [0.5, 0.52, 0.51], 0.1) + rows("base", 5, [0.4, 0.41, 0.42], 0.0)
                         + rows("lda", 15, [0.9, 0.9, 0.9], 0.1))
    assert tables.report_budget(frame).tolist() == [True] * 6 + [False] * 3
    table = findings.claim_table(frame, "d").set_index("claim")  # one row per seed: the 15-epoch runs left out
    assert table.at["L_DA improves retrieval", "mean_with"] == pytest.approx(0.51)


def test_the_claims_at_the_longer_budget_stand_beside_the_same_seeds_at_the_report_budget():
    def rows(epochs, values, lda):
        return [{"name": f"l{lda}_{epochs}_s{s}", "dataset": "d", "metric": "map@all", "method": "clusterretri",
                 "lambda_da": lda, "lambda_kd": 1.0, "retrieval": "exact", "label": "", "seed": s, "value": v,
                 "start": "pretrained", "epochs": epochs} for s, v in enumerate(values)]
    frame = pd.DataFrame(rows(5, [0.50, 0.52, 0.51, 0.90, 0.90], 0.1) + rows(5, [0.40, 0.41, 0.42, 0.1, 0.1], 0.0)
                         + rows(15, [0.60, 0.61, 0.62], 0.1) + rows(15, [0.60, 0.62, 0.62], 0.0))
    # a claim the longer runs cannot test (no scratch run was trained longer): left out of both columns
    frame = pd.concat([frame, pd.DataFrame(rows(5, [0.3, 0.3, 0.3], 0.0)).assign(start="scratch", lambda_kd=0.0)])
    by_budget = convergence.claims_by_budget(frame, "d")
    (short_label, short), (long_label, long) = by_budget.items()
    assert short_label == "seeds 0-2 at the report's budget (ClusterRetri 5 epochs)"
    assert long_label == "seeds 0-2 at the longer budget (ClusterRetri 15 epochs)"
    # the same claim on the same three seeds (seeds 3-4 of the report's runs left out), and only claims both have
    assert short["claim"].tolist() == long["claim"].tolist() == ["L_DA improves retrieval"]
    assert short["n"].iloc[0] == long["n"].iloc[0] == 3
    assert short["difference"].iloc[0] == pytest.approx(0.10) and long["difference"].iloc[0] == pytest.approx(-0.0033, abs=1e-3)
    text = findings.side_by_side_sentences(by_budget, across="budget")
    assert "\"L_DA improves retrieval\" changes with the budget" in text[1]
    # every=True: a claim that keeps its verdict still shows its difference at each budget
    same_verdict = {k: t.assign(verdict="not resolved by these seeds", fragile=False) for k, t in by_budget.items()}
    assert len(findings.side_by_side_sentences(same_verdict, across="budget")) == 1
    text = findings.side_by_side_sentences(same_verdict, across="budget", every=True)
    assert text[0] == (f"1 claim was tested on each of {short_label} and {long_label}; 1 keeps its verdict on every "
                       f"one of them.")  # not listed twice
    assert text[1] == (f"\"L_DA improves retrieval\" keeps its verdict: {short_label} +0.100 (not resolved by these "
                       f"seeds), {long_label} -0.003 (not resolved by these seeds).")
    assert convergence.claims_by_budget(frame[frame["epochs"] == 5], "d") == {}  # no longer run
    assert convergence.claims_by_budget(frame[(frame["epochs"] == 5) | (frame["lambda_da"] > 0)], "d") == {}  # one arm
