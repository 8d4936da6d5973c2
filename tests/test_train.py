"""The training loop on the tiny synthetic set: it steps and learns on its schedule, selects the best epoch as
configured, composes ClusterRetri batches, distils, autocasts where asked, resumes from (only) its
checkpoint, refuses mismatches, and trains in two DDP processes as one process would."""
import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from zssbir.training import loop
from zssbir.training.config import TrainConfig
from zssbir.models.clusterretri import ClusterRetri
from zssbir.training.loop import load_trained, train

from conftest import interrupt_forward
from ddp_worker import record_forward

TINY = dict(dataset="synthetic_tiny", image_size=32, embed_dim=32, batch_size=12, epochs=2, max_steps_per_epoch=3,
            backbone_params={"width": 32, "depth": 1, "heads": 2, "stem_channels": (8, 16, 32)}, augment=True)


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_unknown_parameter_is_refused():
    with pytest.raises(ValueError, match=r"unknown training parameters \['epoch'\]"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match="teacher_weights"):
        TrainConfig(lambda_kd=1.0)


def test_interrupted_run_resumes_to_the_same_weights(isolated_dirs, monkeypatch):
    config = TrainConfig(**TINY)
    full = train(config, run_dir=isolated_dirs / "full", progress=False)
    assert len(full.history) == 2 and (isolated_dirs / "full" / "best.pt").is_file()
    assert all(torch.isfinite(torch.tensor(h["loss_total"])) for h in full.history)

    restore = interrupt_forward(monkeypatch, ClusterRetri, 5)  # step 2 of epoch 2
    with pytest.raises(KeyboardInterrupt):
        train(config, run_dir=isolated_dirs / "cut", progress=False)
    restore()
    checkpoint = torch.load(isolated_dirs / "cut" / "checkpoint.pt", weights_only=False)
    assert checkpoint["epoch"] == 0
    # a copy of the checkpoint with other weights: resuming from it must end elsewhere
    (isolated_dirs / "perturbed").mkdir()
    perturbed = copy.deepcopy(checkpoint)
    perturbed["model"]["classifier.weight"] += 0.5
    torch.save(perturbed, isolated_dirs / "perturbed" / "checkpoint.pt")

    seen: list = []
    record_forward(ClusterRetri, seen, monkeypatch.setattr)
    resumed = train(config, run_dir=isolated_dirs / "cut", progress=False)
    assert len(seen) == 3  # only epoch 2's three steps: a run started again would take six
    assert [h["epoch"] for h in resumed.history] == [0, 1]
    assert same(weights(resumed.model), weights(full.model))
    from_perturbed = train(config, run_dir=isolated_dirs / "perturbed", progress=False)
    assert len(seen) == 6 and not same(weights(from_perturbed.model), weights(full.model))
    delta = from_perturbed.model.classifier.weight - full.model.classifier.weight
    assert delta.mean().item() == pytest.approx(0.5, abs=0.05)  # three small Adam steps after the +0.5

    # a finished run is reloaded from its checkpoint, not trained: its weights are the checkpoint's
    final = torch.load(isolated_dirs / "full" / "checkpoint.pt", weights_only=False)
    final["model"]["classifier.bias"] -= 1.0
    torch.save(final, isolated_dirs / "full" / "checkpoint.pt")
    reloaded = train(config, run_dir=isolated_dirs / "full", progress=False)
    assert len(seen) == 6 and reloaded.history == full.history
    assert torch.equal(reloaded.model.classifier.bias, full.model.classifier.bias - 1.0)


def test_resume_refuses_other_parameters(isolated_dirs):
    config = TrainConfig(**{**TINY, "epochs": 1})
    train(config, run_dir=isolated_dirs / "r", progress=False)
    with pytest.raises(ValueError, match=r"other parameters \(lr: 0.002 -> 0.01\)"):
        train(TrainConfig(**{**TINY, "epochs": 1, "lr": 1e-2}), run_dir=isolated_dirs / "r", progress=False)
    again = train(TrainConfig(**{**TINY, "epochs": 1, "lr": 1e-2}), run_dir=isolated_dirs / "r", resume=False,
                  progress=False)
    assert len(again.history) == 1
    model, loaded = load_trained(isolated_dirs / "r")
    assert loaded.lr == 1e-2 and same(weights(model), weights(again.model))  # one epoch: best = last


@pytest.mark.parametrize("method", ["clusterretri", "dmwa"])
def test_ddp_two_processes_on_cpu(isolated_dirs, method):
    cfg = isolated_dirs / "ddp.yaml"
    extra = {"method": "dmwa", "lambda_da": 0.0, "batch_size": 16} if method == "dmwa" else {}
    cfg.write_text(yaml.safe_dump({**TINY, "epochs": 1, **extra,
                                   "backbone_params": {**TINY["backbone_params"], "stem_channels": [8, 16, 32]}}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "zssbir.cli", "train", "--config", str(cfg), "--run-dir", str(isolated_dirs / "ddp"),
                          "--quiet"], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    state = torch.load(isolated_dirs / "ddp" / "checkpoint.pt", weights_only=False)
    assert state["epoch"] == 0 and len(state["history"]) == 1 and state["config"]["method"] == method


def test_evaluate_command_scores_a_run_and_writes_results(isolated_dirs, capsys):
    from zssbir import cli
    from zssbir.study.results import load_results

    run = isolated_dirs / "runs" / "train" / "tiny"
    train(TrainConfig(**{**TINY, "epochs": 1}), run_dir=run, progress=False)
    assert cli.main(["evaluate", str(run), "--cluster", "1", "3", "adc", "--label", "tiny run"]) == 0
    records = {r["name"]: r for r in load_results(isolated_dirs / "runs" / "results")}
    assert set(records) == {"tiny__exact", "tiny__cluster"}
    assert records["tiny__cluster"]["params"]["retrieval"] == {"kind": "cluster", "M": 1, "K": 3, "variant": "adc"}
    assert records["tiny__exact"]["params"]["label"] == "tiny run, exact"
    assert "map@all" in capsys.readouterr().out
    assert cli.main(["evaluate", str(run), "--cluster", "1", "3", "nearest"]) == 2
    assert "variant" in capsys.readouterr().err
