"""zssbir.study.conventions: the settings it tries, its values against direct metric calls and sklearn."""
import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from zssbir.study import conventions as cs
from zssbir.eval.metrics import DEFAULT_METRICS, PRESETS, evaluate
from zssbir.eval.exact_search import evaluate_features


@pytest.fixture(scope="module")
def problem():
    """Four overlapping classes in 8-d (float64: exact cosine scores do not tie); gallery grouped by class."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((4, 8))
    gl, ql = np.repeat(np.arange(4), 15), np.repeat(np.arange(4), 8)
    g = centres[gl] + 1.2 * rng.standard_normal((len(gl), 8))
    q = centres[ql] + 1.2 * rng.standard_normal((len(ql), 8))
    return q, g, ql, gl


def _value(frame, scores, axis, setting, metric):
    row = frame[(frame.scores == scores) & (frame.axis == axis) & (frame.setting == setting) & (frame.metric == metric)]
    assert len(row) == 1
    return row["value"].iloc[0]


def test_settings_and_deltas(problem):
    exact = cs.exact_scores(*problem)
    frame = cs.convention_study([exact], tie_seeds=3)
    assert (frame[frame.axis == "reference"]["delta"] == 0).all()
    assert set(frame.axis) == set(cs.AXES) and "secondary" not in set(frame.setting)  # no secondary for exact
    assert len(frame[(frame.axis == "ties") & (frame.setting == "random")]) == 3 * len(DEFAULT_METRICS)
    assert not ((frame.axis == "ap") & frame.metric.str.startswith("prec")).any()
    assert set(frame[frame.axis == "map_k_denominator"].metric) == {"map@200"}
    direct = evaluate_features(*problem, preset="zse_sbir")
    for metric in DEFAULT_METRICS:
        assert _value(frame, exact.name, "preset", "zse_sbir", metric) == pytest.approx(direct[metric].value)
    # exact cosine scores do not tie: every random order gives the reference
    assert cs.tie_spread(frame)["spread"].max() == 0


def test_exact_ap_matches_sklearn(problem):
    q, g, ql, gl = problem
    frame = cs.convention_study([cs.exact_scores(*problem)], tie_seeds=0)
    scores = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (g / np.linalg.norm(g, axis=1, keepdims=True)).T
    per_query = np.array([average_precision_score(gl == ql[i], scores[i]) for i in range(len(q))])
    class_mean = np.mean([per_query[ql == c].mean() for c in np.unique(ql)])  # reference averages per class
    assert _value(frame, "exact cosine", "ap", "exact", "map@all") == pytest.approx(class_mean, abs=1e-12)


def test_cluster_ties_move_the_number(problem):
    clustered = cs.cluster_scores(*problem, M=1)
    assert clustered.name == "cluster M=1 K=4 adc"
    frame = cs.convention_study([clustered], tie_seeds=4)
    assert cs.tie_spread(frame).loc[(clustered.name, "map@all"), "spread"] > 0
    assert "secondary" in set(frame[frame.axis == "ties"].setting)


def test_matrix_scores_and_unknown_reference(problem):
    q, g, ql, gl = problem
    scores = q @ g.T
    frame = cs.convention_study([cs.matrix_scores(scores, ql, gl, name="dot")], reference="sake", tie_seeds=1)
    assert _value(frame, "dot", "reference", "sake preset, ties stable", "map@all") == pytest.approx(
        evaluate(scores, ql, gl, **PRESETS["sake"])["map@all"].value)
    with pytest.raises(ValueError, match="unknown reference preset"):
        cs.variations("nope")


def test_plot_has_one_panel_per_metric(problem):
    import matplotlib
    matplotlib.use("Agg")
    frame = cs.convention_study([cs.exact_scores(*problem), cs.cluster_scores(*problem)], tie_seeds=2)
    fig = cs.plot_deltas(frame, ("map@all", "prec@100"))
    assert len(fig.axes) == 2


def test_pick_run(tmp_path, monkeypatch):
    monkeypatch.setenv("ZSSBIR_RUNS", str(tmp_path))
    def rec(name, lda, seed, run_dir=None):
        return {"name": name, "seed": seed, "extra": {"run_dir": run_dir} if run_dir else {},
                "params": {"method": "clusterretri", "dataset": "d", "train": {"lambda_da": lda}}}
    records = [rec("b_lda0.1_seed1__exact", 0.1, 1), rec("a_lda0_seed0__exact", 0.0, 0),
               rec("c_lda0.1_seed0__cluster", 0.1, 0, run_dir=str(tmp_path))]
    assert cs.pick_run(records, "d") == ("c_lda0.1_seed0", tmp_path)
    assert cs.pick_run(records, "d", "a_lda0_seed0") == ("a_lda0_seed0", tmp_path / "train" / "a_lda0_seed0")
    pretrained = rec("z_lda0.1_seed0__exact", 0.1, 0)
    pretrained["params"]["train"]["pretrained"] = "pretrain"
    assert cs.pick_run(records + [pretrained], "d")[0] == "z_lda0.1_seed0"  # the study's start before scratch
    with pytest.raises(ValueError, match="no run 'x' on d.*a_lda0_seed0"):
        cs.pick_run(records, "d", "x")
