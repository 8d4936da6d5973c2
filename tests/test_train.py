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
from zssbir.training import batches as training_batches
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


BATCH_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def launch_ddp(folder: Path, settings: dict) -> list[dict]:
    """`zssbir train` in two torchrun processes (tests/ddp_worker.py); returns what each rank recorded."""
    (folder / "ranks").mkdir()
    (folder / "ddp.yaml").write_text(yaml.safe_dump(settings))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ZSSBIR_TEST_DDP_OUT": str(folder / "ranks")}
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(Path(__file__).with_name("ddp_worker.py")), "train", "--config", str(folder / "ddp.yaml"),
                          "--run-dir", str(folder / "ddp"), "--quiet"], capture_output=True, text=True, timeout=300,
                         env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return [torch.load(folder / "ranks" / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


def positive_photos(batch: dict, method: str) -> list[str]:
    """The photos a rank's batch is built around (its shard): ClusterRetri's photo rows; DMWA's positive
    photos (the second quarter; its negatives are drawn from all photos on every rank)."""
    if method == "dmwa":
        p = len(batch["pair_id"]) // 4
        return batch["pair_id"][p:2 * p]
    return [pid for pid, d in zip(batch["pair_id"], batch["domain"]) if d == 1]


DDP_SETTINGS = {
    # the BN-free tiny CLIP tower, no augmentation and no L_DA noise: two half batches then give exactly the
    # gradient of the whole batch, so the result can be compared with one process
    "clusterretri": {**TINY, "backbone": "clip:zssbir-tiny-vit", "backbone_params": {}, "augment": False,
                     "lambda_da": 0.0, "epochs": 1},
    "dmwa": {**TINY, "method": "dmwa", "lambda_da": 0.0, "batch_size": 16, "epochs": 1,
             "backbone_params": {**TINY["backbone_params"], "stem_channels": [8, 16, 32]}},
}


@pytest.mark.parametrize("method", ["clusterretri", "dmwa"])
def test_ddp_two_processes_on_cpu(isolated_dirs, monkeypatch, method):
    """Both ranks train (three steps each, on disjoint photos), their gradients are averaged (the same
    parameters on both ranks at the end; only BatchNorm's running statistics are per rank: DDP broadcasts
    rank 0's at each forward, and rank 0's are saved) and rank 0 writes the checkpoint. ClusterRetri also
    matches one process on the same global batches: the two ranks' images, step by step, are the
    one-process batch, and every parameter agrees within 1e-4, except the key third of the attention
    in_proj_bias, whose gradient is zero in exact arithmetic (softmax ignores a shift shared by all keys)
    so Adam's normalisation turns float rounding into steps of up to lr there."""
    settings = DDP_SETTINGS[method]
    ranks = launch_ddp(isolated_dirs, settings)
    assert sorted(r["rank"] for r in ranks) == [0, 1] and all(r["world"] == 2 for r in ranks)
    assert [r["forward_calls"] for r in ranks] == [3, 3]
    shards = [{pid for batch in r["batches"] for pid in positive_photos(batch, method)} for r in ranks]
    assert len(shards[0]) == len(shards[1]) > 1 and not shards[0] & shards[1]
    a, b = ranks[0]["state"], ranks[1]["state"]
    shared = [k for k in a if not k.endswith(BATCH_STATISTICS)]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in shared)
    state = torch.load(isolated_dirs / "ddp" / "checkpoint.pt", weights_only=False)
    assert state["epoch"] == 0 and len(state["history"]) == 1 and state["config"]["method"] == method
    assert same(state["model"], a)
    if method != "clusterretri":
        return

    one: list = []
    record_forward(ClusterRetri, one, monkeypatch.setattr)
    initial = spy_initial_weights(monkeypatch)
    single = train(TrainConfig(**settings), run_dir=isolated_dirs / "single", progress=False).model.state_dict()
    assert len(one) == 3
    for step in range(3):
        together = ranks[0]["batches"][step]["pair_id"] + ranks[1]["batches"][step]["pair_id"]
        assert sorted(together) == sorted(one[step]["pair_id"])
    moved = max((v - initial[k]).abs().max().item() for k, v in single.items() if v.is_floating_point())
    assert moved > 2e-3  # training moved the weights far more than the tolerance
    for k, v in single.items():
        got, want = a[k], v
        if k.endswith("attn.in_proj_bias"):
            width = v.shape[0] // 3
            got, want = torch.cat([got[:width], got[2 * width:]]), torch.cat([want[:width], want[2 * width:]])
        assert (got.double() - want.double()).abs().max().item() < 1e-4, k


def test_evaluate_command_scores_a_run_and_writes_results(isolated_dirs, capsys):
    from zssbir import cli
    from zssbir.study.results import load_results

    run = isolated_dirs / "runs" / "train" / "tiny"
    train(TrainConfig(**{**TINY, "epochs": 1}), run_dir=run, progress=False)
    assert cli.main(["evaluate", str(run), "--cluster", "1", "3", "adc", "--label", "tiny run"]) == 0
    records = {r["name"]: r for r in load_results(isolated_dirs / "runs" / "results")}
    assert set(records) == {"tiny__exact", "tiny__cluster", "tiny__cluster_stable"}  # M = 1: both tie orders
    assert records["tiny__cluster"]["params"]["retrieval"] == {"kind": "cluster", "M": 1, "K": 3, "variant": "adc",
                                                               "kmeans_seeds": 5}
    assert records["tiny__cluster_stable"]["params"]["retrieval"]["ties"] == "stable"
    assert len(records["tiny__cluster"]["metrics"]["map@all"]["per_kmeans_seed"]) == 5
    assert records["tiny__exact"]["params"]["label"] == "tiny run, exact"
    assert "map@all" in capsys.readouterr().out
    assert cli.main(["evaluate", str(run), "--cluster", "1", "3", "nearest"]) == 2
    assert "variant" in capsys.readouterr().err


# ---------------------------------------------------------------- training trains
def spy_initial_weights(monkeypatch) -> dict:
    """Capture the state dict of the model ``train`` builds, as built (before any step)."""
    captured = {}

    def build(config, class_names):
        model = build_model(config, class_names)
        captured.update({k: v.clone() for k, v in model.state_dict().items()})
        return model

    build_model = loop.build_model
    monkeypatch.setattr(loop, "build_model", build)
    return captured


def spy_steps(monkeypatch) -> list:
    """The learning rate of every Adam step taken."""
    lrs, original = [], torch.optim.Adam.step

    def step(self, *args, **kwargs):
        lrs.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    return lrs


def test_training_steps_on_its_schedule_changes_weights_and_lowers_the_loss(isolated_dirs, monkeypatch):
    """Three epochs of three steps: nine optimiser steps at lr * lr_final_factor ** (e / epochs) in epoch e
    (recorded in the history and used by the optimiser); every trained parameter moves; the loss of the
    first training batch is lower under the trained weights than under the initial ones; no autocast on
    the CPU (amp=True is ignored there, runtime.amp_dtype)."""
    config = TrainConfig(**{**TINY, "epochs": 3, "lr": 3e-3, "lr_final_factor": 0.1})
    initial, lrs, batches = spy_initial_weights(monkeypatch), spy_steps(monkeypatch), []
    original_forward = ClusterRetri.forward

    def forward(self, batch):
        batches.append({**batch, "autocast": torch.is_autocast_enabled("cpu")})
        return original_forward(self, batch)

    monkeypatch.setattr(ClusterRetri, "forward", forward)
    result = train(config, run_dir=isolated_dirs / "run", progress=False)

    schedule = [3e-3 * 0.1 ** (e / 3) for e in range(3)]
    assert [h["lr"] for h in result.history] == pytest.approx(schedule, rel=1e-12)
    assert lrs == pytest.approx([lr for lr in schedule for _ in range(3)], rel=1e-12)
    assert not any(b["autocast"] for b in batches) and config.amp

    final = result.model.state_dict()
    trained = [n for n, p in result.model.named_parameters() if p.requires_grad]
    unchanged = [n for n in trained if torch.equal(final[n], initial[n])]
    assert unchanged == []

    first = batches[0]
    monkeypatch.setattr(ClusterRetri, "forward", original_forward)
    model = result.model.train()
    with torch.no_grad():
        after = model(first)["ce"].item()
        model.load_state_dict(initial)
        before = model(first)["ce"].item()
    assert after < before - 0.05, (before, after)
    assert result.history[-1]["loss_ce"] < result.history[0]["loss_ce"]


@pytest.mark.parametrize("selection, split, best", [("seen_val", "val", 1), ("unseen_test", "zero", 1),
                                                    ("last", "val", 2)])
def test_best_epoch_follows_the_selection(isolated_dirs, monkeypatch, selection, split, best):
    """Validation scores 0.2, 0.5, 0.3 over three epochs: seen_val and unseen_test keep epoch 1 (on their
    own split), last keeps epoch 2; best.pt holds the weights the model had when that epoch was scored."""
    scores, snapshots = [0.2, 0.5, 0.3], []

    def score(model, config, data, device, split_name):
        assert split_name == split and set(data) == {(split, "sketch"), (split, "photo")}
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return scores[len(snapshots) - 1]

    monkeypatch.setattr(loop, "validation_score", score)
    config = TrainConfig(**{**TINY, "epochs": 3, "max_steps_per_epoch": 1, "selection": selection})
    result = train(config, run_dir=isolated_dirs / selection, progress=False)
    assert [h["val_map@all"] for h in result.history] == scores and result.best_epoch == best
    saved = torch.load(isolated_dirs / selection / "best.pt", weights_only=False)
    assert (saved["epoch"], saved["score"], saved["selection"]) == (best, scores[best], selection)
    assert same(saved["model"], snapshots[best]) and not same(saved["model"], snapshots[best - 1])
    model, _ = load_trained(isolated_dirs / selection)
    assert same(weights(model), snapshots[best])


class Items(torch.utils.data.Dataset):
    """n items of one domain: image = [index], label = index % 3, pair_id = '<domain><index>'."""

    def __init__(self, n, domain):
        self.n, self.domain = n, domain

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"image": torch.tensor([float(i)]), "label": i % 3, "domain": self.domain,
                "pair_id": f"{'sp'[self.domain]}{i}"}


def composed(config, epoch=0, rank=0, world=1, n_photo=24, n_sketch=5):
    data = {"photo": Items(n_photo, 1), "sketch": Items(n_sketch, 0)}
    steps, batches = training_batches.mixed_batches(data, config, epoch, rank, world)
    return steps, list(batches)


def test_clusterretri_batches_hold_their_share_of_sketches_which_cycle():
    """batch 12, sketch_fraction 1/3: 4 sketches then 8 photos per batch; 24 photos make 3 steps, each photo
    once; 5 sketches fill one batch of 4 (drop_last), so every step starts a fresh, reshuffled cycle."""
    config = TrainConfig(**{**TINY, "max_steps_per_epoch": None, "batch_size": 12, "sketch_fraction": 1 / 3})
    steps, batches = composed(config)
    assert steps == len(batches) == 3
    for b in batches:
        assert b["domain"].tolist() == [0] * 4 + [1] * 8 and len(b["image"]) == len(b["label"]) == 12
        assert all(p.startswith("s") for p in b["pair_id"][:4]) and all(p.startswith("p") for p in b["pair_id"][4:])
        assert len(set(b["pair_id"][:4])) == 4  # within a batch no sketch twice
    photos = [p for b in batches for p in b["pair_id"][4:]]
    assert sorted(photos) == sorted(f"p{i}" for i in range(24))  # an epoch is one pass over the photos
    sketch_sets = [frozenset(b["pair_id"][:4]) for b in batches]
    assert len(set(sketch_sets)) > 1  # new cycles are drawn afresh, not the same four again
    assert [b["pair_id"] for b in composed(config)[1]] == [b["pair_id"] for b in batches]  # seeded
    assert [b["pair_id"] for b in composed(config, epoch=1)[1]] != [b["pair_id"] for b in batches]

    half = TrainConfig(**{**TINY, "max_steps_per_epoch": 2, "batch_size": 12, "sketch_fraction": 0.5})
    steps, batches = composed(half, n_sketch=40)
    assert steps == len(batches) == 2 and all(b["domain"].tolist() == [0] * 6 + [1] * 6 for b in batches)
    with pytest.raises(ValueError, match="exceeds the 5 training photos"):
        composed(config, n_photo=5)


def test_clusterretri_batches_split_over_ranks_as_one_global_batch():
    """Two ranks: 2 sketches + 4 photos each; together, step by step, the images of the one-process batch."""
    config = TrainConfig(**{**TINY, "max_steps_per_epoch": None, "batch_size": 12})
    _, one = composed(config, n_sketch=30)
    ranks = [composed(config, rank=r, world=2, n_sketch=30)[1] for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(one) == 3
    for step, b in enumerate(one):
        parts = [ranks[r][step] for r in (0, 1)]
        assert all(p["domain"].tolist() == [0, 0, 1, 1, 1, 1] for p in parts)
        assert not set(parts[0]["pair_id"]) & set(parts[1]["pair_id"])
        assert sorted(parts[0]["pair_id"] + parts[1]["pair_id"]) == sorted(b["pair_id"])


# ---------------------------------------------------------------- SAKE distillation through train()
@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    """A random ImageNet SE-ResNet50 classifier saved in timm's key layout (what build_imagenet_teacher reads)."""
    from zssbir.models.cse_resnet import SEResNet50Teacher

    torch.manual_seed(3)
    teacher = SEResNet50Teacher()
    sd = {k.removeprefix("trunk."): v for k, v in teacher.state_dict().items()
          if k != "trunk.stride_in_1x1" and not k.endswith("domain_weight")}
    path = tmp_path_factory.mktemp("teacher") / "seresnet50_timm.pt"
    torch.save(sd, path)
    return path, sd


def test_sake_distillation_trains_through_the_loop(isolated_dirs, monkeypatch, teacher_file):
    """ClusterRetri with SAKE's distillation on the CSE-ResNet50: the teacher comes from the file and stays
    frozen, the kd term is logged and enters the total (total = ce + lambda_da da + lambda_kd kd per step),
    and the student's ImageNet head trains."""
    path, sd = teacher_file
    config = TrainConfig(dataset="synthetic_tiny", backbone="cse_resnet50", image_size=32, embed_dim=32, batch_size=12,
                         epochs=1, max_steps_per_epoch=2, lambda_kd=2.0, teacher_weights=str(path),
                         kd_temperature=2.0, augment=False)
    initial = spy_initial_weights(monkeypatch)
    result = train(config, run_dir=isolated_dirs / "sake", progress=False)
    [h] = result.history
    assert h["loss_kd"] > 0 and math.isfinite(h["loss_kd"])
    assert h["loss_total"] == pytest.approx(h["loss_ce"] + 0.1 * h["loss_da"] + 2.0 * h["loss_kd"], rel=1e-5)
    model = result.model
    assert model.kd_temperature == 2.0
    assert torch.equal(model.teacher.fc.weight, sd["fc.weight"])
    assert torch.equal(model.teacher.trunk.layer3[1].conv2.weight, sd["layer3.1.conv2.weight"])
    assert not any(p.requires_grad for p in model.teacher.parameters())
    final = model.state_dict()
    assert all(torch.equal(final[k], initial[k]) for k in final if k.startswith("teacher."))
    assert not torch.equal(final["backbone.imagenet_head.weight"], initial["backbone.imagenet_head.weight"])


# ---------------------------------------------------------------- mixed precision
def test_amp_dtype_is_none_on_the_cpu_and_bf16_or_fp16_on_cuda(monkeypatch):
    """What the loop autocasts with: nothing on the CPU (the loop then runs without autocast even with
    amp=True), bf16 on a CUDA device that supports it, else fp16 (with a grad scaler)."""
    from zssbir.runtime import amp_dtype

    assert amp_dtype(torch.device("cpu")) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert amp_dtype(torch.device("cuda")) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert amp_dtype(torch.device("cuda")) == torch.float16


def cpu_bf16_autocast_works() -> bool:
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return torch.nn.functional.linear(torch.ones(2, 4), torch.ones(3, 4)).dtype == torch.bfloat16
    except RuntimeError:
        return False


@pytest.mark.skipif(not cpu_bf16_autocast_works(), reason="this CPU build cannot autocast to bfloat16")
def test_autocast_path_trains_in_bfloat16(isolated_dirs, monkeypatch):
    """The loop's autocast branch, which the CPU never takes by itself (amp_dtype(cpu) is None): with
    amp_dtype answering bf16, every forward runs under bf16 autocast, no grad scaler is used (bf16 needs
    none), the losses stay finite and the weights move."""
    monkeypatch.setattr(loop, "amp_dtype", lambda device: torch.bfloat16)
    initial, seen = spy_initial_weights(monkeypatch), []
    original = ClusterRetri.forward

    def forward(self, batch):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        terms = original(self, batch)
        seen[-1] += (self.backbone(batch["image"], batch["domain"]).embedding.dtype,)
        return terms

    monkeypatch.setattr(ClusterRetri, "forward", forward)
    result = train(TrainConfig(**{**TINY, "epochs": 1, "max_steps_per_epoch": 2}), run_dir=isolated_dirs / "amp",
                   progress=False)
    assert seen == [(True, torch.bfloat16, torch.bfloat16)] * 2
    assert math.isfinite(result.history[0]["loss_total"])
    assert torch.load(isolated_dirs / "amp" / "checkpoint.pt", weights_only=False)["scaler"] == {}
    final = result.model.state_dict()
    assert not torch.equal(final["backbone.proj.weight"], initial["backbone.proj.weight"])
