"""The papermill pipeline: every notebook of notebooks/pipeline.yml executes with its tiny parameters."""
import ast
import html
import json

import nbformat
import papermill
import pytest

from zssbir import paths
from zssbir.study.pipeline import check_parameters, load_pipeline, run_pipeline

STEPS = load_pipeline()


def test_pipeline_file_is_valid_and_notebooks_are_stripped():
    assert STEPS, "the pipeline lists no notebook"
    for step in STEPS:
        nb = nbformat.read(paths.notebooks_dir() / step.notebook, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{step.notebook} needs exactly one cell tagged 'parameters'"
        assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
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
        assert (out / f"{step.name}.html").stat().st_size > 10_000
    assert json.loads((out / "index.json").read_text())["steps"][0]["parameters"] == STEPS[0].test_parameters


def test_notebooks_that_reuse_runs_share_the_training_defaults():
    """02 and 03 reuse 01's runs: their training defaults must equal 01's (else training refuses to resume)."""
    shared = ("dataset", "backbone", "epochs", "batch_size", "lr", "lr_final_factor", "image_size",
              "max_steps_per_epoch")
    defaults = {}
    for name in ("01_train", "02_distribution_alignment", "03_cluster_analysis", "04_dmwa"):
        declared = papermill.inspect_notebook(str(paths.notebooks_dir() / f"{name}.ipynb"))
        defaults[name] = {k: declared[k]["default"] for k in shared if k in declared}
    for name in ("02_distribution_alignment", "03_cluster_analysis"):
        assert defaults[name] == defaults["01_train"], name
    # DMWA trains its own runs, at the same image size and batch as ClusterRetri for a fair table
    assert {k: defaults["04_dmwa"][k] for k in ("dataset", "backbone", "image_size", "batch_size")} == \
        {k: defaults["01_train"][k] for k in ("dataset", "backbone", "image_size", "batch_size")}
