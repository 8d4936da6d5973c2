"""Issue 12, point 3: a broken image never costs a completed epoch. The epoch is checkpointed before its validation;
an unreadable image stops the run with a short message naming the file and the fix; after the fix (or with
``unreadable_images=skip``) the run resumes without training its completed epochs again."""
import json

import pytest
import torch
import yaml

from fabricate_real import break_file
from zssbir.cli import main
from zssbir.data.datasets import UnreadableImageError, load_split
from zssbir.data.tools import ensure_dataset
from zssbir.models.clusterretri import ClusterRetri
from zssbir.training.config import TrainConfig
from zssbir.training.loop import train

TINY = dict(dataset="synthetic_tiny", image_size=32, embed_dim=32, batch_size=12, epochs=2, max_steps_per_epoch=3,
            backbone_params={"width": 32, "depth": 1, "heads": 2, "stem_channels": [8, 16, 32]}, augment=True)


@pytest.fixture
def forward_calls(monkeypatch):
    """How many training steps ran (validation embeds, it never calls forward)."""
    calls, original = {"n": 0}, ClusterRetri.forward

    def counted(self, batch):
        calls["n"] += 1
        return original(self, batch)

    monkeypatch.setattr(ClusterRetri, "forward", counted)
    return calls


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_truncated_validation_image_keeps_the_epoch_and_the_run_resumes(isolated_dirs, forward_calls, capsys):
    ensure_dataset("synthetic_tiny")
    config = TrainConfig(**TINY)
    full = train(config, run_dir=isolated_dirs / "full", progress=False)  # the uninterrupted reference
    forward_calls["n"] = 0
    victim = load_split("synthetic_tiny", "val", "sketch").path(3)
    good = victim.read_bytes()
    break_file(victim, "truncated")

    run = isolated_dirs / "cut"
    with pytest.raises(UnreadableImageError) as err:
        train(config, run_dir=run, progress=False)
    text = str(err.value)
    for words in (f"cannot read image {victim}", "sketch_tx_000000000000_ready_filelist_test.txt",
                  "`zssbir data verify synthetic_tiny`", "--set unreadable_images=skip",
                  "while validating epoch 1 (its training is saved)", str(run / "checkpoint.pt"), "resumes"):
        assert words in text, words
    assert forward_calls["n"] == 3  # epoch 1's three steps ran
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert state["epoch"] == 0 and state["validated"] is False and len(state["history"]) == 1

    # the command line reports it in a few lines, and retrying before the fix trains nothing again
    cfg = isolated_dirs / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    assert main(["train", "--config", str(cfg), "--run-dir", str(run), "--quiet"]) == 2
    out = capsys.readouterr().err
    assert victim.name in out and "unreadable_images=skip" in out and "Traceback" not in out
    assert len(out.strip().splitlines()) <= 3
    assert forward_calls["n"] == 3

    victim.write_bytes(good)  # the fix: a good copy of the file
    resumed = train(config, run_dir=run, progress=False)
    assert forward_calls["n"] == 6, "completed epochs were trained again"
    assert [h["epoch"] for h in resumed.history] == [0, 1]
    assert [h["val_map@all"] for h in resumed.history] == [h["val_map@all"] for h in full.history]
    assert resumed.best_epoch == full.best_epoch and (run / "best.pt").is_file()
    assert _same(resumed.model.state_dict(), full.model.state_dict())  # as if nothing had happened
    assert json.loads((run / "history.json").read_text()) == resumed.history
    assert torch.load(run / "checkpoint.pt", weights_only=False)["validated"] is True


def test_skip_resumes_a_stopped_run_and_records_what_it_left_out(isolated_dirs, forward_calls, capsys, caplog):
    ensure_dataset("synthetic_tiny")
    victim = load_split("synthetic_tiny", "val", "sketch").path(0)
    break_file(victim, "empty")
    run = isolated_dirs / "run"
    with pytest.raises(UnreadableImageError):
        train(TrainConfig(**TINY), run_dir=run, progress=False)
    assert forward_calls["n"] == 3
    skip = TrainConfig(**TINY, unreadable_images="skip")
    result = train(skip, run_dir=run, progress=False)  # the same run: the option does not change its identity
    assert forward_calls["n"] == 6 and [h["epoch"] for h in result.history] == [0, 1]
    assert result.unreadable == {victim.relative_to(victim.parents[3]).as_posix(): "val sketch"}
    assert [h["unreadable_images"] for h in result.history] == [1, 1]
    record = json.loads((run / "unreadable_images.json").read_text())
    assert record["count"] == 1 and record["policy"] == "skip" and list(record["files"]) == list(result.unreadable)
    assert torch.load(run / "checkpoint.pt", weights_only=False)["unreadable"] == result.unreadable
    assert f"left out 1 more unreadable image(s) (1 in all, listed in {run / 'unreadable_images.json'}): " \
           f"{next(iter(result.unreadable))}" in capsys.readouterr().err
    assert any("unreadable image left out" in r.message and str(victim) in r.message and "empty file" in r.message
               for r in caplog.records)


@pytest.mark.parametrize("workers", [0, 1])
def test_unreadable_training_images_stop_or_are_skipped(isolated_dirs, capsys, workers):
    ensure_dataset("synthetic_tiny")
    photos = load_split("synthetic_tiny", "train", "photo")
    broken = [photos.path(i) for i in range(1, 6)]  # five of balloon's six photos; the first one is sound
    for path, how in zip(broken, ("truncated", "empty", "text", "truncated", "empty")):
        break_file(path, how)
    cfg = isolated_dirs / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "num_workers": workers}))
    run = isolated_dirs / "run"
    assert main(["train", "--config", str(cfg), "--run-dir", str(run), "--quiet"]) == 2
    out = capsys.readouterr().err
    assert "cannot read image" in out and "all_photo_filelist_train.txt" in out and "Traceback" not in out
    assert "in epoch 1's training steps; no epoch was completed yet" in out
    assert len(out.strip().splitlines()) <= 3

    assert main(["train", "--config", str(cfg), "--run-dir", str(run), "--quiet",
                 "--set", "unreadable_images=skip"]) == 0
    out = capsys.readouterr().out
    assert "5 unreadable images were left out" in out and "unreadable_images.json" in out
    record = json.loads((run / "unreadable_images.json").read_text())
    assert sorted(record["files"]) == sorted(p.relative_to(photos.info.root).as_posix() for p in broken)
    history = json.loads((run / "history.json").read_text())
    assert [h["unreadable_images"] for h in history] == [5, 5]
