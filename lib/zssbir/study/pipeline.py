"""The papermill runner behind `make reports`.

``notebooks/pipeline.yml`` lists the notebooks in dependency order; each entry has a ``notebook``,
an output ``name``, the ``parameters`` of the report run and the tiny ``test_parameters`` the test
suite runs it with. Each notebook is executed with papermill into ``<reports>/<name>.ipynb``,
converted to ``<name>.html``, and ``<reports>/index.html`` (plus ``index.json``) links them all
with their parameters, run time and status.
"""
from __future__ import annotations

import functools
import html
import json
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml

from .. import paths
from ..runtime import git_commit


@dataclass
class Step:
    notebook: str
    name: str
    parameters: dict = field(default_factory=dict)
    test_parameters: dict = field(default_factory=dict)
    description: str = ""


def load_pipeline(path: str | Path | None = None) -> list[Step]:
    """The steps of a pipeline file. A file with ``extends: <other pipeline file>`` (beside it) runs every step of
    that file, plus its own steps, each placed right after the step its ``after`` names (else at the end)."""
    path = Path(path) if path else paths.notebooks_dir() / "pipeline.yml"
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    # top-level keys other than 'steps' (and 'extends') may hold YAML anchors shared by the steps
    if not isinstance(raw, dict) or not isinstance(raw.get("steps"), list):
        raise ValueError(f"{path}: expected a mapping with a 'steps' list")
    steps, known = (load_pipeline(path.parent / raw["extends"]) if raw.get("extends") else []), \
        set(Step.__dataclass_fields__)
    for i, entry in enumerate(raw["steps"]):
        entry = dict(entry)
        after = entry.pop("after", None) if raw.get("extends") else None
        unknown = set(entry) - known
        if unknown:
            raise ValueError(f"{path}: step {i} has unknown keys {sorted(unknown)}; allowed: {sorted(known)}"
                             + (" (and 'after' in a file that extends another)" if raw.get("extends") else ""))
        step = Step(**entry)
        if not (paths.notebooks_dir() / step.notebook).is_file():
            raise FileNotFoundError(f"{path}: step {step.name!r} names {step.notebook}, which is not in notebooks/")
        names = [s.name for s in steps]
        if after is not None and after not in names:
            raise ValueError(f"{path}: step {step.name!r} comes after {after!r}, which is not a step of {names}")
        steps.insert(names.index(after) + 1 if after is not None else len(steps), step)
    names = [s.name for s in steps]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: step names must be unique, got {names}")
    return steps


def check_parameters(notebook: Path, parameters: dict) -> None:
    """Refuse parameters the notebook's ``parameters`` cell does not define (papermill only warns)."""
    import papermill

    declared = papermill.inspect_notebook(str(notebook))
    if not declared:
        raise ValueError(f"{notebook.name} has no cell tagged 'parameters'")
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise ValueError(f"unknown parameters {unknown} for {notebook.name}; it declares {sorted(declared)}")


@functools.cache
def interpreter_kernel_manager() -> type:
    """A jupyter_client kernel manager whose kernel is ipykernel run by THIS interpreter (``sys.executable``).

    papermill's ``kernel_name="python3"`` alone takes the first "python3" kernelspec on the Jupyter paths
    (JUPYTER_PATH, then the user's, then the environment's), which may launch another Python than the
    one running the study; the notebooks always run with this one (nbclient's ``kernel_manager_class``)."""
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpec

    class InterpreterKernelManager(AsyncKernelManager):
        @property
        def kernel_spec(self) -> KernelSpec:
            if self._kernel_spec is None:
                self._kernel_spec = KernelSpec(
                    argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                    display_name=f"Python 3 ({sys.executable})", language="python", resource_dir="")
            return self._kernel_spec

    return InterpreterKernelManager


def run_notebook(notebook: str | Path, output: str | Path, parameters: dict, *, progress: bool = False) -> float:
    """Execute one notebook with papermill (cwd = notebooks/) and write its HTML beside it; return seconds."""
    import papermill
    from nbconvert import HTMLExporter

    notebook, output = Path(notebook), Path(output)
    if not notebook.is_absolute():
        notebook = paths.notebooks_dir() / notebook
    check_parameters(notebook, parameters)
    output.parent.mkdir(parents=True, exist_ok=True)
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    start = time.perf_counter()
    papermill.execute_notebook(str(notebook), str(output), parameters=parameters, kernel_name="python3",
                               kernel_manager_class=interpreter_kernel_manager(), cwd=str(paths.notebooks_dir()),
                               progress_bar=progress)
    seconds = time.perf_counter() - start
    body, _ = HTMLExporter().from_filename(str(output))
    output.with_suffix(".html").write_text(body, encoding="utf-8")
    return seconds


# every report page: row labels of tables stay on one line (no one-word-per-line columns); wide tables scroll
PAGE_CSS = ("<style id='zssbir-report-css'>.jp-RenderedHTMLCommon table th,.jp-RenderedHTMLCommon table td:first-child"
            "{white-space:nowrap}.jp-RenderedHTMLCommon table{display:block;overflow-x:auto;max-width:100%}</style>")


def polish_html(path: str | Path) -> None:
    """Add the report's table CSS (``PAGE_CSS``) to an exported page, once."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if "zssbir-report-css" not in text:
        text = text.replace("</head>", PAGE_CSS + "</head>", 1) if "</head>" in text else PAGE_CSS + text
        path.write_text(text, encoding="utf-8")


def _number(value: dict, digits: int = 4) -> str:
    std = value.get("std")
    spread = "" if std is None else f" ± {std:.{digits}f}"
    return f"{value['mean']:.{digits}f}{spread} ({value.get('seeds', '?')} seeds)"


def findings_html(headline: dict | None) -> str:
    """The study's findings from ``tables/headline.json`` (written by 05_map_tables): the headline table, its
    figure, one sentence per claim of each paper and the chance level. Every number comes from the file."""
    from .scoring import CHANCE_LABEL

    esc = html.escape
    if not headline:
        return ("<h2>What the study found</h2><p class='findings-missing'>No findings yet: "
                "<code>tables/headline.json</code> is written by <code>05_map_tables</code>; run "
                "<code>make reports</code>.</p>")
    metrics = headline.get("metrics") or list(headline.get("conventions", {}))
    rows = headline.get("rows", [])
    head = "".join(f"<th>{esc(m)}</th>" for m in metrics)
    body = "".join(
        f"<tr><th>{esc(r['row'])}</th>"
        + "".join(f"<td>{esc(_number(r['metrics'][m])) if m in r['metrics'] else ''}</td>" for m in metrics) + "</tr>"
        for r in rows)
    conventions = "".join(f"<li><b>{esc(m)}</b>: {esc(str(c))}</li>" for m, c in headline.get("conventions", {}).items())
    chance = next((r for r in rows if r["row"] == CHANCE_LABEL), None)
    chance_text = ("<p class='chance'><b>Chance level</b> (a uniformly random ranking of the same queries and gallery, "
                   "scored the same way): " + ", ".join(f"{esc(m)} {v['mean']:.4f}" for m, v in chance["metrics"].items())
                   + ". A row is informative only as far as it clears this.</p>") if chance else ""
    claims = "".join(f"<li>{esc(c)}</li>" for c in headline.get("claims", []))
    figures = "".join(f"<figure><img src='{esc(f)}' alt='{esc(Path(f).stem)}' style='max-width:100%'>"
                      f"<figcaption>{esc(Path(f).stem)}</figcaption></figure>" for f in headline.get("figures", [])[:1])
    return (f"<h2>What the study found</h2><p>Measured on the <code>{esc(str(headline.get('dataset')))}</code> benchmark "
            "(unseen classes; mean ± std over seeds), from commit "
            f"<code>{esc(str(headline.get('commit', ''))[:10])}</code>, {esc(str(headline.get('generated', ''))[:10])}; "
            "every number is read from the results files by <code>05_map_tables</code>.</p>"
            + (f"<h3>The papers' claims, paired over seeds</h3><ul class='claims'>{claims}</ul>" if claims else "")
            + chance_text
            + f"<table class='headline'><tr><th>row</th>{head}</tr>{body}</table>"
            + (f"<details><summary>metric conventions</summary><ul>{conventions}</ul></details>" if conventions else "")
            + figures)


def _index_html(rows: list[dict], commit: str | None, headline: dict | None = None) -> str:
    def cell(text: str) -> str:
        return f"<td>{html.escape(str(text))}</td>"

    lines = []
    for r in rows:
        link = f'<a href="{html.escape(r["name"])}.html">{html.escape(r["name"])}</a>'
        params = ", ".join(f"{k}={v!r}" for k, v in r["parameters"].items())
        seconds = "-" if r["seconds"] is None else f"{r['seconds']:.1f} s"
        lines.append(f"<tr><td>{link}</td>{cell(r['description'])}{cell(r['notebook'])}{cell(params)}"
                     f"{cell(r['status'])}{cell(seconds)}</tr>")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>ZS-SBIR study reports</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:80em}td,th{padding:4px 10px;border-bottom:1px solid #ddd;"
        "text-align:left;vertical-align:top}th{white-space:nowrap}table.headline{display:block;overflow-x:auto}table.headline td{white-space:nowrap}"
        ".claims li,.chance{line-height:1.4}</style></head><body><h1>ZS-SBIR study: ClusterRetri and DMWA</h1>"
        f"<p>Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} from commit "
        f"{html.escape(str(commit))} by <code>make reports</code>.</p>"
        + findings_html(headline)
        + "<h2>The reports</h2>"
        "<table class='steps'><tr><th>report</th><th>what it shows</th><th>notebook</th><th>parameters</th><th>status</th><th>run time</th></tr>"
        + "".join(lines) + "</table></body></html>\n")


def read_headline(out_dir: str | Path) -> dict | None:
    """``<out_dir>/tables/headline.json`` when 05_map_tables has written it (None otherwise)."""
    path = Path(out_dir) / "tables" / "headline.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def run_pipeline(pipeline: str | Path | None = None, *, out_dir: str | Path | None = None, test: bool = False,
                 only: list[str] | None = None, progress: bool = True) -> list[dict]:
    """Run every step (or ``only`` those named) in order; stop at the first failure after writing the index."""
    steps = load_pipeline(pipeline)
    if only:
        missing = sorted(set(only) - {s.name for s in steps})
        if missing:
            raise ValueError(f"no pipeline steps named {missing}; known: {[s.name for s in steps]}")
        steps = [s for s in steps if s.name in only]
    out = Path(out_dir) if out_dir else paths.reports_dir()
    rows = [{"name": s.name, "notebook": s.notebook, "description": s.description, "status": "not run", "seconds": None,
             "parameters": s.test_parameters if test else s.parameters} for s in steps]
    failure = None
    for step, row in zip(steps, rows):
        print(f"[reports] {step.name}: running {step.notebook} with {row['parameters']}", flush=True)
        try:
            row["seconds"] = run_notebook(step.notebook, out / f"{step.name}.ipynb", row["parameters"],
                                          progress=progress)
            polish_html(out / f"{step.name}.html")
            row["status"] = "ok"
        except Exception as err:  # recorded in the index, then re-raised
            row["status"], failure = f"failed: {type(err).__name__}", err
            break
    commit = git_commit()
    (out / "index.json").write_text(json.dumps({"commit": commit, "steps": rows}, indent=2), encoding="utf-8")
    (out / "index.html").write_text(_index_html(rows, commit, read_headline(out)), encoding="utf-8")
    if failure is not None:
        raise RuntimeError(f"report step failed; the executed notebook in {out} shows where") from failure
    return rows
