"""Issue 24: scoring on the device. The torch ranking path (score blocks and ranks where the scores are, e.g. on
CUDA) gives the numpy path's ranks, tie-group ends and metric values bit for bit, under every tie policy, metric,
convention and preset, on data full of exact ties; ``evaluate_features`` keeps today's numpy path on the CPU.

The same comparison runs on CUDA when there is one (``test_same_results_on_cuda``: in a subprocess, since
conftest hides CUDA from this process)."""
from __future__ import annotations

import functools
import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from zssbir.eval import exact_search
from zssbir.eval.exact_search import device_block_size, evaluate_features, score_blocks, scoring_device
from zssbir.eval.metrics import (AP_FLAVOURS, AVERAGES, MAP_K_DENOMINATORS, PREC_K_DENOMINATORS, PRESETS, evaluate,
                                 tie_group_ends)
from zssbir.eval.relevant_ranks import iter_rank_blocks, label_index, rank_positions
from zssbir.runtime import torch_threads

METRICS = ("map@all", "map@1", "map@7", "map@50", "map@100000", "prec@1", "prec@7", "prec@50", "prec@100000")
CONVENTIONS = [{"preset": p} for p in PRESETS] + [
    {"ap": a, "map_k_denominator": m, "prec_k_denominator": p, "average": v}
    for a, m, p, v in itertools.product(AP_FLAVOURS, MAP_K_DENOMINATORS, PREC_K_DENOMINATORS, AVERAGES)]
TIES = ({"ties": "stable"}, {"ties": "random", "seed": 5}, {"ties": "secondary"})
# what the CUDA test compares under (device time is short): the presets and each AP flavour and averaging
CUDA_CONVENTIONS = [c for c in CONVENTIONS if "preset" in c] + [{"ap": a} for a in AP_FLAVOURS] + [{"average": "class"}]


@pytest.fixture(autouse=True)
def one_thread():
    """Many tiny torch calls: on two shared cores a second intra-op thread only waits (restored afterwards)."""
    with torch_threads(1):
        yield


def problems(seed: int = 0) -> list[tuple]:
    """(name, scores (Q, N), secondary (Q, N), query labels, gallery labels): ties of every kind."""
    rng = np.random.default_rng(seed)
    out = []
    q, n = 40, 90
    ql, gl = rng.integers(0, 4, q), rng.integers(0, 4, n)
    feats_q = rng.standard_normal((q, 8)).astype(np.float32)
    feats_g = rng.standard_normal((n // 2, 8)).astype(np.float32)
    dup_g = np.concatenate([feats_g, feats_g])  # every photo twice: exact ties between distinct items
    sec32 = np.round(rng.standard_normal((q, n)), 1).astype(np.float32)
    sec64 = np.round(rng.standard_normal((q, n)), 1)  # float64 not exact in float32: the lexsort path
    out.append(("gaussian", rng.standard_normal((q, n)).astype(np.float32), sec32, ql, gl))
    out.append(("duplicate gallery rows", feats_q @ dup_g.T, sec32, ql, np.concatenate([gl[:n // 2]] * 2)))
    out.append(("quantised float32", np.round(rng.standard_normal((q, n)), 1).astype(np.float32), sec64, ql, gl))
    out.append(("quantised float64", np.round(rng.standard_normal((q, n)), 1), sec32, ql, gl))
    out.append(("all tied", np.zeros((q, n), np.float32), sec32, ql, gl))
    signed = rng.integers(-2, 3, (q, n)).astype(np.float32) * np.where(rng.random((q, n)) < 0.5, -1.0, 1.0)
    out.append(("signed zeros", signed.astype(np.float32), sec32, ql, gl))  # -0.0 and +0.0 tie
    out.append(("integers", rng.integers(-3, 4, (q, n)), sec32, ql, gl))
    order = np.argsort(ql, kind="stable")  # queries sorted by class: the block rows of a class are a view
    out.append(("sorted queries", np.round(rng.standard_normal((q, n)), 1).astype(np.float32)[order], sec32[order],
                ql[order], gl))
    return out


def _same(a: dict, b: dict, where: str) -> None:
    assert a.keys() == b.keys(), where
    for name in a:
        assert np.array_equal(a[name].per_query, b[name].per_query, equal_nan=True), f"{where}: {name}"
        assert a[name].value == b[name].value or (np.isnan(a[name].value) and np.isnan(b[name].value)), where
        assert a[name].convention == b[name].convention, where


def compare_backends(device: str, seed: int = 0, conventions: list[dict] = CONVENTIONS) -> int:
    """The numpy path against the torch path on ``device`` (scores given as tensors there): ranks, tie-group ends
    and every metric under ``conventions``; then ``evaluate_features`` end to end on features whose scores are
    exact on any device. Returns the number of comparisons (raises on the first difference)."""
    dev = torch.device(device)
    checks = 0
    for name, scores, sec, ql, gl in problems(seed):
        on_dev = torch.as_tensor(scores).to(dev)
        sec_dev = torch.as_tensor(sec).to(dev)
        for tie, hib in itertools.product(TIES, (True, False)):
            kw = dict(tie, higher_is_better=hib, block_size=7)
            if tie["ties"] == "secondary":
                kw.update(secondary_higher_is_better=not hib)
            numpy_ranks = rank_positions(scores, ql, gl, secondary=sec if tie["ties"] == "secondary" else None, **kw)
            torch_ranks = rank_positions(on_dev, ql, gl, secondary=sec_dev if tie["ties"] == "secondary" else None,
                                         backend="torch", **kw)
            for a, b in zip(numpy_ranks, torch_ranks):
                assert a.dtype == b.dtype == np.int64 and np.array_equal(a, b), f"{name} {kw}"
            checks += 1
            for conv in conventions:
                secondary = {"secondary": sec} if tie["ties"] == "secondary" else {}
                a = evaluate(scores, ql, gl, metrics=METRICS, skip_missing=True, **secondary, **conv, **kw)
                secondary = {"secondary": sec_dev} if tie["ties"] == "secondary" else {}
                b = evaluate(on_dev, ql, gl, metrics=METRICS, skip_missing=True, rank_backend="torch", **secondary,
                             **conv, **kw)
                _same(a, b, f"{name} {kw} {conv}")
                checks += 1
    # end to end: integer features with Euclidean distances, and one-hot features with cosine scores (0 or 1),
    # are computed exactly on any device, so the device's evaluate_features equals the CPU's numpy path
    rng = np.random.default_rng(seed)
    ints_q, ints_g = rng.integers(-3, 4, (300, 16)).astype(np.float32), rng.integers(-3, 4, (700, 16)).astype(np.float32)
    hot_q = np.eye(16, dtype=np.float32)[rng.integers(0, 16, 300)] * rng.integers(1, 5, (300, 1))
    hot_g = np.eye(16, dtype=np.float32)[rng.integers(0, 16, 700)] * rng.integers(1, 5, (700, 1))
    ql, gl = rng.integers(0, 6, 300), rng.integers(0, 6, 700)
    for (q, g, metric, normalize), conv, tie in itertools.product(
            [(ints_q, ints_g, "euclidean", False), (hot_q, hot_g, "cosine", True)],
            [{"preset": p} for p in PRESETS], TIES[:2]):
        a = evaluate_features(q, g, ql, gl, metric=metric, normalize=normalize, device="cpu", metrics=METRICS,
                              **conv, **tie)
        for block_size in (None, 64):
            b = evaluate_features(q, g, ql, gl, metric=metric, normalize=normalize, device=dev, rank_backend="torch",
                                  block_size=block_size, metrics=METRICS, **conv, **tie)
            _same(a, b, f"evaluate_features {metric} {conv} {tie} block {block_size}")
            checks += 1
    if dev.type == "cuda":  # a larger problem, several blocks, quantised scores: the same score matrix on both paths
        scores = np.round(rng.standard_normal((4000, 30000)), 2).astype(np.float32)
        ql, gl = rng.integers(0, 25, 4000), rng.integers(0, 25, 30000)
        on_dev = torch.as_tensor(scores).to(dev)
        for tie in TIES[:2]:
            a = evaluate(scores, ql, gl, preset="clusterretri", metrics=METRICS, **tie)
            b = evaluate(on_dev, ql, gl, preset="clusterretri", metrics=METRICS, rank_backend="torch",
                         block_size=1500, **tie)
            _same(a, b, f"large {tie}")
            checks += 1
    return checks


# ---------------------------------------------------------------------------------------------- CPU
@pytest.mark.parametrize("case", range(len(problems())), ids=[p[0] for p in problems()])
@pytest.mark.parametrize("tie", TIES, ids=[t["ties"] for t in TIES])
@pytest.mark.parametrize("hib", [True, False], ids=["higher first", "smaller first"])
def test_torch_ranks_and_tie_groups_equal_numpy(case, tie, hib):
    name, scores, sec, ql, gl = problems()[case]
    kw = dict(tie, higher_is_better=hib)
    if tie["ties"] == "secondary":
        kw.update(secondary=sec, secondary_higher_is_better=hib)
    for block_size in (1, 7, 1024):
        a = rank_positions(scores, ql, gl, block_size=block_size, **kw)
        b = rank_positions(scores, ql, gl, block_size=block_size, backend="torch", device="cpu", **kw)
        assert all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a, b)), (name, block_size)
    labels = label_index(ql, gl)
    for rb in iter_rank_blocks(scores, labels, block_size=9, backend="torch", tie_groups=True, **kw):
        assert len(rb.upper) == len(rb.groups)
        for (rows, ranks), upper in zip(rb.groups, rb.upper):
            expected = tie_group_ends(np.asarray(scores)[rows], labels.relevant[labels.query_codes[rows[0]]], hib)
            assert np.array_equal(upper, expected) and upper.shape == ranks.shape


@pytest.mark.parametrize("conv", CONVENTIONS, ids=[str(c) for c in CONVENTIONS])
def test_every_metric_and_convention_equal_numpy(conv):
    for name, scores, sec, ql, gl in problems(1):
        for tie in TIES:
            secondary = {"secondary": sec} if tie["ties"] == "secondary" else {}
            a = evaluate(scores, ql, gl, metrics=METRICS, block_size=11, **secondary, **tie, **conv)
            b = evaluate(scores, ql, gl, metrics=METRICS, block_size=11, rank_backend="torch", **secondary, **tie,
                         **conv)
            _same(a, b, f"{name} {tie} {conv}")


def test_missing_classes_and_string_labels_equal_numpy():
    rng = np.random.default_rng(2)
    scores = np.round(rng.standard_normal((30, 50)), 1).astype(np.float32)
    ql = np.array(["cat", "dog", "owl"])[rng.integers(0, 3, 30)]
    gl = np.array(["cat", "dog"])[rng.integers(0, 2, 50)]  # no owl in the gallery
    for preset in PRESETS:
        a = evaluate(scores, ql, gl, metrics=METRICS, preset=preset, skip_missing=True)
        b = evaluate(scores, ql, gl, metrics=METRICS, preset=preset, skip_missing=True, rank_backend="torch")
        _same(a, b, preset)
        assert np.isnan(b["map@all"].per_query[ql == "owl"]).all()
    with pytest.raises(ValueError, match="owl"):
        evaluate(scores, ql, gl, rank_backend="torch")


def test_torch_path_takes_tensors_of_any_real_dtype():
    rng = np.random.default_rng(3)
    ql, gl = rng.integers(0, 3, 12), rng.integers(0, 3, 20)
    base = rng.integers(-4, 5, (12, 20))
    for t in (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int32, torch.int64):
        x = torch.as_tensor(base).to(t)
        a = rank_positions(x, ql, gl, ties="random", seed=0)
        b = rank_positions(x, ql, gl, ties="random", seed=0, backend="torch")
        assert all(np.array_equal(u, v) for u, v in zip(a, b)), t


def test_cpu_default_is_the_numpy_path(monkeypatch):
    """On the CPU, evaluate_features ranks with numpy as before; rank_backend='torch' forces the torch path."""
    calls = []
    original = exact_search.score_blocks

    def spy(*args, **kwargs):
        calls.append(kwargs.get("device"))
        return original(*args, **kwargs)

    import zssbir.eval.device_ranks as rr
    torch_blocks = []
    monkeypatch.setattr(exact_search, "score_blocks", spy)
    monkeypatch.setattr(rr.TorchRanker, "rank_block",
                        lambda self, *a, _f=rr.TorchRanker.rank_block: torch_blocks.append(1) or _f(self, *a))
    rng = np.random.default_rng(4)
    q, g = rng.standard_normal((20, 8)), rng.standard_normal((30, 8))
    ql, gl = rng.integers(0, 3, 20), rng.integers(0, 3, 30)
    a = evaluate_features(q, g, ql, gl)
    assert calls == [None] and torch_blocks == []  # device "auto" is the CPU here (conftest): numpy, as before
    b = evaluate_features(q, g, ql, gl, rank_backend="torch")
    assert calls[-1] == torch.device("cpu") and torch_blocks
    _same(a, b, "cpu")
    assert scoring_device("auto") == torch.device("cpu") and device_block_size(5000, 100, torch.device("cpu")) == 1024


def test_bad_input_says_what_to_do():
    rng = np.random.default_rng(5)
    scores = rng.standard_normal((6, 9)).astype(np.float32)
    ql, gl = rng.integers(0, 2, 6), rng.integers(0, 2, 9)
    scores[4, 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf \(first at query 4, gallery item 2\)"):
        evaluate(scores, ql, gl, rank_backend="torch")
    with pytest.raises(ValueError, match="rank_backend"):
        evaluate(np.zeros((6, 9)), ql, gl, rank_backend="cupy")
    with pytest.raises(ValueError, match="numpy' ranks on the CPU"):
        evaluate(np.zeros((6, 9)), ql, gl, device="cuda")
    with pytest.raises(ValueError, match="tie_groups=True needs backend='torch'"):
        list(iter_rank_blocks(np.zeros((6, 9)), label_index(ql, gl), tie_groups=True))
    q = rng.standard_normal((6, 4))
    with pytest.raises(RuntimeError, match="CUDA is not available; use device='auto'"):
        evaluate_features(q, q, ql, ql, device="cuda")  # no GPU here: runtime.resolve_device says so
    with pytest.raises(ValueError, match="rank_backend='numpy' ranks on the CPU"):
        evaluate_features(q, q, ql, ql, device=torch.device("cuda"), rank_backend="numpy")


def test_score_blocks_on_a_device_equal_the_cpu_blocks():
    rng = np.random.default_rng(6)
    q, g = rng.standard_normal((10, 5)), rng.standard_normal((13, 5))
    for metric in ("cosine", "euclidean"):
        a = [s.clone() for _, _, s in score_blocks(q, g, metric=metric, block_size=4)]
        b = [s.clone() for _, _, s in score_blocks(q, g, metric=metric, block_size=4, reuse_buffer=True, device="cpu")]
        assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_compare_backends_on_cpu():
    """The function the CUDA test runs (every convention there), here on the CPU with the presets and each AP
    flavour (test_every_metric_and_convention_equal_numpy has every convention on the CPU)."""
    assert compare_backends("cpu", conventions=[c for c in CONVENTIONS if "preset" in c] + [{"ap": "exact"}]) > 250


# --------------------------------------------------------------------------------------------- CUDA
def _cuda_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "ZSSBIR_DEVICE")}


@functools.lru_cache(maxsize=1)
def _cuda_present() -> bool:
    """Whether a CUDA GPU is there once conftest's CUDA_VISIBLE_DEVICES="" is lifted (a subprocess probe, only where
    an NVIDIA device file exists)."""
    if torch.cuda.is_available():
        return True
    if not any(Path("/dev").glob("nvidia[0-9]*")):
        return False
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                           env=_cuda_env(), capture_output=True, text=True, timeout=300)
    return probe.stdout.strip().endswith("True")


@pytest.mark.slow
@pytest.mark.skipif(not _cuda_present(), reason="no CUDA GPU (torch.cuda.is_available() in a subprocess)")
def test_same_results_on_cuda():
    """compare_backends on CUDA: the scores of every problem moved to the GPU, ranked there, against numpy."""
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_gpu_paths as t; "
            "print('checks', t.compare_backends('cuda', conventions=t.CUDA_CONVENTIONS))")
    run = subprocess.run([sys.executable, "-c", code], env=_cuda_env(), capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert int(run.stdout.split()[-1]) > 300


# ------------------------------------------------------------------------------------- extraction
@pytest.fixture
def tiny_photos(isolated_dirs):
    from zssbir.data.datasets import load_split
    from zssbir.data.tools import ensure_dataset
    from zssbir.data.transforms import build_transform

    ensure_dataset("synthetic_tiny")
    return load_split("synthetic_tiny", "zero", "photo", transform=build_transform("photo", 32))


def _encoder():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 4))
    return model, (lambda x, d: model(x))


def test_extraction_on_the_cpu_is_as_before(tiny_photos, monkeypatch):
    """CPU: batch 128, no workers, float32, and a cache key without a precision field (old caches stay valid)."""
    from torch.utils import data as tud

    from zssbir.training import features

    seen = {}
    original = tud.DataLoader.__init__

    def spy(self, dataset, batch_size=1, *args, **kwargs):
        seen.update(batch_size=batch_size, **kwargs)
        original(self, dataset, batch_size, *args, **kwargs)

    monkeypatch.setattr(tud.DataLoader, "__init__", spy)
    model, encode = _encoder()
    feats = features.extract(encode, tiny_photos)
    assert seen["batch_size"] == 128 and seen["num_workers"] == 0 and not seen["pin_memory"]
    with torch.no_grad():
        expected = model(torch.stack([tiny_photos[i]["image"] for i in range(len(tiny_photos))]))
    np.testing.assert_allclose(feats, expected.numpy(), rtol=1e-6, atol=1e-6)
    assert feats.dtype == np.float32
    assert features.extraction_batch_size("cpu") == 128 and features.extraction_precision("cpu") is None
    assert "precision" not in features.cache_key("m", tiny_photos)
    monkeypatch.setenv("ZSSBIR_EXTRACT_BATCH", "7")
    assert features.extraction_batch_size("cpu") == 7
    monkeypatch.setenv("ZSSBIR_EXTRACT_BATCH", "lots")
    with pytest.raises(ValueError, match="ZSSBIR_EXTRACT_BATCH must be a positive integer"):
        features.extraction_batch_size("cpu")


def test_autocast_extraction_is_float32_out_and_keyed_by_its_dtype(tiny_photos, monkeypatch, isolated_dirs):
    """The CUDA branch (autocast in runtime.amp_dtype) run on the CPU's bfloat16 autocast: float32 features close
    to the float32 ones, and a cache entry of its own."""
    from zssbir.training import features

    model, encode = _encoder()
    plain, _ = features.cached_features(encode, model, tiny_photos, cache_dir=isolated_dirs / "cache")
    monkeypatch.setattr(features, "amp_dtype", lambda device: torch.bfloat16)
    calls = []
    original = torch.autocast.__init__

    def spy(self, device_type, *args, **kwargs):
        calls.append((device_type, kwargs.get("dtype")))
        original(self, device_type, *args, **kwargs)

    monkeypatch.setattr(torch.autocast, "__init__", spy)
    low, _ = features.cached_features(encode, model, tiny_photos, cache_dir=isolated_dirs / "cache")
    assert ("cpu", torch.bfloat16) in calls and low.dtype == np.float32
    assert not np.array_equal(low, plain) and np.allclose(low, plain, atol=0.05)  # computed again, in bf16
    assert len(list((isolated_dirs / "cache").glob("*.npz"))) == 2
    assert features.cache_key("m", tiny_photos, precision="bfloat16")["precision"] == "bfloat16"
    off, _ = features.cached_features(encode, model, tiny_photos, cache_dir=isolated_dirs / "cache", amp=False)
    assert np.array_equal(off, plain)  # amp=False: the float32 entry


def test_extraction_on_cuda_without_a_gpu_says_so(tiny_photos):
    from zssbir.training import features

    _, encode = _encoder()
    with pytest.raises(RuntimeError, match="CUDA is not available; use device='auto'"):
        features.extract(encode, tiny_photos, device="cuda")
