"""Shared fixtures. Tests run offline on the CPU, seeded, and write only into temporary folders."""
from __future__ import annotations

import os

# the CPU, whatever the machine or the environment says: CUDA is hidden (before torch is imported), and
# device "auto" means "cpu" (runtime.resolve_device reads ZSSBIR_DEVICE; subprocesses inherit both)
os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ["ZSSBIR_DEVICE"] = "cpu"

import pytest
from PIL import Image

from zssbir.data.lists import Entry, write_class_ids, write_list
from zssbir.runtime import seed_everything


@pytest.fixture(autouse=True)
def seeded():
    """Every test starts from the same python, numpy and torch random states (seed 0), so a draw a test
    does not seed itself still gives the same numbers on every run and in any test order."""
    seed_everything(0)


@pytest.fixture
def isolated_dirs(tmp_path, monkeypatch):
    """Point every ZSSBIR_* folder at a temporary one."""
    for env, sub in [("ZSSBIR_DATA", "data"), ("ZSSBIR_REPORTS", "reports"), ("ZSSBIR_CACHE", "cache"),
                     ("ZSSBIR_RUNS", "runs")]:
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(env, str(tmp_path / sub))
    return tmp_path


def fabricate_sketchy_style(root, seen=("cat", "hot air balloon"), unseen=("teddy bear",), per_class=2, size=24):
    """A minimal tree in the layout of the `synthetic` benchmark, with spaces in class names."""
    lists = {k: [] for k in ("train", "test", "zero", "ptrain", "pzero")}
    for classes, photo_key, sketch_keys in ((seen, "ptrain", ("train", "test")), (unseen, "pzero", ("zero", "zero"))):
        for label, cls in enumerate(classes):
            for i in range(per_class):
                pid = f"{cls.replace(' ', '_')}_{i:04d}"
                photo = f"photo/tx_000000000000_ready/{cls}/{pid}.jpg"
                sketch = f"sketch/tx_000000000000_ready/{cls}/{pid}-1.png"
                for rel, colour in ((photo, (200, 30 * label, 90)), (sketch, (255, 255, 255))):
                    (root / rel).parent.mkdir(parents=True, exist_ok=True)
                    Image.new("RGB", (size, size), colour).save(root / rel)
                lists[photo_key].append(Entry(photo, label))
                lists[sketch_keys[i % 2]].append(Entry(sketch, label))
    z = root / "zeroshot"
    write_class_ids(z / "cname_cid.txt", list(seen))
    write_class_ids(z / "cname_cid_zero.txt", list(unseen))
    for key, name in [("train", "sketch_tx_000000000000_ready_filelist_train.txt"),
                      ("test", "sketch_tx_000000000000_ready_filelist_test.txt"),
                      ("zero", "sketch_tx_000000000000_ready_filelist_zero.txt"),
                      ("ptrain", "all_photo_filelist_train.txt"), ("pzero", "all_photo_filelist_zero.txt")]:
        write_list(z / name, lists[key])
    return root


def interrupt_forward(monkeypatch, model_cls, at_call: int, method: str = "forward"):
    """Make ``model_cls.<method>`` raise KeyboardInterrupt on its ``at_call``-th call (a killed run);
    returns a function that restores it."""
    calls, original = {"n": 0}, getattr(model_cls, method)

    def crash(self, *args):
        calls["n"] += 1
        if calls["n"] == at_call:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(model_cls, method, crash)
    return lambda: monkeypatch.setattr(model_cls, method, original)


def count_worker_starts(monkeypatch) -> list[str]:
    """The class of the Dataset of every multi-process loader iterator created from now on (each starts its
    workers): a test counts worker start-ups by the entries of the returned list."""
    from torch.utils.data import dataloader

    starts, original = [], dataloader._MultiProcessingDataLoaderIter.__init__

    def init(self, loader_, *args, **kwargs):
        starts.append(type(loader_.dataset).__name__)
        return original(self, loader_, *args, **kwargs)

    monkeypatch.setattr(dataloader._MultiProcessingDataLoaderIter, "__init__", init)
    return starts
