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
        (tmp_path / name).mkdir()
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
    text = convergence.budget_sentences(convergence.budget_table(curves, {"m": 3}))[0]
    assert "the curves choose 4 epochs, more than the report's 3" in text and "after 3 epochs it is at 93%" in text
    enough = convergence.budget_sentences(convergence.budget_table(curves, {"m": 5}))[0]
    assert "the report's 5 epochs are enough" in enough
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
