"""The papermill pipeline: every notebook of notebooks/pipeline.yml executes with its tiny parameters."""
import ast
import html
import json
import re

import nbformat
import papermill
import pytest

from zssbir import paths
from zssbir.study import runs
from zssbir.study.pipeline import check_parameters, load_pipeline, run_pipeline
from zssbir.study.results import load_results
from test_nbval_setup import nbval_notebooks

STEPS = load_pipeline()


def test_pipeline_file_is_valid_and_notebooks_are_stripped():
    """Notebooks are committed without outputs, except exactly the Makefile's NBVAL_NOTEBOOKS (fast, deterministic
    teaching notebooks that nbval checks), which are committed with them; every cell has an id."""
    assert STEPS, "the pipeline lists no notebook"
    kept = {p.name for p in nbval_notebooks()}
    assert kept <= {s.notebook for s in STEPS}, "a notebook kept with outputs is not a step of the pipeline"
    for step in STEPS:
        nb = nbformat.read(paths.notebooks_dir() / step.notebook, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{step.notebook} needs exactly one cell tagged 'parameters'"
        assert all(c.get("id") for c in nb.cells), f"{step.notebook} has cells without an id"
        with_outputs = any(c.get("outputs") for c in nb.cells if c.cell_type == "code")
        if step.notebook in kept:
            assert with_outputs and nb.metadata.get("keep_output") is True, \
                f"{step.notebook} is checked by nbval, so it is committed with its outputs: run `make outputs`"
        else:
            assert not with_outputs and not nb.metadata.get("keep_output"), \
                f"{step.notebook} is committed with outputs: run `make strip`"
        declared = papermill.inspect_notebook(str(paths.notebooks_dir() / step.notebook))
        assigned = [t.id for node in ast.parse(tagged[0].source).body for t in getattr(node, "targets", [])]
        assert sorted(declared) == sorted(assigned), f"papermill cannot parse some parameters of {step.notebook}"
        check_parameters(paths.notebooks_dir() / step.notebook, step.parameters)
        check_parameters(paths.notebooks_dir() / step.notebook, step.test_parameters)


def test_unknown_parameter_is_refused():
    with pytest.raises(ValueError, match=r"unknown parameters \['not_a_parameter'\]"):
        check_parameters(paths.notebooks_dir() / STEPS[0].notebook, {"not_a_parameter": 1})


def test_bad_pipeline_file(tmp_path):
    bad = tmp_path / "p.yml"
    bad.write_text("steps:\n  - notebook: 00_data_tour.ipynb\n    name: a\n    paramters: {}\n")
    with pytest.raises(ValueError, match="unknown keys \\['paramters'\\]"):
        load_pipeline(bad)
    bad.write_text("steps:\n  - notebook: nope.ipynb\n    name: a\n")
    with pytest.raises(FileNotFoundError, match="nope.ipynb"):
        load_pipeline(bad)


def _effective(step, test: bool) -> dict:
    """A step's parameters over its notebook's defaults."""
    declared = papermill.inspect_notebook(str(paths.notebooks_dir() / step.notebook))
    given = step.test_parameters if test else step.parameters
    return {k: given[k] if k in given else ast.literal_eval(v["default"]) for k, v in declared.items()}


def _trained_by_01(test: bool) -> list:
    """The configs of every run the 01 steps train (``runs.run_grid`` of their parameters)."""
    out = []
    for step in (s for s in STEPS if s.notebook == "01_train.ipynb"):
        p = _effective(step, test)
        out += runs.run_grid(p["run_config"], p["overrides"], seeds=p["seeds"], starts=p["starts"],
                             vary={"lambda_da": p["lambda_das"]})
        if p["control_starts"]:  # the control starts at the baseline only
            out += runs.run_grid(p["run_config"], p["overrides"], seeds=p["seeds"], starts=p["control_starts"],
                                 vary={"lambda_da": [0.0]})
    return out


def _stream_text(executed, contains: str) -> str:
    """What the first code cell whose source contains ``contains`` shows as text: printed lines and displayed
    Markdown (the closing sentences)."""
    cell = next(c for c in executed.cells if c.cell_type == "code" and contains in c.source)
    return "".join(o.get("text", "") if o.get("output_type") == "stream" else o.get("data", {}).get("text/markdown", "")
                   for o in cell.get("outputs", []))


# the pages whose closing prose, tables and numbers issue 25 set (02-04 have their own method cards and exercises)
CONCLUDED = ["00_data_tour", "00_pretraining", "01_train", "02_distribution_alignment", "03_cluster_analysis",
             "04_dmwa", "05_map_tables", "06_explore", "07_methods_in_2d"]


def _check_pages_read_as_conclusions(out) -> None:
    """Each page of CONCLUDED ends with its conclusion (Markdown computed from the results, not printed lines), and
    its tables show no NaN, no -0.000 and epochs counted from 1."""
    for name in CONCLUDED:
        executed = nbformat.read(out / f"{name}.ipynb", as_version=4)
        last = executed.cells[-1]
        assert last.cell_type == "code" and any("text/markdown" in o.get("data", {}) for o in last.outputs), \
            f"{name} does not end with its conclusion"
        assert not any(o.get("output_type") == "stream" for o in last.outputs), f"{name} prints its conclusion"
        tables = [o["data"]["text/plain"] for c in executed.cells for o in c.get("outputs", [])
                  if "text/html" in o.get("data", {}) and "dataframe" in o["data"]["text/html"]]
        for table in tables:
            assert not re.search(r"\bNaN\b|-0\.0+\b(?!\d)", table), f"{name}: a table shows NaN or -0.0:\n{table}"
            header = table.splitlines()[1:2]
            assert not (header and header[0].startswith("epoch") and re.search(r"^0 ", table, re.MULTILINE)), \
                f"{name}: a history table counts epochs from 0"


@pytest.mark.slow
def test_every_notebook_runs_with_tiny_parameters(isolated_dirs):
    out = isolated_dirs / "reports"
    rows = run_pipeline(test=True, out_dir=out, progress=False)
    assert [r["status"] for r in rows] == ["ok"] * len(STEPS)
    index = (out / "index.html").read_text()
    for step in STEPS:
        assert f'href="{step.name}.html"' in index and html.escape(step.description) in index
        executed = nbformat.read(out / f"{step.name}.ipynb", as_version=4)
        errors = [o for c in executed.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors
        stderr = [o["text"][:200] for c in executed.cells for o in c.get("outputs", [])
                  if o.get("output_type") == "stream" and o.get("name") == "stderr"]
        assert not stderr, f"{step.name} shows stderr boxes in its report page: {stderr}"
        assert (out / f"{step.name}.html").stat().st_size > 10_000
    assert json.loads((out / "index.json").read_text())["steps"][0]["parameters"] == STEPS[0].test_parameters
    assert "What the study found" in index and "Chance level" in index  # the findings of 05's headline.json

    # 01 wrote one results file per run and procedure, with the run's settings and values in range
    train_steps = [s for s in STEPS if s.notebook == "01_train.ipynb"]
    results = {r["name"]: r for r in load_results(isolated_dirs / "runs" / "results")}
    grid = _trained_by_01(test=True)
    assert {runs.start_of(c) for c in grid} == {"pretrained", "scratch"} and len({runs.run_name(c) for c in grid}) == 10
    assert sum(bool(c.lambda_kd == 0 and c.pretrained) for c in grid) == 2  # the pretrained start without distillation
    for config in grid:
        for procedure in ("exact", "cluster"):
            record = results[f"{runs.run_name(config)}__{procedure}"]
            assert record["params"]["train"] == config.to_dict()
            assert record["params"]["retrieval"]["kind"] == procedure
            assert set(record["metrics"]) == {"map@all", "prec@100", "map@200", "prec@200"}
            assert all(0 <= m["value"] <= 1 for m in record["metrics"].values())
    for step in train_steps:
        executed = nbformat.read(out / f"{step.name}.ipynb", as_version=4)
        closing = _stream_text(executed, "run_sentences")
        assert "exact: map@all" in closing and "(chance " in closing
        grid_log = _stream_text(executed, "train_and_score")  # one summary line, the per-run lines in the log file
        assert grid_log.count("\n") == 1 and "one line per run in" in grid_log, grid_log
        assert "Of " in _stream_text(executed, "grid_sentences") and "Chance is " in _stream_text(executed, "grid_sentences")
    assert (isolated_dirs / "runs" / runs.TRAIN_LOG).read_text().count(": best epoch ") >= len(grid) - 1
    _check_pages_read_as_conclusions(out)
    pretraining = _stream_text(nbformat.read(out / "00_pretraining.ipynb", as_version=4), "pretraining.sentences")
    assert "the pretrained backbone retrieves the benchmark's unseen classes at mAP@all" in pretraining
    assert "label their photos with top-1" in pretraining
    # 02 and 03 analysed exactly the runs 01 trained (no training of their own)
    analysis = next(s for s in STEPS if s.notebook == "03_cluster_analysis.ipynb")
    opened = _stream_text(nbformat.read(out / f"{analysis.name}.ipynb", as_version=4), "open_run")
    expected = runs.run_name(runs.run_config("study/clusterretri.yaml", analysis.test_parameters["overrides"]))
    assert opened.startswith(f"run {expected}:")
    assert len(list((isolated_dirs / "runs" / "train").glob("clusterretri_*"))) == len(grid)
    assert "Sketch-photo mmd over the whole split" in _stream_text(
        nbformat.read(out / "02_distribution_alignment.ipynb", as_version=4), "alignment.sentences")
    # 04's ablations and 05's claims and headline
    dmwa = [r for r in results.values() if r["params"]["method"] == "dmwa"]
    assert {r["params"]["label"].rsplit(", ", 1)[0] for r in dmwa} == {
        "DMWA (weighting both, quadruplet)", "DMWA (weighting none, quadruplet)", "DMWA (weighting both, triplet)",
        "DMWA (weighting both, balanced)"}
    assert {r["seed"] for r in dmwa} == {0, 1}
    scratch = {r["params"]["label"] for r in dmwa if not r["params"]["train"]["pretrained"]}
    assert {label.rsplit(", ", 1)[0] for label in scratch} == {"DMWA (weighting both, quadruplet)"}
    headline = json.loads((out / "tables" / "headline.json").read_text())
    # the papers' claims, their controls (transductive re-ranker, cluster gain from scratch, scale-matched triplet,
    # distillation apart from the start) and the starting-point questions, each Holm-corrected over all 12
    assert len(headline["claims"]) == 12 and all("paired seeds" in c and "over 12 claims" in c
                                                 for c in headline["claims"])
    assert sum("improves on scratch" in c for c in headline["claims"]) == 4
    assert any("transductive re-ranker" in c for c in headline["claims"])
    assert any("scale-matched triplet" in c for c in headline["claims"])
    assert any(r["row"].endswith(", from scratch") for r in headline["rows"])
    assert any(r["row"] == "chance (random ranking)" for r in headline["rows"])
    assert all((out / f).is_file() for f in headline["figures"])


def test_analysis_notebooks_open_runs_that_the_training_notebook_trains():
    """02 and 03 only open runs: each run they name (and 02's baseline) is one that the 01 step trains."""
    for test in (False, True):
        trained = {runs.run_name(c) for c in _trained_by_01(test)}
        for step in STEPS:
            if step.notebook not in ("02_distribution_alignment.ipynb", "03_cluster_analysis.ipynb"):
                continue
            params = _effective(step, test)
            named = [params["overrides"]] + ([{**params["overrides"], **params["baseline_overrides"]}]
                                             if "baseline_overrides" in params else [])
            for o in named:
                assert runs.run_name(runs.run_config("study/clusterretri.yaml", o)) in trained, (step.name, o, test)


def test_the_report_trains_five_paired_seeds_of_every_claim():
    """The report's parameters: both starts and both L_DA weights over five seeds in 01; in 04 both starts of the main
    variant and the two ablations the paper's claims need, over the same five seeds."""
    grid = _trained_by_01(test=False)
    seeds = {c.seed for c in grid}
    assert seeds == {0, 1, 2, 3, 4} and len(grid) == 25
    assert {(runs.start_of(c), c.lambda_da) for c in grid} == {(s, l) for s in ("pretrained", "scratch")
                                                               for l in (0.0, 0.1)}
    assert sum(bool(c.lambda_kd == 0 and c.pretrained and c.lambda_da == 0) for c in grid) == 5  # no distillation
    dmwa = _effective(next(s for s in STEPS if s.notebook == "04_dmwa.ipynb"), test=False)
    assert set(dmwa["seeds"]) == seeds and dmwa["starts"] == ["pretrained", "scratch"]
    assert {"none", "both"} <= set(dmwa["ablation_weightings"]) and {"triplet", "balanced"} <= set(dmwa["ablation_losses"])


def test_explorer_opens_runs_that_the_training_notebooks_train():
    """06_explore opens a ClusterRetri run of the 01 step and 04's main DMWA run, in the report and in the tests."""
    explore = next(s for s in STEPS if s.notebook == "06_explore.ipynb")
    assert STEPS.index(explore) > max(STEPS.index(s) for s in STEPS if s.notebook in ("01_train.ipynb", "04_dmwa.ipynb"))
    dmwa = next(s for s in STEPS if s.notebook == "04_dmwa.ipynb")
    for test in (False, True):
        params = _effective(explore, test)
        trained = {runs.run_name(c) for c in _trained_by_01(test)}
        assert runs.run_name(runs.run_config("study/clusterretri.yaml", params["overrides"])) in trained, test
        d = _effective(dmwa, test)
        main = {**d["overrides"], "seed": d["seeds"][0]}
        assert runs.run_name(runs.run_config("study/dmwa.yaml", params["dmwa_overrides"])) == \
            runs.run_name(runs.run_config("study/dmwa.yaml", main)), test
