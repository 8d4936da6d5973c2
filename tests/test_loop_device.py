"""The training loop waits on the host only where it must (issue 24): the loss terms are summed on the device and
read once per logging interval (the history the same float64 sums as a read per step), a non-finite loss still stops
the run (naming the interval), ClusterRetri's loader workers persist across epochs and draw as fresh ones,
channels_last and compile are runtime settings (refused or declined in one line where they cannot apply), cuDNN's
benchmark flag is set on CUDA only and restored, and device "cuda" without a GPU names "auto"."""
import math
import sys

import pytest
import torch

from zssbir.config import RUNTIME_FIELDS
from zssbir.data.datasets import load_split
from zssbir.data.samplers import SeededShuffleSampler, make_loader
from zssbir.data.tools import ensure_dataset
from zssbir.data.transforms import build_transform
from zssbir.models.clusterretri import ClusterRetri
from zssbir.training import loop
from zssbir.training import batches as training_batches
from zssbir.training.device_step import cudnn_benchmark
from zssbir.training.config import TrainConfig
from zssbir.training.identity import run_name
from zssbir.training.loop import train

from conftest import count_worker_starts, interrupt_forward

TINY = dict(dataset="synthetic_tiny", image_size=32, embed_dim=32, batch_size=12, epochs=2, max_steps_per_epoch=3,
            backbone_params={"width": 32, "depth": 1, "heads": 2, "stem_channels": (8, 16, 32)}, augment=True)
FIVE_STEPS = dict(TINY, batch_size=6, max_steps_per_epoch=5)  # 2 sketches + 4 photos a step, 5 steps an epoch


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def spy_terms(monkeypatch) -> list[dict]:
    """The loss terms of every training step, as tensors (read by the test, not by the loop)."""
    steps, original = [], ClusterRetri.forward

    def forward(self, batch):
        terms = original(self, batch)
        if self.training:
            steps.append({k: v.detach().clone() for k, v in terms.items()})
        return terms

    monkeypatch.setattr(ClusterRetri, "forward", forward)
    return steps


LOOP_MODULES = (loop.__name__, training_batches.__name__, "zssbir.training.device_step")


def count_loop_reads(monkeypatch) -> list[str]:
    """Every read of a tensor's value on the host made by the loop's own code (zssbir.training.loop and the modules
    split out of it: batches, device_step)."""
    reads = []
    for name in ("item", "tolist", "__float__", "__bool__", "__int__", "__index__"):
        original = getattr(torch.Tensor, name)

        def reading(self, *args, _original=original, _name=name, **kwargs):
            if sys._getframe(1).f_globals.get("__name__") in LOOP_MODULES:
                reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, reading)
    return reads


# ---------------------------------------------------------------- losses read once per interval
def test_losses_are_read_once_per_interval_and_the_history_is_unchanged(isolated_dirs, monkeypatch):
    """log_every=2 over 5 steps: reads after steps 2 and 4 and one at the epoch's end (3 an epoch, where the
    loop read every term at every step before issue 24); the CPU default (None) reads every step, as the progress
    bar did. Either way the history is the mean of the per-step float32 terms summed as Python floats (float64) in
    step order, bit for bit, and the weights are the same."""
    config = TrainConfig(**FIVE_STEPS, log_every=2)
    terms = spy_terms(monkeypatch)
    reads = count_loop_reads(monkeypatch)
    interval = train(config, run_dir=isolated_dirs / "interval", progress=False)
    assert len(reads) == 2 * 3, reads
    assert len(terms) == 10
    for epoch, record in enumerate(interval.history):  # what the loop computed before: float() per term and step
        expected = {}
        for step in terms[5 * epoch:5 * epoch + 5]:
            for k, v in step.items():
                expected[k] = expected.get(k, 0.0) + float(v)
        assert {k: record[f"loss_{k}"] for k in expected} == {k: v / 5 for k, v in expected.items()}

    reads.clear()
    every_step = train(TrainConfig(**FIVE_STEPS), run_dir=isolated_dirs / "every", progress=False)
    assert len(reads) == 2 * 5  # log_every None on the CPU: steps 1-4 and the epoch's end
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in interval.history]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in every_step.history]
    assert same(interval.model.state_dict(), every_step.model.state_dict())


def poison(monkeypatch, at_step: int) -> None:
    """Make the total loss of the ``at_step``-th training step (1-based, over the whole run) NaN."""
    original, calls = ClusterRetri.forward, {"n": 0}

    def forward(self, batch):
        terms = original(self, batch)
        if self.training:
            calls["n"] += 1
            if calls["n"] == at_step:
                terms["total"] = terms["total"] * float("nan")
        return terms

    monkeypatch.setattr(ClusterRetri, "forward", forward)


@pytest.mark.parametrize("log_every, at_step, where", [
    (2, 8, "at epoch 2, within steps 3-4 (the loss is read every 2 steps: log_every)"),  # step 3 of epoch 2
    (2, 10, "at epoch 2, at step 5"),  # the last step: the epoch's own read finds it, before any checkpoint
    (None, 8, "at epoch 2, at step 3"),  # the CPU default reads every step
])
def test_non_finite_loss_stops_the_run_naming_the_interval(isolated_dirs, monkeypatch, log_every, at_step, where):
    poison(monkeypatch, at_step)
    config = TrainConfig(**FIVE_STEPS, log_every=log_every)
    with pytest.raises(FloatingPointError) as err:
        train(config, run_dir=isolated_dirs / "nan", progress=False)
    message = str(err.value)
    assert message.startswith(f"loss became nan {where}; lower lr"), message
    assert "lower lr" in message and "checkpoint.pt" in message and "\n" not in message
    saved = torch.load(isolated_dirs / "nan" / "checkpoint.pt", weights_only=False)
    assert saved["epoch"] == 0 and all(math.isfinite(h["loss_total"]) for h in saved["history"])


# ---------------------------------------------------------------- persistent loader workers
@pytest.fixture
def sketches(isolated_dirs):
    ensure_dataset("synthetic_tiny", progress=False)
    return load_split("synthetic_tiny", "train", "sketch", transform=build_transform("sketch", 32, train=True))


def test_persistent_loaders_give_the_batches_and_draws_of_fresh_ones(sketches):
    """Three passes of one persistent loader (two workers; the first pass left after one batch, as an epoch cut
    by max_steps_per_epoch leaves its photos) against a fresh make_loader per pass: the same items, and the same
    augmented pixels (every worker reseeded as a fresh one would be)."""
    pool = training_batches.PersistentLoaders(2)
    try:
        for n, seed in enumerate((11, 12, 11)):  # a seed met again is a new pass all the same
            fresh = make_loader(sketches, 9, seed=seed, sampler=SeededShuffleSampler(len(sketches), seed),
                                drop_last=True, num_workers=2)
            kept = pool.loader(sketches, 9, seed=seed, sampler=SeededShuffleSampler(len(sketches), seed),
                               drop_last=True)
            assert len(kept) == len(fresh) == len(sketches) // 9
            if n == 0:
                first = next(iter(kept))
                assert torch.equal(first["image"], next(iter(fresh))["image"])
                continue
            for a, b in zip(fresh, kept, strict=True):
                assert a["pair_id"] == b["pair_id"] and torch.equal(a["image"], b["image"])
        assert len(pool.entries) == 1 and pool.entries[id(sketches)]["passes"] == 3
    finally:
        pool.close()


def test_persistent_workers_train_as_fresh_ones_and_resume_the_same(isolated_dirs, monkeypatch):
    """Two workers, sketches cycling twice an epoch (sketch_fraction 3/4: 9 sketches + 3 photos a step, 10 steps):
    the run with persistent workers (2 worker starts in training: photos and sketches) ends with the weights and
    history of the run with fresh loaders (a start per pass: 6), and a run cut in epoch 2 resumes to them too."""
    settings = dict(TINY, num_workers=2, sketch_fraction=0.75, max_steps_per_epoch=None, torch_threads=1)
    config = TrainConfig(**settings)
    starts = count_worker_starts(monkeypatch)
    kept = train(config, run_dir=isolated_dirs / "kept", progress=False)
    assert starts.count("_Reseeding") == 2
    validation = starts.count("ListDataset")  # validation's loaders (training.features), fresh as before
    starts.clear()
    monkeypatch.setattr(training_batches, "PERSISTENT_WORKERS", False)
    fresh = train(config, run_dir=isolated_dirs / "fresh", progress=False)
    assert "_Reseeding" not in starts
    assert starts.count("ListDataset") - validation == 2 * 3  # per epoch: the photos, and the sketches twice
    assert same(kept.model.state_dict(), fresh.model.state_dict())
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in kept.history] == \
        [{k: v for k, v in h.items() if k != "seconds"} for h in fresh.history]

    monkeypatch.setattr(training_batches, "PERSISTENT_WORKERS", True)
    restore = interrupt_forward(monkeypatch, ClusterRetri, 14)  # step 4 of epoch 2
    with pytest.raises(KeyboardInterrupt):
        train(config, run_dir=isolated_dirs / "cut", progress=False)
    restore()
    resumed = train(config, run_dir=isolated_dirs / "cut", progress=False)
    assert same(resumed.model.state_dict(), kept.model.state_dict())


# ---------------------------------------------------------------- channels_last, compile, cuDNN, devices
def test_channels_last_trains_the_small_backbone_in_that_layout(isolated_dirs, monkeypatch):
    """The convolutions' weights and every image batch are channels-last; the first step's losses agree with the
    default layout's to float32 rounding (1e-6). Not bit for bit: the CPU's channels-last convolutions add in
    another order, and Adam's first steps (about lr * sign(gradient)) turn a rounding-sized gradient, where the
    exact one is about zero, into a step of lr, so later losses drift apart by ~1e-4 (measured), as two DDP ranks
    do (tests/test_train.py)."""
    layouts, original = [], ClusterRetri.forward

    def forward(self, batch):
        if self.training:
            conv = self.backbone.stem[0][0].weight
            layouts.append((batch["image"].is_contiguous(memory_format=torch.channels_last),
                            conv.is_contiguous(memory_format=torch.channels_last)))
        return original(self, batch)

    monkeypatch.setattr(ClusterRetri, "forward", forward)
    terms = spy_terms(monkeypatch)
    config = TrainConfig(**{**TINY, "epochs": 1}, channels_last=True)
    result = train(config, run_dir=isolated_dirs / "cl", progress=False)
    assert layouts == [(True, True)] * 3
    assert run_name(config) == run_name(TrainConfig(**{**TINY, "epochs": 1}))  # a runtime setting
    default = train(TrainConfig(**{**TINY, "epochs": 1}), run_dir=isolated_dirs / "plain", progress=False)
    first_cl, first = terms[0], terms[3]
    assert first.keys() == first_cl.keys()
    for k in first:
        assert first_cl[k].item() == pytest.approx(first[k].item(), rel=1e-6, abs=1e-7), k
    assert result.history[0]["loss_total"] == pytest.approx(default.history[0]["loss_total"], rel=1e-2)
    assert result.model.state_dict().keys() == default.model.state_dict().keys()


def test_channels_last_is_refused_for_a_vit_and_settings_are_checked():
    with pytest.raises(ValueError) as err:
        TrainConfig(backbone="clip:zssbir-tiny-vit", channels_last=True)
    assert str(err.value) == ("channels_last is for the convolutional backbones (small, cse_resnet50), not "
                              "clip:zssbir-tiny-vit: leave channels_last false")
    TrainConfig(backbone="cse_resnet50", channels_last=True)
    for bad in ({"log_every": 0}, {"log_every": True}, {"log_every": 2.0}, {"channels_last": "yes"}, {"compile": 1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TrainConfig(**bad)
    assert {"log_every", "channels_last", "compile"} <= set(RUNTIME_FIELDS)
    base = run_name(TrainConfig())
    assert run_name(TrainConfig(log_every=5, channels_last=True, compile=True)) == base


def test_compile_declines_in_one_line_where_it_cannot_apply(isolated_dirs, monkeypatch, capsys):
    """No torch.compile (an old torch): one line on stderr, and the run trains as without the setting, to the same
    weights. The other refusals, asked directly: DDP, a model without a backbone."""
    monkeypatch.setattr(torch, "compile", None)
    declined = train(TrainConfig(**{**TINY, "epochs": 1}, compile=True), run_dir=isolated_dirs / "c", progress=False)
    lines = [line for line in capsys.readouterr().err.splitlines() if "compile" in line]
    assert lines == [f"c: compile ignored: torch {torch.__version__} has no torch.compile; training without "
                     "torch.compile"]
    plain = train(TrainConfig(**{**TINY, "epochs": 1}), run_dir=isolated_dirs / "p", progress=False)
    assert same(declined.model.state_dict(), plain.model.state_dict())
    monkeypatch.undo()
    model = declined.model
    assert loop.compile_unavailable(model, torch.device("cpu"), world=2) == \
        "this loop does not combine it with DDP (torchrun)"
    assert loop.compile_unavailable(torch.nn.Linear(2, 2), torch.device("cpu"), world=1) == \
        "Linear has no backbone to compile"


@pytest.mark.slow
@pytest.mark.skipif(loop.compile_unavailable(ClusterRetri.__new__(ClusterRetri), torch.device("cpu"), 1)
                    not in (None, "ClusterRetri has no backbone to compile"), reason="torch.compile cannot run here")
def test_compile_trains_a_tiny_run_on_the_cpu(isolated_dirs, monkeypatch):
    """compile=True on the CPU (slow: inductor compiles C++ kernels, ~30-60 s): the backbone runs compiled while
    training, the first step's losses agree with eager ones to float rounding, state-dict keys are unchanged and
    the model handed back runs eagerly."""
    compiled, original = [], ClusterRetri.forward

    def forward(self, batch):
        if self.training:
            compiled.append(self.backbone._compiled_call_impl is not None)
        return original(self, batch)

    monkeypatch.setattr(ClusterRetri, "forward", forward)
    monkeypatch.setattr(loop, "validation_score", lambda *args: 0.0)  # no eval-mode graph to compile too
    terms = spy_terms(monkeypatch)
    settings = {**TINY, "epochs": 1, "max_steps_per_epoch": 2}
    result = train(TrainConfig(**settings, compile=True), run_dir=isolated_dirs / "compiled", progress=False)
    eager = train(TrainConfig(**settings), run_dir=isolated_dirs / "eager", progress=False)
    assert compiled == [True, True, False, False]
    for k in terms[0]:
        assert terms[0][k].item() == pytest.approx(terms[2][k].item(), rel=1e-5, abs=1e-6), k
    assert result.model.backbone._compiled_call_impl is None
    assert result.model.state_dict().keys() == eager.model.state_dict().keys()
    assert math.isfinite(result.history[0]["loss_total"])


def test_cudnn_benchmark_is_set_on_cuda_only_and_restored(monkeypatch):
    before = torch.backends.cudnn.benchmark
    with cudnn_benchmark(torch.device("cpu")):
        assert torch.backends.cudnn.benchmark == before
    torch.backends.cudnn.benchmark = False
    try:
        with cudnn_benchmark(torch.device("cuda")):  # sets a flag only: no GPU needed
            assert torch.backends.cudnn.benchmark is True
        assert torch.backends.cudnn.benchmark is False
        monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: True)
        with cudnn_benchmark(torch.device("cuda")):  # determinism asked of torch: left alone
            assert torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = before


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_device_cuda_without_a_gpu_names_auto(isolated_dirs):
    with pytest.raises(RuntimeError) as err:
        train(TrainConfig(**TINY, device="cuda"), run_dir=isolated_dirs / "gpu", progress=False)
    assert "CUDA is not available" in str(err.value) and "device='auto'" in str(err.value)
    assert "\n" not in str(err.value) and not (isolated_dirs / "gpu").exists()
