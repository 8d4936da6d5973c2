"""Thread counts (issue 24): the CPU budget from affinity and cgroup quota, its overrides, configure_threads, the
k-means thread count held around a fit (same results on any count), and the contention bench's smoke run."""
import os
import subprocess
import sys

import faiss
import numpy as np
import pytest
import torch

from zssbir import paths, runtime
from zssbir.eval.cluster_retrieval import ClusterIndex


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv(runtime.THREADS_ENV, raising=False)
    monkeypatch.delenv(runtime.KMEANS_THREADS_ENV, raising=False)


@pytest.fixture
def restore_threads(monkeypatch):
    """torch's and faiss's thread counts and the process's configuration, as they were before the test."""
    torch_before, faiss_before = torch.get_num_threads(), faiss.omp_get_max_threads()
    monkeypatch.setattr(runtime, "_CONFIGURED", runtime._CONFIGURED)
    yield
    faiss.omp_set_num_threads(faiss_before)
    torch.set_num_threads(torch_before)


@pytest.fixture
def four_cpus(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)


def budget(root, self_cgroup=None, n=None):
    return runtime.thread_budget(n, cgroup_root=root, self_cgroup=self_cgroup or root / "no-such-file")


@pytest.mark.parametrize("text, threads, source", [("150000 100000", 2, "cgroup quota"),
                                                   ("50000 100000", 1, "cgroup quota"),
                                                   ("max 100000", 4, "affinity"),
                                                   ("800000 100000", 4, "affinity")])
def test_cgroup_v2_quota_caps_the_affinity(tmp_path, four_cpus, text, threads, source):
    (tmp_path / "cpu.max").write_text(text + "\n")
    b = budget(tmp_path)
    assert (b["threads"], b["source"], b["affinity"]) == (threads, source, 4)
    assert runtime.cpu_budget(cgroup_root=tmp_path, self_cgroup=tmp_path / "none") == threads


@pytest.mark.parametrize("quota, threads", [("250000", 3), ("-1", 4), ("100000", 1)])
def test_cgroup_v1_quota(tmp_path, four_cpus, quota, threads):
    for mount in ("cpu", "cpu,cpuacct"):
        (tmp_path / mount).mkdir()
    (tmp_path / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text(quota + "\n")
    (tmp_path / "cpu,cpuacct" / "cpu.cfs_period_us").write_text("100000\n")
    b = budget(tmp_path)
    assert b["threads"] == threads
    assert b["cgroup_quota"] == (None if quota == "-1" else int(quota) / 100000)


def test_the_process_cgroup_and_its_parents_are_read(tmp_path, four_cpus):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "cpu.max").write_text("max 100000")
    (tmp_path / "a" / "cpu.max").write_text("120000 100000")  # the parent's quota holds its children
    (tmp_path / "self").write_text("0::/a/b\n")
    assert budget(tmp_path, tmp_path / "self")["threads"] == 2
    (tmp_path / "self").write_text("3:cpu,cpuacct:/a/b\n")  # a v1 line: the v1 mount holds no such folder
    assert budget(tmp_path, tmp_path / "self")["threads"] == 4


def test_no_cgroup_files_and_no_affinity(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    (tmp_path / "cpu.max").write_text("garbage")
    assert (budget(tmp_path)["threads"], budget(tmp_path)["source"]) == (3, "os.cpu_count")


def test_env_and_argument_override(tmp_path, four_cpus, monkeypatch):
    (tmp_path / "cpu.max").write_text("150000 100000")
    monkeypatch.setenv(runtime.THREADS_ENV, " 7 ")
    assert (budget(tmp_path)["threads"], budget(tmp_path)["source"]) == (7, "env ZSSBIR_THREADS")
    assert (budget(tmp_path, n=3)["threads"], budget(tmp_path, n=3)["source"]) == (3, "argument")
    for unset in ("", "auto"):
        monkeypatch.setenv(runtime.THREADS_ENV, unset)
        assert budget(tmp_path)["threads"] == 2


@pytest.mark.parametrize("raw", ["abc", "0", "-2", "1.5", "2 threads"])
def test_a_bad_env_value_is_a_one_line_error(monkeypatch, raw):
    monkeypatch.setenv(runtime.THREADS_ENV, raw)
    with pytest.raises(ValueError, match="ZSSBIR_THREADS") as err:
        runtime.cpu_budget()
    assert "\n" not in str(err.value) and repr(raw) in str(err.value)
    monkeypatch.delenv(runtime.THREADS_ENV)
    monkeypatch.setenv(runtime.KMEANS_THREADS_ENV, raw)
    with pytest.raises(ValueError, match="ZSSBIR_KMEANS_THREADS"):
        runtime.kmeans_threads()


@pytest.mark.parametrize("n", [0, -1, True, 1.5, "2"])
def test_a_bad_argument_is_refused(n):
    with pytest.raises(ValueError, match="positive int"):
        runtime.cpu_budget(n)


def test_configure_threads_sets_torch_and_faiss(restore_threads):
    info = runtime.configure_threads(1, kmeans=2)
    assert torch.get_num_threads() == 1 and faiss.omp_get_max_threads() == 1
    assert (info["threads"], info["source"], info["torch"], info["faiss"]) == (1, "argument", 1, 1)
    assert (info["kmeans_threads"], info["kmeans_source"], runtime.kmeans_threads()) == (2, "argument", 2)
    line = runtime.describe_threads(info)
    assert "\n" not in line and "torch 1" in line and "k-means fits 2" in line
    info = runtime.configure_threads()
    assert info["threads"] == runtime.cpu_budget() == torch.get_num_threads()
    assert info["kmeans_threads"] == runtime.KMEANS_THREADS == 1


def test_the_lazy_configuration_never_raises_torchs_count(restore_threads, monkeypatch):
    monkeypatch.setattr(runtime, "_CONFIGURED", None)
    torch.set_num_threads(1)
    info = runtime.ensure_threads_configured()
    assert torch.get_num_threads() == 1 and info["threads"] == runtime.cpu_budget()
    assert runtime.thread_settings()["configured"] and info["kmeans_threads"] == 1
    torch.set_num_threads(2)
    runtime.ensure_threads_configured()  # once per process: sets nothing now
    assert torch.get_num_threads() == 2


def test_openmp_threads_holds_and_restores(restore_threads):
    torch.set_num_threads(2)
    faiss.omp_set_num_threads(2)
    with runtime.openmp_threads(1):
        assert torch.get_num_threads() == 1 and faiss.omp_get_max_threads() == 1
    assert torch.get_num_threads() == 2 and faiss.omp_get_max_threads() == 2
    with runtime.openmp_threads(None):
        assert torch.get_num_threads() == 2
    assert runtime.openmp_shared() in (True, False) and faiss.omp_get_max_threads() == 2  # the probe restores


def test_kmeans_results_do_not_depend_on_the_thread_count(restore_threads):
    g = np.random.default_rng(0).standard_normal((600, 64)).astype(np.float32)
    fits = {}
    for k in (1, 2):
        runtime.configure_threads(2, kmeans=k)
        fits[k] = [ClusterIndex.fit(g, M, K) for M in (1, 4) for K in (8, 32)]
        assert torch.get_num_threads() == 2  # the fit's own count is held around it, then restored
    for a, b in zip(fits[1], fits[2]):
        assert np.array_equal(a.centroids, b.centroids) and np.array_equal(a.codes, b.codes)


@pytest.mark.slow
def test_contention_bench_quick_runs():
    root = paths.project_root()
    out = subprocess.run([sys.executable, str(root / "bench" / "bench_contention.py"), "--quick"], cwd=root,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "threads: budget" in out.stdout and "goal: k-means slowed by no more than 3x" in out.stdout
    assert "busy/quiet" in out.stdout
