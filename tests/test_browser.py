"""What a person sees, checked in a real browser (headless Debian Chromium driven by playwright): the report pages,
and the live explorer of 06_explore in JupyterLab. Screenshots of every step go to reports/screenshots/.

Run by `make test-browser` (and CI after `make test`); `make test` leaves them out. A missing browser or playwright
fails these tests with the command that installs it: they never skip.
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from zssbir import paths
from zssbir.study import runs
from zssbir.study.pipeline import load_pipeline, run_pipeline

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCREENSHOTS = paths.reports_dir() / "screenshots"  # the project's reports/ (resolved before any fixture moves it)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# the small report the page test generates: the data tour, the starting point, the ClusterRetri runs (both starts,
# with and without L_DA), the tables with the findings (05 reads the runs' results files), and the 2-D walkthrough
REPORT_STEPS = ["00_data_tour", "00_pretraining", "01_train", "05_map_tables", "07_methods_in_2d"]


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


@contextmanager
def static_server(folder: Path):
    """A quiet HTTP server of ``folder`` on the loopback address (a missing file answers 404)."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            pass  # the browser closing a connection early is not a failure of the page

    server = Server(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------------------------------ page checks
BROKEN_IMAGES_JS = ("() => Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
                    ".map(i => (i.getAttribute('src') || '').slice(0, 80))")
LINKS_JS = "() => Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href'))"
STDERR_JS = ("() => Array.from(document.querySelectorAll('[data-mime-type=\"application/vnd.jupyter.stderr\"]'))"
             ".map(e => e.innerText.slice(0, 120))")
# row labels of tables: the number of line boxes of each header cell's text (1 = not wrapped)
WRAPPED_JS = """() => Array.from(document.querySelectorAll('table th')).filter(th => {
    const text = th.innerText.trim();
    if (!text || text.indexOf(' ') < 0) return false;
    const range = document.createRange(); range.selectNodeContents(th);
    const tops = new Set(Array.from(range.getClientRects()).filter(r => r.width > 0).map(r => Math.round(r.top)));
    return tops.size > 1;
}).map(th => th.innerText.trim().slice(0, 60))"""


def check_links(page, base: str, here: str) -> list[str]:
    """Links of the page that do not resolve: files that the server does not have, anchors with no target."""
    broken = []
    for href in page.evaluate(LINKS_JS):
        if href.startswith(("http://", "https://", "mailto:")) and not href.startswith(base):
            continue  # outside links: no network here
        if href.startswith("#"):
            anchor = href[1:]
            if anchor and not page.evaluate("(a) => !!(document.getElementById(a) || document.getElementsByName(a)[0])",
                                            anchor):
                broken.append(f"{here}: {href}")
            continue
        url = href if href.startswith("http") else f"{base}/{href.split('#')[0]}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                ok = response.status == 200
        except Exception:
            ok = False
        if not ok:
            broken.append(f"{here}: {href}")
    return broken


def test_report_pages_load_in_a_browser(isolated_dirs):
    """A small report (REPORT_STEPS, tiny parameters): index.html opens with the findings (headline table, figure,
    claims, chance level) and links every page; every image of every page loads, no link is broken, no page shows a
    stderr box and no table row label wraps."""
    out = isolated_dirs / "reports"
    start = time.perf_counter()
    rows = run_pipeline(test=True, out_dir=out, only=REPORT_STEPS, progress=False)
    assert [r["status"] for r in rows] == ["ok"] * len(REPORT_STEPS)
    print(f"report generated in {time.perf_counter() - start:.0f} s")
    problems: list[str] = []
    with static_server(out) as base, browser_page() as page:
        page.goto(f"{base}/index.html")
        page.wait_for_load_state("load")
        shot(page, "report_index", full_page=True)
        assert page.locator("h2", has_text="What the study found").count() == 1
        assert page.locator("table.headline tr").count() >= 3, "the headline table has no rows"
        assert "Chance level" in page.locator("p.chance").inner_text()
        assert page.locator("figure img").count() == 1, "the headline figure is missing"
        linked = [h for h in page.evaluate(LINKS_JS) if h.endswith(".html")]
        assert sorted(linked) == sorted(f"{s}.html" for s in REPORT_STEPS)
        pages = ["index.html"] + linked
        for name in pages:
            if name != "index.html":
                page.goto(f"{base}/{name}")
                page.wait_for_load_state("load")
                shot(page, f"report_{Path(name).stem}")
                tables = page.locator("table.dataframe")
                if tables.count():  # the first table of the page, for a person to see its row labels
                    tables.first.scroll_into_view_if_needed()
                    tables.first.screenshot(path=str(SCREENSHOTS / f"report_{Path(name).stem}_table.png"))
            images = page.evaluate("() => document.images.length")
            problems += [f"{name}: image not loaded: {src}" for src in page.evaluate(BROKEN_IMAGES_JS)]
            problems += check_links(page, base, name)
            problems += [f"{name}: stderr box: {text}" for text in page.evaluate(STDERR_JS)]
            problems += [f"{name}: wrapped row label: {text}" for text in page.evaluate(WRAPPED_JS)]
            assert images > 0 or name == "index.html", f"{name} shows no image"
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


@pytest.fixture
def lab_server(isolated_dirs):
    """JupyterLab on 127.0.0.1 with a token, serving a folder that holds 06_explore with the tiny parameters
    injected (papermill, not executed) beside tiny trained runs in the temporary ZSSBIR_* folders; always stopped."""
    import papermill

    params = _explore_parameters()
    for settings, overrides in (("study/clusterretri.yaml", params["overrides"]),
                                ("study/dmwa.yaml", params["dmwa_overrides"])):
        runs.trained_run(runs.run_config(settings, overrides), progress=False)
    folder = isolated_dirs / "lab"
    folder.mkdir()
    papermill.execute_notebook(str(paths.notebooks_dir() / "06_explore.ipynb"), str(folder / "06_explore.ipynb"),
                               parameters=params, prepare_only=True, kernel_name="python3", progress_bar=False)
    settings_dir = isolated_dirs / "lab_settings" / "@jupyterlab" / "apputils-extension"
    settings_dir.mkdir(parents=True)
    (settings_dir / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
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
