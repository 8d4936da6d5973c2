"""What a person sees, checked in a real browser (headless Debian Chromium driven by playwright): the report pages
opened from disk with the network blocked (equations typeset by the local MathJax, no table clipped), the method
notebooks' equations in JupyterLab, and the live explorer of 06_explore. Screenshots of every step go to
reports/screenshots/.

Run by `make test-browser` (and CI after `make test`); `make test` leaves them out. A missing browser or playwright
fails these tests with the command that installs it: they never skip.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from zssbir import paths
from zssbir.study import runs
from zssbir.study.pipeline import load_pipeline, run_pipeline
from zssbir.study.report_index import READING_PATH

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCREENSHOTS = paths.reports_dir() / "screenshots"  # the project's reports/ (resolved before any fixture moves it)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# the small report the page test generates: the data tour, the starting point, the ClusterRetri runs (both starts,
# with and without L_DA), the three method notebooks with their method cards (02, 03, 04: equations), the tables with
# the findings (05 reads the runs' results files), and the 2-D walkthrough
REPORT_STEPS = ["00_data_tour", "00_pretraining", "01_train", "02_distribution_alignment", "03_cluster_analysis",
                "04_dmwa", "05_map_tables", "07_methods_in_2d"]
# pages that must show typeset equations (the method cards, the index's metric primer)
MATH_PAGES = {"index.html", "02_distribution_alignment.html", "03_cluster_analysis.html", "04_dmwa.html"}
METHOD_NOTEBOOKS = ["02_distribution_alignment.ipynb", "03_cluster_analysis.ipynb", "04_dmwa.ipynb"]


def _chromium() -> str:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)
    if not found:
        pytest.fail("Debian's chromium is not installed: `apt-get update && apt-get install -y chromium "
                    "chromium-driver` (.ci/run does this when it is missing)", pytrace=False)
    return found


@contextmanager
def browser_page(width: int = 1400, height: int = 1000):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: `make setup` installs it (a dev dependency), or "
                    "`pip install playwright`", pytrace=False)
    executable = _chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            yield page
        finally:
            browser.close()


def shot(page, name: str, **kwargs) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    target = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(target), **kwargs)
    return target


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------------ page checks
BROKEN_IMAGES_JS = ("() => Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
                    ".map(i => (i.getAttribute('src') || '').slice(0, 80))")
LINKS_JS = "() => Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href'))"
STDERR_JS = ("() => Array.from(document.querySelectorAll('[data-mime-type=\"application/vnd.jupyter.stderr\"]'))"
             ".map(e => e.innerText.slice(0, 120))")
# printed text that is log output rather than a result: per-run log lines, progress bars, logging records, tracebacks
LOG_LINES_JS = r"""() => Array.from(document.querySelectorAll('[data-mime-type="text/plain"]')).map(e => e.innerText)
    .filter(t => /best epoch \d+ of \d+|\d+(\.\d+)?\s?it\/s|^(INFO|WARNING|DEBUG|ERROR)[: ]|Traceback/m.test(t))
    .map(t => t.slice(0, 120))"""
# row labels of tables: the number of line boxes of each header cell's text (1 = not wrapped); a label the page itself
# let wrap to fit its table (a sentence as a label, marked data-zssbir-wrapped by pipeline.FIT_TABLES_JS) must still
# be wide, never one word per line
WRAPPED_JS = """() => Array.from(document.querySelectorAll('table th')).filter(th => {
    const text = th.innerText.trim();
    if (!text || text.indexOf(' ') < 0) return false;
    if (th.hasAttribute('data-zssbir-wrapped')) return th.getBoundingClientRect().width < 200;
    const range = document.createRange(); range.selectNodeContents(th);
    const tops = new Set(Array.from(range.getClientRects()).filter(r => r.width > 0).map(r => Math.round(r.top)));
    return tops.size > 1;
}).map(th => th.innerText.trim().slice(0, 60))"""
# tables wider than what holds them: the table itself (a scroll box on the notebook pages), any ancestor that clips
# or scrolls, and the page (no sideways scrolling)
CLIPPED_JS = """() => {
    const out = [];
    for (const t of document.querySelectorAll('table')) {
        for (let el = t; el && el !== document.body; el = el.parentElement) {
            if (el !== t && getComputedStyle(el).overflowX === 'visible') continue;
            if (el.scrollWidth > el.clientWidth + 1) {
                out.push(`${t.innerText.trim().slice(0, 50).replace(/\\s+/g, ' ')} (${el.tagName.toLowerCase()} ` +
                         `${el.scrollWidth} px in ${el.clientWidth} px)`);
                break;
            }
        }
    }
    const page = document.documentElement;
    if (page.scrollWidth > window.innerWidth + 1)
        out.push(`the page (${page.scrollWidth} px in ${window.innerWidth} px)`);
    return out;
}"""
# MathJax done: started, nothing queued or running
MATHJAX_IDLE_JS = ("() => !!(window.MathJax && MathJax.isReady && MathJax.Hub && MathJax.Hub.queue.pending === 0 "
                   "&& !MathJax.Hub.queue.running)")
# every equation MathJax found is typeset (its output frame exists), none failed
TYPESET_JS = """() => {
    if (!window.MathJax || !MathJax.Hub) return {loaded: false, jax: 0, rendered: 0, errors: 0};
    const jax = MathJax.Hub.getAllJax();
    return {loaded: true, jax: jax.length,
            rendered: jax.filter(j => document.getElementById(j.inputID + '-Frame')).length,
            errors: document.querySelectorAll('.MathJax_Error, merror').length};
}"""
# TeX left as text where a person reads (rendered Markdown, the index): delimiters or commands outside typeset math
RAW_TEX = r"/\$\$|\\(frac|mathrm|sum|mathbb|mathcal|big|tau|beta|le)\b|\$[^$\s][^$]*\$/"
RAW_TEX_JS = r"""() => {
    const RAW_TEX = """ + RAW_TEX + r""";
    const roots = Array.from(document.querySelectorAll('.jp-RenderedMarkdown, body.zssbir-index'));
    const skip = n => n.closest('script, style, code, pre, .MathJax, .MathJax_Display, .MathJax_Preview, table.steps');
    const found = [];
    for (const root of roots) {
        const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
        for (let node = walker.nextNode(); node; node = walker.nextNode()) {
            if (skip(node.parentElement)) continue;
            const text = node.textContent;
            if (text.match(RAW_TEX)) found.push(text.trim().slice(0, 80));
        }
    }
    return found;
}"""


def block_network(page) -> list[str]:
    """Abort every request that leaves the disk (file:, data:, blob: and about: pass); returns the list of the URLs
    the page asked for outside."""
    outside: list[str] = []

    def route(r):
        if r.request.url.startswith(("file:", "data:", "blob:", "about:")):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    return outside


def open_report_page(page, path: Path) -> None:
    """Open a report page from disk and wait for MathJax to finish typesetting it."""
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    try:
        page.wait_for_function(MATHJAX_IDLE_JS, timeout=60_000)
    except Exception:
        raise AssertionError(f"{path.name}: MathJax never finished (does {path.parent / 'assets' / 'mathjax'} hold "
                             "it, loaded through a relative URL?)") from None


def typeset_problems(page, name: str) -> list[str]:
    """Equations not typeset on the page, TeX shown as text, and a page of MATH_PAGES without equations."""
    state = page.evaluate(TYPESET_JS)
    problems = [f"{name}: MathJax did not load" for _ in range(not state["loaded"])]
    if state["rendered"] < state["jax"]:
        problems.append(f"{name}: {state['jax'] - state['rendered']} of {state['jax']} equations not typeset")
    if state["errors"]:
        problems.append(f"{name}: {state['errors']} MathJax errors")
    if name in MATH_PAGES and state["rendered"] < 3:
        problems.append(f"{name}: only {state['rendered']} typeset equations; expected its method card or primer")
    return problems + [f"{name}: TeX shown as text: {text}" for text in page.evaluate(RAW_TEX_JS)]


def check_links(page, path: Path) -> list[str]:
    """Links of a page opened from disk that do not resolve: relative files that are not there, anchors with no
    target (links to other sites are not followed: no network here)."""
    broken = []
    for href in page.evaluate(LINKS_JS):
        if href.startswith(("http://", "https://", "mailto:")):
            continue
        target, _, anchor = href.partition("#")
        if not target:
            if anchor and not page.evaluate("(a) => !!(document.getElementById(a) || document.getElementsByName(a)[0])",
                                            anchor):
                broken.append(f"{path.name}: {href}")
            continue
        if not (path.parent / urllib.parse.unquote(target)).is_file():
            broken.append(f"{path.name}: {href}")
    return broken


def test_report_pages_load_in_a_browser(isolated_dirs):
    """A small report (REPORT_STEPS, tiny parameters), every page opened from disk (file://) with the network blocked:
    index.html opens with the findings (a three-sentence verdict, its caveats, the reading path, the claims, the
    metric primer, the headline table with the seeds said once, the chance level, the figure) and links every page;
    on every page the equations are typeset by the local MathJax (no TeX left as text), no table is clipped or makes
    the page scroll sideways, every image loads, no link is broken, no stderr box shows and no row label wraps; and
    no page asks for anything outside the report folder."""
    out = isolated_dirs / "reports"
    start = time.perf_counter()
    rows = run_pipeline(test=True, out_dir=out, only=REPORT_STEPS, progress=False)
    assert [r["status"] for r in rows] == ["ok"] * len(REPORT_STEPS)
    print(f"report generated in {time.perf_counter() - start:.0f} s")
    problems: list[str] = []
    with browser_page() as page:
        outside = block_network(page)
        open_report_page(page, out / "index.html")
        shot(page, "report_index", full_page=True)
        assert page.locator("h2", has_text="What the study found").count() == 1
        verdict = page.locator("p.verdict").inner_text()
        assert verdict.count(". ") + 1 == 3 and "claims" in verdict, verdict
        caveats = page.locator("ul.caveats").inner_text()
        config = runs.run_config("study/clusterretri.yaml")
        for fact in (f"{config.image_size} px", f"{config.epochs} ClusterRetri", "abstract", "real benchmark"):
            assert fact in caveats.lower() or fact in caveats, f"the caveats do not say {fact!r}: {caveats}"
        assert page.locator("ol.reading-path li").count() == len(READING_PATH)
        assert "prec@200 ≤" in page.locator("ul.primer").inner_text(), "the primer gives no Prec@K ceiling"
        assert page.locator("table.headline tr").count() >= 3, "the headline table has no rows"
        cells = page.locator("table.headline td").all_inner_texts()
        assert "seeds" in page.locator("table.headline caption").inner_text()
        assert sum("seeds" in c for c in cells) < len(cells) / 2, "the seeds are repeated in the cells"
        assert "Chance level" in page.locator("p.chance").inner_text()
        assert page.locator("figure img").count() == 1, "the headline figure is missing"
        linked = {h for h in page.evaluate(LINKS_JS) if h.endswith(".html")}
        assert linked == {f"{s}.html" for s in REPORT_STEPS}
        problems += _page_problems(page, out, linked)
    problems += [f"asked for outside the report folder: {url}" for url in dict.fromkeys(outside)]
    assert not problems, "\n".join(problems)


def _page_problems(page, out: Path, linked: set[str], shots: bool = True) -> list[str]:
    """Every page of the report in ``out`` (index.html and ``linked``): images, links, stderr boxes, wrapped row
    labels, clipped tables and untypeset TeX."""
    problems: list[str] = []
    for name in ["index.html"] + sorted(linked):
        if name != "index.html":
            open_report_page(page, out / name)
            tables = page.locator("table.dataframe")
            if shots:
                shot(page, f"report_{Path(name).stem}")
            if shots and tables.count():  # the first table of the page, for a person to see its row labels
                tables.first.scroll_into_view_if_needed()
                tables.first.screenshot(path=str(SCREENSHOTS / f"report_{Path(name).stem}_table.png"))
        images = page.evaluate("() => document.images.length")
        problems += [f"{name}: image not loaded: {src}" for src in page.evaluate(BROKEN_IMAGES_JS)]
        problems += check_links(page, out / name)
        problems += [f"{name}: stderr box: {text}" for text in page.evaluate(STDERR_JS)]
        problems += [f"{name}: log line: {text}" for text in page.evaluate(LOG_LINES_JS)]
        problems += [f"{name}: wrapped row label: {text}" for text in page.evaluate(WRAPPED_JS)]
        problems += [f"{name}: table clipped: {text}" for text in page.evaluate(CLIPPED_JS)]
        problems += typeset_problems(page, name)
        assert images > 0 or name == "index.html", f"{name} shows no image"
    return problems


@pytest.mark.skipif(not os.environ.get("ZSSBIR_CHECK_REPORT"), reason="set ZSSBIR_CHECK_REPORT to a generated "
                    "report folder (e.g. reports/ after make reports or make reports-full) to check its pages")
def test_a_generated_report_reads_cleanly_in_a_browser():
    """The same page checks on a full report made by make reports or make reports-full (every page that index.html
    links): typeset equations, no clipped table, no stderr box or log line, every image and link, network blocked."""
    out = Path(os.environ["ZSSBIR_CHECK_REPORT"]).resolve()
    with browser_page() as page:
        outside = block_network(page)
        open_report_page(page, out / "index.html")
        assert page.locator("h2", has_text="What the study found").count() == 1
        linked = {h for h in page.evaluate(LINKS_JS) if h.endswith(".html")}
        assert linked, "index.html links no page"
        problems = _page_problems(page, out, linked, shots=False)
    problems += [f"asked for outside the report folder: {url}" for url in dict.fromkeys(outside)]
    print(f"{len(linked)} pages checked in {out}")
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------------------------------ JupyterLab
# the explored run: tiny data from the pretrained start (48 px), trained long enough (a few seconds) that its features
# tell sketches apart; the pipeline's tiny runs (two steps) map every query to almost the same ranking, so a change
# would not show
LAB_RUN = {"dataset": "synthetic_tiny", "epochs": 10, "batch_size": 12, "image_size": 48, "lambda_da": 0.1, "seed": 0}


def _explore_parameters() -> dict:
    """06_explore's tiny test parameters from the pipeline, with LAB_RUN as the explored run, made live."""
    step = next(s for s in load_pipeline() if s.notebook == "06_explore.ipynb")
    return {**step.test_parameters, "overrides": LAB_RUN, "interactive": True}


@contextmanager
def jupyterlab(folder: Path, isolated_dirs: Path, settings: dict | None = None):
    """JupyterLab on 127.0.0.1 with a token, serving ``folder``, with its news and update checks off and the user
    ``settings`` ({"@jupyterlab/<extension>/<plugin>": {...}}) written first; always stopped."""
    settings = {"@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
                **(settings or {})}
    for key, values in settings.items():
        scope, extension, plugin = key.split("/")
        target = isolated_dirs / "lab_settings" / scope / extension / f"{plugin}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values))
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(paths.project_root() / "lib"),
                                                       os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               JUPYTER_RUNTIME_DIR=str(isolated_dirs / "lab_runtime"))
    log = open(isolated_dirs / "lab.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--ip", "127.0.0.1",
                             "--port", str(port), f"--IdentityProvider.token={token}", "--allow-root",
                             f"--ServerApp.root_dir={folder}", f"--LabApp.user_settings_dir={isolated_dirs / 'lab_settings'}",
                             f"--LabApp.workspaces_dir={isolated_dirs / 'lab_workspaces'}"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"JupyterLab did not start; its log:\n{(isolated_dirs / 'lab.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield {"url": f"http://127.0.0.1:{port}", "token": token, "log": isolated_dirs / "lab.log"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


@pytest.fixture
def lab_server(isolated_dirs):
    """JupyterLab serving a folder that holds 06_explore with the tiny parameters injected (papermill, not executed)
    beside tiny trained runs in the temporary ZSSBIR_* folders."""
    import papermill

    params = _explore_parameters()
    for settings, overrides in (("study/clusterretri.yaml", params["overrides"]),
                                ("study/dmwa.yaml", params["dmwa_overrides"])):
        runs.trained_run(runs.run_config(settings, overrides), progress=False)
    folder = isolated_dirs / "lab"
    folder.mkdir()
    papermill.execute_notebook(str(paths.notebooks_dir() / "06_explore.ipynb"), str(folder / "06_explore.ipynb"),
                               parameters=params, prepare_only=True, kernel_name="python3", progress_bar=False)
    with jupyterlab(folder, isolated_dirs) as lab:
        yield lab


# JupyterLab 4 typesets with MathJax 3 (its own copy, served by the lab server): every equation becomes an
# mjx-container, a failed one holds an merror node
LAB_MATH_JS = r"""() => {
    const RAW_TEX = """ + RAW_TEX + r""";
    const md = Array.from(document.querySelectorAll(
        '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-MarkdownCell .jp-RenderedMarkdown'));
    const raw = [];
    for (const root of md) {
        const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
        for (let node = walker.nextNode(); node; node = walker.nextNode()) {
            if (node.parentElement.closest('mjx-container, code, pre, script, style')) continue;
            if (node.textContent.match(RAW_TEX)) raw.push(node.textContent.trim().slice(0, 80));
        }
    }
    return {cells: md.length, math: md.reduce((n, e) => n + e.querySelectorAll('mjx-container').length, 0),
            errors: md.reduce((n, e) => n + e.querySelectorAll('mjx-merror').length, 0), raw};
}"""


def test_method_cards_typeset_in_jupyterlab(isolated_dirs):
    """02, 03 and 04 opened in JupyterLab (not run; every cell rendered: windowing off), with every request outside
    the lab server blocked: the method cards' and exercises' equations are typeset by JupyterLab's MathJax, none
    fails and no TeX is left as text."""
    folder = isolated_dirs / "lab_cards"
    folder.mkdir()
    for name in METHOD_NOTEBOOKS:
        shutil.copy(paths.notebooks_dir() / name, folder / name)
    windowing_off = {"@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"}}
    with jupyterlab(folder, isolated_dirs, windowing_off) as lab, browser_page(1400, 1100) as page:
        outside = []
        page.route("**/*", lambda r: r.continue_() if r.request.url.startswith((lab["url"], "data:", "blob:"))
                   else (outside.append(r.request.url), r.abort()))
        for name in METHOD_NOTEBOOKS:
            page.goto(f"{lab['url']}/lab/tree/{name}?token={lab['token']}")
            page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-MarkdownCell .jp-RenderedMarkdown",
                                   timeout=90_000)
            try:
                page.wait_for_function("() => document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) "
                                       "mjx-container').length >= 10", timeout=60_000)
            except Exception:
                shot(page, f"lab_{Path(name).stem}_failed")
                raise AssertionError(f"{name}: JupyterLab typeset fewer than 10 equations") from None
            page.wait_for_timeout(1000)  # the last cells' typesetting
            state = page.evaluate(LAB_MATH_JS)
            shot(page, f"lab_{Path(name).stem}")
            assert state["errors"] == 0 and not state["raw"], f"{name}: {state}"
            print(f"{name}: {state['math']} equations typeset in {state['cells']} Markdown cells")
    assert not [u for u in outside if not u.startswith("http://127.0.0.1")], outside


def _results(page) -> dict:
    """What the explorer shows now: the texts of both lists and the cell, and the sources of their images."""
    out = {}
    for name in ("exact", "cluster", "cell"):
        out[f"{name}_text"] = page.locator(f".zssbir-{name}-text").inner_text()
        out[f"{name}_image"] = page.locator(f".zssbir-{name}-image").get_attribute("src")
    out["query_image"] = page.locator(".zssbir-query").get_attribute("src")
    out["status"] = page.locator(".zssbir-status").inner_text()
    return out


def _wait_status(page, contains: str, timeout: float = 60.0) -> str:
    """The explorer's status line once it contains ``contains``; fails saying what it shows instead."""
    try:
        page.wait_for_function("([sel, text]) => { const e = document.querySelector(sel); "
                               "return e && e.innerText.includes(text); }", arg=[".zssbir-status", contains],
                               timeout=timeout * 1000)
    except Exception:
        shown = page.locator(".zssbir-status").inner_text() if page.locator(".zssbir-status").count() else None
        raise AssertionError(f"the explorer never showed {contains!r} within {timeout:.0f} s; its status line: "
                             f"{shown!r}") from None
    return page.locator(".zssbir-status").inner_text()


def test_explorer_in_jupyterlab(lab_server):
    """Open 06_explore in JupyterLab, run all cells, change the query, change K (a too large K is refused with the
    largest valid one), draw a stroke on the pad: each time the shown results change. Screenshots of every step."""
    timings = {}
    start = time.perf_counter()
    with browser_page(1400, 1100) as page:
        try:
            _explore(page, lab_server, timings, start)
        except Exception:
            shot(page, "explore_failed")  # what the page showed when it failed
            raise
    print("timings:", {k: round(v, 1) for k, v in timings.items()})


def _explore(page, lab_server: dict, timings: dict, start: float) -> None:
    if True:
        page.goto(f"{lab_server['url']}/lab/tree/06_explore.ipynb?token={lab_server['token']}")
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=90_000)
        # the kernel has started and connected: the status bar says so
        page.wait_for_function("() => /Python 3.*\\|\\s*Idle/.test(document.querySelector('#jp-main-statusbar') "
                               "? document.querySelector('#jp-main-statusbar').innerText : '')", timeout=120_000)
        shot(page, "explore_0_opened")
        for attempt in range(3):  # a click while the kernel is still connecting runs nothing: try again
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
            try:
                page.wait_for_function("() => Array.from(document.querySelectorAll('.jp-CodeCell .jp-InputPrompt'))"
                                       ".some(e => /\\[(\\*|\\d+)\\]/.test(e.innerText))", timeout=20_000)
                break
            except Exception:
                if attempt == 2:
                    raise
        page.wait_for_selector(".zssbir-explorer", timeout=180_000)
        _wait_status(page, "updated in", 120)
        page.wait_for_selector(".zssbir-pair-image img, img.zssbir-pair-image", timeout=120_000)
        timings["open and run all"] = time.perf_counter() - start
        explorer = page.locator(".zssbir-explorer")
        explorer.scroll_into_view_if_needed()
        shot(page, "explore_1_run_all")
        first = _results(page)
        assert "AP" in first["exact_text"] and "AP" in first["cluster_text"] and first["exact_image"]

        # a new query: another class
        step = time.perf_counter()
        page.locator(".zssbir-class select").select_option(index=1)
        status = _wait_status(page, page.locator(".zssbir-class select option").nth(1).inner_text().strip())
        timings["new query"] = time.perf_counter() - step
        second = _results(page)
        assert second["exact_text"] != first["exact_text"] and second["exact_image"] != first["exact_image"], status
        shot(page, "explore_2_new_query")

        # K too large is refused with the largest valid K; a valid K changes the cluster list
        k_box = page.locator(".zssbir-K input")
        k_box.fill("999")
        k_box.press("Enter")
        refused = _wait_status(page, "refused")
        assert "largest valid K is" in refused
        shot(page, "explore_3_k_refused")
        k_box.fill("5")
        k_box.press("Enter")
        page.wait_for_function("() => document.querySelector('.zssbir-cluster-text').innerText.includes('K=5')",
                               timeout=60_000)
        third = _results(page)
        assert third["cluster_text"] != second["cluster_text"]

        # a stroke on the drawing pad becomes the query
        step = time.perf_counter()
        pad = page.locator("canvas.zssbir-canvas, .zssbir-canvas canvas").last
        pad.scroll_into_view_if_needed()
        box = pad.bounding_box()
        x0, y0 = box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.3
        page.mouse.move(x0, y0)
        page.mouse.down()
        for t in range(1, 21):
            page.mouse.move(x0 + box["width"] * 0.6 * t / 20, y0 + box["height"] * 0.4 * (t % 5) / 5)
        page.mouse.up()
        _wait_status(page, "drawing meant as")
        timings["drawing"] = time.perf_counter() - step
        drawn = _results(page)
        assert drawn["query_image"] != third["query_image"], "the drawing is not what the model encoded"
        # the lists are recomputed for the drawn query: even where a stroke retrieves the last query's photos (the
        # test's tiny model can), their scores are the drawn query's own
        assert "updated in" in drawn["status"], drawn["status"]
        assert drawn["exact_text"] != third["exact_text"] and drawn["cluster_text"] != third["cluster_text"], drawn
        explorer.scroll_into_view_if_needed()
        shot(page, "explore_4_drawing")
        explorer.screenshot(path=str(SCREENSHOTS / "explorer_widget.png"))

        # the DMWA pair view: another pair of the weight list shows other scores and another attention map
        pairs = page.locator(".zssbir-pairs")
        pairs.scroll_into_view_if_needed()  # JupyterLab renders cells far off screen lazily
        page.wait_for_function("() => document.querySelector('.zssbir-pair-text').innerText.includes('a_loc')",
                               timeout=30_000)
        before = (page.locator(".zssbir-pair-text").inner_text(), page.locator(".zssbir-pair-image").get_attribute("src"))
        assert "a_loc" in before[0] and "a_glob" in before[0] and "rank" in before[0]
        page.locator(".zssbir-pair select").select_option(index=1)
        page.wait_for_function("([text, src]) => document.querySelector('.zssbir-pair-text').innerText !== text && "
                               "document.querySelector('.zssbir-pair-image').getAttribute('src') !== src",
                               arg=list(before), timeout=60_000)
        after = (page.locator(".zssbir-pair-text").inner_text(), page.locator(".zssbir-pair-image").get_attribute("src"))
        assert after[0].startswith("pair 1") and after[1] != before[1]
        shot(page, "explore_5_dmwa_pair")
