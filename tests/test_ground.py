"""The ground the other tests stand on: the CPU whatever the machine has, the project's own interpreter in
the notebook kernel, seeded draws (conftest.py)."""
from __future__ import annotations

import json
import os
import sys

import nbformat
import torch

from zssbir.runtime import resolve_device


def test_auto_device_is_the_cpu_in_tests_even_where_cuda_or_mps_exist(monkeypatch):
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "" and os.environ["ZSSBIR_DEVICE"] == "cpu"  # conftest.py
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cpu")
    # outside the tests (no ZSSBIR_DEVICE) 'auto' still prefers an accelerator
    monkeypatch.delenv("ZSSBIR_DEVICE")
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setenv("ZSSBIR_DEVICE", "auto")
    assert resolve_device("auto") == torch.device("cuda")


def test_unseeded_draws_start_from_the_same_state():
    """conftest.py seeds python, numpy and torch before every test (here: the same as seed_everything(0))."""
    import random

    import numpy as np

    a = (random.random(), np.random.rand(), torch.rand(1).item())
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    assert a == (random.random(), np.random.rand(), torch.rand(1).item())


def _notebook(path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    params = nbformat.v4.new_code_cell("marker = 0")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "import os, sys\nprint(sys.executable)\nprint(os.environ.get('ZSSBIR_DEVICE'))\nprint(marker)")]
    nbformat.write(nb, path)
    return path


def test_notebook_kernel_runs_this_interpreter_whatever_kernelspec_is_found(tmp_path, monkeypatch):
    """A "python3" kernelspec on JUPYTER_PATH (searched first) that names another interpreter is not used."""
    from zssbir.study.pipeline import run_notebook

    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(tmp_path / "no-such-python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "another Python", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("PATH", os.environ.get("PATH", ""))  # run_notebook prepends to it
    out = tmp_path / "out" / "kernel.ipynb"
    run_notebook(_notebook(tmp_path / "kernel.ipynb"), out, {"marker": 7})
    executed = nbformat.read(out, as_version=4)
    printed = "".join(o.get("text", "") for o in executed.cells[-1].outputs).split()
    assert printed == [sys.executable, "cpu", "7"]
    assert out.with_suffix(".html").is_file()
