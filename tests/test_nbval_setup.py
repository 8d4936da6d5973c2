"""The notebooks committed WITH their outputs (style.md points 14 and 15): the Makefile's NBVAL_NOTEBOOKS, which
`make test` re-runs with nbval and `make outputs` refreshes. They are complete executed notebooks, the sanitize file
hides nothing they compute, and nbval fails when a number they print drifts from the committed one."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from zssbir import paths

ROOT = paths.project_root()
SANITIZE = ROOT / "tests" / "nbval_sanitize.cfg"


def nbval_notebooks() -> list[Path]:
    """The notebooks of the Makefile's ``NBVAL_NOTEBOOKS`` (the one list of them)."""
    found = re.search(r"^NBVAL_NOTEBOOKS := (.+)$", (ROOT / "Makefile").read_text(), flags=re.MULTILINE)
    assert found, "the Makefile defines no NBVAL_NOTEBOOKS"
    return [ROOT / name for name in found.group(1).split()]


def sanitize_patterns() -> list[tuple[str, str]]:
    from nbval.plugin import get_sanitize_patterns

    return get_sanitize_patterns(SANITIZE.read_text(encoding="utf-8"))


def compared_texts(nb) -> list[str]:
    """Every output text nbval compares (stream text and each text MIME type; images are not compared)."""
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out += [o["text"]] if o["output_type"] == "stream" else \
                [v for k, v in o.get("data", {}).items() if k.startswith("text/")]
    return out


def test_the_makefile_checks_exactly_the_notebooks_kept_with_outputs():
    make = (ROOT / "Makefile").read_text()
    kept = sorted(p.name for p in paths.notebooks_dir().glob("*.ipynb")
                  if nbformat.read(p, as_version=4).metadata.get("keep_output"))
    assert kept == sorted(p.name for p in nbval_notebooks()), "metadata keep_output and NBVAL_NOTEBOOKS disagree"
    nbval = re.search(r"^NBVAL := (.+?)(?<!\\)$", make, flags=re.MULTILINE | re.DOTALL).group(1)
    assert "--nbval " in nbval and "--nbval-current-env" in nbval and "--nbval-sanitize-with tests/nbval_sanitize.cfg" \
        in nbval
    for target in ("test", "outputs"):
        recipe = re.search(rf"^{target}:.*?\n((?:\t.*\n)+)", make, flags=re.MULTILINE).group(1)
        assert "$(NBVAL) $(NBVAL_NOTEBOOKS)" in recipe, f"make {target} does not run nbval on NBVAL_NOTEBOOKS"
    assert "filter-out $(NBVAL_NOTEBOOKS)" in re.search(r"^strip:.*\n\t(.*)", make, flags=re.MULTILINE).group(1)


@pytest.mark.parametrize("notebook", nbval_notebooks(), ids=lambda p: p.name)
def test_kept_notebooks_are_executed_in_order_and_end_with_their_conclusion(notebook):
    nb = nbformat.read(notebook, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), \
        f"{notebook.name}: not run top to bottom in one kernel: `make outputs`"
    for cell in code:
        kinds = [o["output_type"] for o in cell.outputs]
        assert "error" not in kinds and not any(o.get("name") == "stderr" for o in cell.outputs), cell.source[:80]
        figures = [o for o in cell.outputs if "text/plain" in o.get("data", {})
                   and o["data"]["text/plain"].startswith("<Figure size")]
        assert all("image/png" in o["data"] for o in figures)
    assert all(c.outputs for c in code[2:]), "a cell after the imports and parameters shows nothing"
    assert nb.cells[-1].cell_type == "code" and any("text/markdown" in o.get("data", {}) for o in nb.cells[-1].outputs), \
        f"{notebook.name} does not end with its conclusion (Markdown computed from the results)"


def test_the_sanitize_file_hides_only_what_varies_between_runs():
    patterns = sanitize_patterns()
    assert len(patterns) == 4

    def clean(text: str) -> str:
        for regex, replace in patterns:
            text = re.sub(regex, replace, text)
        return text

    assert clean("<Foo object at 0x7f3a2b1c9d00>") == "<Foo object at 0xADDRESS>"
    assert clean("encoded in 12.3 s, scored in 850 ms") == "encoded in TIME, scored in TIME"
    assert clean("results written to /tmp/pytest-7/runs/results/a.json") == "results written to PATH"
    assert clean("step 3\n 45%|████▌     | 9/20 [00:01<00:01,  8.10it/s]") == "step 3PROGRESS"
    kept = "<Figure size 1300x360 with 3 Axes> in 200 steps, 0x2 grid, tau 0.05, M = 2, 1/D = 0.12, </details>"
    assert clean(kept) == kept
    for notebook in nbval_notebooks():  # the committed outputs: every number they show is compared as shown
        for text in compared_texts(nbformat.read(notebook, as_version=4)):
            assert clean(text) == text, f"{notebook.name}: the sanitize file would hide part of {text[:120]!r}"


@pytest.mark.slow
def test_nbval_fails_when_a_printed_number_drifts(tmp_path):
    """The planted failure: 07 with one default changed (lda_steps 200 -> 199) and its committed outputs kept, as a
    change to the code without `make outputs` would leave it. nbval must fail the cells whose numbers changed (the L_DA
    sentence says "in 199 steps") and pass the others."""
    source = paths.notebooks_dir() / "07_methods_in_2d.ipynb"
    nb = nbformat.read(source, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert re.search(r"^lda_steps = 200 ", cell.source, flags=re.MULTILINE)
    cell.source = re.sub(r"^lda_steps = 200 ", "lda_steps = 199 ", cell.source, flags=re.MULTILINE)
    drifted = tmp_path / source.name
    nbformat.write(nb, drifted)
    env = {**os.environ, "MPLBACKEND": "module://matplotlib_inline.backend_inline"}  # as the Makefile's NBVAL
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval",
                          "--nbval-current-env", "--nbval-sanitize-with", str(SANITIZE), str(drifted)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-2000:]
    assert "Cell outputs differ" in run.stdout and "in 199 steps" in run.stdout
    counts = re.search(r"^(\d+) failed, (\d+) passed", run.stdout.splitlines()[-1])
    assert counts and int(counts.group(2)) > 0, run.stdout[-500:]  # the cells that do not use lda_steps still pass
