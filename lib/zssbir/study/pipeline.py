"""The papermill runner behind `make reports`.

``notebooks/pipeline.yml`` lists the notebooks in dependency order; each entry has a ``notebook``,
an output ``name``, the ``parameters`` of the report run and the tiny ``test_parameters`` the test
suite runs it with. Each notebook is executed with papermill into ``<reports>/<name>.ipynb``,
converted to ``<name>.html``, and ``<reports>/index.html`` (plus ``index.json``) links them all
with their parameters, run time and status, after the study's findings (``report_index``).

The pages work opened from disk (file://) with no network: equations are typeset by a local MathJax 2 (the static
files of the ``jupyter-server-mathjax`` package, copied once into ``<reports>/assets/mathjax/`` and named by a relative
URL through HTMLExporter's ``mathjax_url``), and the export template leaves out require.js and the widget renderer,
which nbconvert would load from CDNs (a static page has no live widgets).
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
from .report_index import findings_html


@dataclass
class Step:
    notebook: str
    name: str
    parameters: dict = field(default_factory=dict)
    test_parameters: dict = field(default_factory=dict)
    description: str = ""


def load_pipeline(path: str | Path | None = None) -> list[Step]:
    """The steps of a pipeline file. A file with ``extends: <other pipeline file>`` (beside it) runs every step of
    that file, plus its own steps, each placed right after the step its ``after`` names (else at the end); an entry
    ``{update: <step name>, parameters: {...}}`` instead changes report parameters of that step (merged over them;
    e.g. more seeds, reusing every run the other file trains), and may replace its description."""
    path = Path(path) if path else paths.notebooks_dir() / "pipeline.yml"
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    # top-level keys other than 'steps' (and 'extends') may hold YAML anchors shared by the steps
    if not isinstance(raw, dict) or not isinstance(raw.get("steps"), list):
        raise ValueError(f"{path}: expected a mapping with a 'steps' list")
    steps, known = (load_pipeline(path.parent / raw["extends"]) if raw.get("extends") else []), \
        set(Step.__dataclass_fields__)
    for i, entry in enumerate(raw["steps"]):
        entry = dict(entry)
        if raw.get("extends") and "update" in entry:
            _update(steps, entry, path)
            continue
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


def _update(steps: list[Step], entry: dict, path: Path) -> None:
    """Apply an ``update`` entry of an extending pipeline file to the step it names."""
    name, extra = entry.pop("update"), set(entry) - {"parameters", "description"}
    target = next((s for s in steps if s.name == name), None)
    if target is None or extra or not isinstance(entry.get("parameters", {}), dict):
        raise ValueError(f"{path}: an update entry names a step of {[s.name for s in steps]} and gives only "
                         f"'parameters' (a mapping) and 'description'; got update {name!r} with {sorted(entry)}")
    target.parameters = {**target.parameters, **entry.get("parameters", {})}
    target.description = entry.get("description", target.description)


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
    body, _ = report_exporter(mathjax_assets(output.parent)).from_filename(str(output))
    output.with_suffix(".html").write_text(body, encoding="utf-8")
    return seconds


# MathJax 2 offline: the config files loaded in order (the last one, written beside the copy, picks the web font the
# package ships: STIX-Web; its fast preview would ask for TeX fonts it does not ship)
MATHJAX_DIR = "assets/mathjax"
MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,Safe,local/zssbir"
MATHJAX_LOCAL = ('MathJax.Hub.Config({"HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", '
                 'imageFont: null}, "fast-preview": {disabled: true}, messageStyle: "none"});\n'
                 'MathJax.Ajax.loadComplete("[MathJax]/config/local/zssbir.js");\n')
# the same TeX delimiters as nbconvert's pages, for pages written here (index.html)
MATHJAX_INLINE = ("<script type='text/x-mathjax-config'>MathJax.Hub.Config({tex2jax: {inlineMath: [['$','$'], "
                  "['\\\\(','\\\\)']], displayMath: [['$$','$$'], ['\\\\[','\\\\]']], processEscapes: true}});</script>")


def mathjax_source() -> Path:
    """The MathJax 2 static files of the ``jupyter-server-mathjax`` package (a dependency in pyproject.toml)."""
    import importlib.util

    spec = importlib.util.find_spec("jupyter_server_mathjax")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("the report pages typeset equations with a local MathJax from the "
                                  "jupyter-server-mathjax package: `pip install jupyter-server-mathjax` (make setup)")
    return Path(spec.origin).parent / "static"


def mathjax_assets(out_dir: str | Path) -> str:
    """Copy MathJax into ``<out_dir>/assets/mathjax/`` (once; the package's localisations left out) and return the
    pages' relative URL of it."""
    import shutil

    from importlib.metadata import version

    target, source = Path(out_dir) / MATHJAX_DIR, mathjax_source()
    stamp, copied = target / ".source", f"{source} {version('jupyter-server-mathjax')}"
    if not (stamp.is_file() and stamp.read_text(encoding="utf-8") == copied):
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("localization"))
        stamp.write_text(copied, encoding="utf-8")
    local = target / "config" / "local" / "zssbir.js"
    if not local.is_file() or local.read_text(encoding="utf-8") != MATHJAX_LOCAL:
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text(MATHJAX_LOCAL, encoding="utf-8")
    return f"{MATHJAX_DIR}/MathJax.js?config={MATHJAX_CONFIG}"


# nbconvert's lab template without what it would fetch from CDNs: require.js and the widget renderer (a static page
# shows no live widget; tqdm's progress bars are the only widgets the notebooks display)
REPORT_TEMPLATE = ("{%- extends 'index.html.j2' -%}\n{%- block html_head_js_requirejs -%}{%- endblock "
                   "html_head_js_requirejs -%}\n{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}\n")


def report_exporter(mathjax_url: str):
    """The HTMLExporter of the report pages: MathJax from ``mathjax_url`` (relative), nothing from a network."""
    import jinja2
    from nbconvert import HTMLExporter

    return HTMLExporter(mathjax_url=mathjax_url, extra_loaders=[jinja2.DictLoader({"zssbir_report.html.j2":
                                                                                  REPORT_TEMPLATE})],
                        template_file="zssbir_report.html.j2")


# every report page: row labels of tables stay on one line (no one-word-per-line columns); the other cells may break
# a long token (a convention, a source) anywhere, so that a table fits the page instead of scrolling sideways; a
# table still too wide (a row label that is a sentence) lets its labels wider than 40 % of the table wrap, and marks
# them (data-zssbir-wrapped); the browser test checks that no table is clipped and no other label wraps
FIT_TABLES_JS = ("<script id='zssbir-fit-tables'>window.addEventListener('load',function(){"
                 "document.querySelectorAll('table').forEach(function(t){"
                 "var box=t.parentElement?t.parentElement.clientWidth:t.clientWidth;"
                 "if(t.scrollWidth<=t.clientWidth+1&&t.offsetWidth<=box+1)return;"
                 "t.querySelectorAll('th').forEach(function(th){"
                 "if(th.getBoundingClientRect().width>0.4*Math.min(box,t.clientWidth||box)){"
                 "th.style.whiteSpace='normal';th.setAttribute('data-zssbir-wrapped','1');}});});});</script>")
PAGE_CSS = ("<style id='zssbir-report-css'>.jp-RenderedHTMLCommon table th,.jp-RenderedHTMLCommon table td:first-child"
            "{white-space:nowrap}.jp-RenderedHTMLCommon table td{overflow-wrap:anywhere}"
            ".jp-RenderedHTMLCommon table{display:block;overflow-x:auto;max-width:100%}</style>" + FIT_TABLES_JS)


def polish_html(path: str | Path) -> None:
    """Add the report's table CSS (``PAGE_CSS``) to an exported page, once."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if "zssbir-report-css" not in text:
        text = text.replace("</head>", PAGE_CSS + "</head>", 1) if "</head>" in text else PAGE_CSS + text
        path.write_text(text, encoding="utf-8")


def report_command(pipeline: str | Path | None) -> str:
    """The command a person runs for this pipeline file: make reports, make reports-full, or the CLI's."""
    name = Path(pipeline).name if pipeline else "pipeline.yml"
    return {"pipeline.yml": "make reports", "pipeline_full.yml": "make reports-full"}.get(
        name, f"zssbir reports --pipeline {pipeline}")


def _index_html(rows: list[dict], commit: str | None, headline: dict | None = None,
                mathjax_url: str = f"{MATHJAX_DIR}/MathJax.js?config={MATHJAX_CONFIG}", command: str = "make reports") -> str:
    """``index.html``: the findings (``report_index.findings_html``), then every report with its parameters, status
    and run time; equations typeset by the local MathJax at ``mathjax_url``."""
    def cell(text: str) -> str:
        return f"<td>{html.escape(str(text))}</td>"

    lines = []
    for r in rows:
        link = (f'<a href="{html.escape(r["name"])}.html">{html.escape(r["name"])}</a>' if r["status"] == "ok"
                else html.escape(r["name"]))
        params = ", ".join(f"{k}={v!r}" for k, v in r["parameters"].items())
        seconds = "-" if r["seconds"] is None else f"{r['seconds']:.1f} s"
        lines.append(f"<tr><td>{link}</td>{cell(r['description'])}{cell(r['notebook'])}{cell(params)}"
                     f"{cell(r['status'])}{cell(seconds)}</tr>")
    available = {r["name"] for r in rows if r["status"] == "ok"}
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>ZS-SBIR study reports</title>"
        f"{MATHJAX_INLINE}<script src='{html.escape(mathjax_url)}'></script>"
        "<style>body{font-family:sans-serif;margin:2em auto;padding:0 2em;max-width:80em;line-height:1.45}"
        "td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}"
        "table{border-collapse:collapse;max-width:100%}th{white-space:nowrap}table.headline{font-size:0.93em}"
        "table.headline td{white-space:nowrap}table.headline tr:not(:first-child) th{font-weight:normal}"
        "table.headline caption{caption-side:top;text-align:left;color:#555;padding-bottom:4px}"
        "table.steps td{overflow-wrap:anywhere}.verdict{font-size:1.05em}.claims li,.primer li{margin-bottom:0.4em}"
        "</style>" + FIT_TABLES_JS + "</head><body class='zssbir-index'><h1>ZS-SBIR study: ClusterRetri and DMWA</h1>"
        f"<p>Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} from commit "
        f"{html.escape(str(commit))} by <code>{html.escape(command)}</code>.</p>"
        + findings_html(headline, available)
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
    (out / "index.html").write_text(_index_html(rows, commit, read_headline(out), mathjax_assets(out),
                                                report_command(pipeline)), encoding="utf-8")
    if failure is not None:
        raise RuntimeError(f"report step failed; the executed notebook in {out} shows where") from failure
    return rows
