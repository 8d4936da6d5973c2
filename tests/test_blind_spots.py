"""Behaviours that planted bugs once slipped past (issue 26): each test states what the study must do and
checks it on what the code does (run names, the batches an epoch yields, the draws of two DDP ranks, the
affine the authors' augmentation applies, the distillation term's value, a claim's verdict at its boundary)."""
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T

from zssbir.models.backbones import BackboneOutput
from zssbir.models.clusterretri import ClusterRetri
from zssbir.training import loop
from zssbir.training import batches as training_batches
from zssbir.training.config import TrainConfig
from zssbir.training.identity import run_name

TINY = dict(dataset="synthetic_tiny", image_size=32, embed_dim=32, batch_size=12, epochs=1, max_steps_per_epoch=2,
            backbone_params={"width": 32, "depth": 1, "heads": 2, "stem_channels": (8, 16, 32)}, augment=True,
            device="cpu")


# ---------------------------------------------------------------- 1. the validation subsample is part of a run's name
@pytest.mark.parametrize("method", ["clusterretri", "dmwa"])
def test_runs_validated_on_other_gallery_subsamples_get_other_names(method):
    """Validation picks the best epoch, so a run validated on a 5-per-class subsample of the seen photos is
    another run than one validated on all of them (or on 10): it must never be reopened under their name."""
    names = {run_name(TrainConfig(method=method, validation_gallery=g)) for g in (None, 5, 10)}
    assert len(names) == 3, names
    assert run_name(TrainConfig(method=method, validation_gallery=5)) == run_name(
        TrainConfig(method=method, validation_gallery=5))  # and the name stays a function of the settings


# ---------------------------------------------------------------- 2. shorter_loader ends with the shorter loader
class Items(torch.utils.data.Dataset):
    """n items of one domain: image = [index], label = index % 3, pair_id = '<s|p><index>'."""

    def __init__(self, n, domain):
        self.n, self.domain = n, domain

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"image": torch.tensor([float(i)]), "label": i % 3, "domain": self.domain,
                "pair_id": f"{'sp'[self.domain]}{i}"}


def test_shorter_loader_epoch_ends_with_the_sketch_loader_when_sketches_are_fewer():
    """Batch 12 with a third of sketches: 4 sketches + 8 photos per step. 24 photos fill 3 photo batches, 5
    sketches one sketch batch (drop_last), so the authors' zip of the two loaders takes ONE step; the
    "photos" mode takes 3 (the sketches cycle). Counted on the batches the iterator really yields."""
    data = {"photo": Items(24, 1), "sketch": Items(5, 0)}
    counts = {}
    for mode in ("shorter_loader", "photos"):
        config = TrainConfig(**{**TINY, "max_steps_per_epoch": None, "epoch_mode": mode})
        steps, batches = training_batches.mixed_batches(data, config, 0, 0, 1)
        batches = list(batches)
        assert steps == len(batches), mode  # the announced steps are the steps taken
        assert all(b["domain"].tolist() == [0] * 4 + [1] * 8 for b in batches), mode
        counts[mode] = len(batches)
    assert counts == {"shorter_loader": 1, "photos": 3}


# ---------------------------------------------------------------- 3. DDP ranks draw their own randomness
class _FirstStep(Exception):
    pass


def _first_step_draws(monkeypatch, run_dir, rank: int, world: int = 2) -> dict:
    """The L_DA targets and augmentation parameters of the first training step of rank ``rank`` of a
    ``world``-process run, trained in this process (no process group: the loop is told its rank, DDP's wrapper
    and barriers are no-ops, and the run stops once the first step's losses are computed)."""
    import zssbir.models.losses as losses

    draws = {"targets": [], "affine": []}
    original_kl, original_params, original_forward = losses.alignment_kl, T.RandomAffine.get_params, ClusterRetri.forward

    def kl(embeddings, target_logits):
        draws["targets"].append(target_logits.detach().clone())
        return original_kl(embeddings, target_logits)

    def get_params(*args, **kwargs):
        params = original_params(*args, **kwargs)
        draws["affine"].append(params)
        return params

    def forward(self, batch):
        original_forward(self, batch)
        raise _FirstStep

    with monkeypatch.context() as m:
        m.setattr(loop, "init_distributed", lambda device: (rank, world))
        m.setattr(torch.distributed, "barrier", lambda *a, **k: None)
        m.setattr(torch.nn.parallel, "DistributedDataParallel", lambda model, *a, **k: model)
        m.setattr(losses, "alignment_kl", kl)
        m.setattr(T.RandomAffine, "get_params", staticmethod(get_params))
        m.setattr(ClusterRetri, "forward", forward)
        with pytest.raises(_FirstStep):
            loop.train(TrainConfig(**{**TINY, "lambda_da": 0.1}), run_dir=run_dir, resume=False, progress=False)
    assert draws["targets"] and draws["affine"]  # the step drew both
    return draws


def test_ddp_ranks_draw_different_alignment_targets_and_augmentations_in_the_same_epoch(isolated_dirs, monkeypatch):
    """Two ranks of one DDP run (loader workers off, so the augmentation runs in the training process): in the
    same epoch they must not draw the same L_DA targets z ~ N(0, I) nor the same random affines, or the two
    half batches would share their noise. Each rank's draws are seeded (rank 0 twice: the same draws)."""
    from zssbir.data.tools import ensure_dataset

    ensure_dataset("synthetic_tiny", progress=False)
    r0 = _first_step_draws(monkeypatch, isolated_dirs / "r0", rank=0)
    r1 = _first_step_draws(monkeypatch, isolated_dirs / "r1", rank=1)
    again = _first_step_draws(monkeypatch, isolated_dirs / "r0_again", rank=0)
    assert all(torch.equal(a, b) for a, b in zip(r0["targets"], again["targets"]))
    assert r0["affine"] == again["affine"]
    assert len(r0["affine"]) == len(r1["affine"])  # the same number of draws: they may differ only by value
    shared = {"L_DA targets": torch.equal(r0["targets"][0], r1["targets"][0]), "affines": r0["affine"] == r1["affine"]}
    assert shared == {"L_DA targets": False, "affines": False}


# ---------------------------------------------------------------- 4. the authors' augmentation scales x and y apart
def test_authors_augmentation_scales_x_and_y_independently(monkeypatch):
    """The authors' random_transform draws a scale for x and another for y. Read back from the affine PIL
    applies (its inverse map's coefficients): the forward linear part is R(angle) diag(sx, sy), so its column
    norms are the two scales. About half the applied affines scale (the others only turn or shift); those
    must scale x and y differently, each within [0.7, 1.3]."""
    from zssbir.data.transforms import build_transform

    applied = []
    original = Image.Image.transform

    def spy(self, size, method, data=None, *args, **kwargs):
        if method == Image.Transform.AFFINE:
            applied.append(tuple(data))
        return original(self, size, method, data, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "transform", spy)
    transform = build_transform("photo", 16, "sake", train=True, augmentation="authors")
    image = Image.new("RGB", (48, 40), (120, 60, 30))
    torch.manual_seed(0)
    for _ in range(400):
        transform(image)
    assert len(applied) > 150
    scales = []
    for a, b, _, d, e, _ in applied:
        forward = np.linalg.inv(np.array([[a, b], [d, e]]))
        scales.append(np.linalg.norm(forward, axis=0))  # (sx, sy)
    scales = np.array(scales)
    scaled = ~np.all(np.isclose(scales, 1.0, atol=1e-9), axis=1)
    apart = np.abs(scales[:, 0] - scales[:, 1]) > 1e-3
    assert 0.35 < scaled.mean() < 0.8, scaled.mean()           # about half of the applied affines scale
    assert 0.3 < apart.mean() < 0.8, apart.mean()              # ... and those scale x and y differently
    assert apart[scaled].mean() > 0.95, apart[scaled].mean()
    assert scales[scaled].min() >= 0.7 - 1e-9 and scales[scaled].max() <= 1.3 + 1e-9


# ---------------------------------------------------------------- 5. the class-mask prior enters at its weight
class _Backbone(nn.Module):
    """Embedding = the image rows (D = 3); the ImageNet head gives the same rows (3 teacher classes)."""

    embed_dim = 3

    def __init__(self):
        super().__init__()
        self.imagenet_head = nn.Identity()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, images, domain=None):
        return BackboneOutput(embedding=images * self.scale, tokens=images[:, None], logits_imagenet=images * self.scale)


class _Teacher(nn.Module):
    def forward(self, images):
        return torch.stack([images[:, 2], images[:, 0] - images[:, 1], 0.5 * images[:, 1]], dim=1)


def test_distillation_term_follows_the_class_mask_weight():
    """ClusterRetri's kd term with SAKE's class mask, by hand: over the photo rows, the soft cross-entropy of
    log_softmax(student) against softmax((teacher + lambda_kd_mask * mask[label]) / T). It moves with the
    weight: 0.3, 1.2 and no mask (0) give three different values."""
    images = torch.tensor([[3.0, -3.0, 1.0], [0.5, 0.0, -1.0], [1.0, 2.0, 0.0], [-1.0, 0.5, 2.0]])
    labels, domains = torch.tensor([0, 1, 0, 1]), torch.tensor([0, 1, 1, 1])  # row 0 a sketch
    mask = torch.tensor([[4.0, 0.0, -2.0], [0.0, 3.0, 1.0]])  # one row per seen class, one column per teacher class
    temperature = 2.0

    def kd(weight):
        model = ClusterRetri(_Backbone(), 2, lambda_da=0.0, lambda_kd=0.5, teacher=_Teacher(),
                             kd_temperature=temperature, lambda_kd_mask=weight,
                             class_mask=mask if weight > 0 else None)
        return model({"image": images, "label": labels, "domain": domains})["kd"].item()

    def by_hand(weight):
        rows = [1, 2, 3]
        teacher = _Teacher()(images)
        total = 0.0
        for r in rows:
            target = torch.softmax((teacher[r] + weight * mask[labels[r]]) / temperature, 0)
            total += -(target * torch.log_softmax(images[r], 0)).sum().item()
        return total / len(rows)

    values = {w: kd(w) for w in (0.0, 0.3, 1.2)}
    for w, v in values.items():
        assert v == pytest.approx(by_hand(w), rel=1e-5), w
    assert len({round(v, 6) for v in values.values()}) == 3, values
    assert not math.isclose(values[0.3], values[0.0], rel_tol=1e-4)


# ---------------------------------------------------------------- 6. a claim's verdict at its boundary
def _verdict(n, ci_low, ci_high):
    from zssbir.study.findings import verdict

    return verdict({"n": n, "ci_low": ci_low, "ci_high": ci_high}).lower()


def test_claim_is_supported_only_when_the_interval_lies_above_zero():
    """Supported needs the whole 95 % interval of the paired difference above 0: a lower bound just above 0
    supports, exactly 0 or a little below (-0.005) does not; an upper bound just below 0 contradicts."""
    assert _verdict(5, 1e-4, 0.05).startswith("supported")
    for low in (0.0, -0.005, -1e-6):
        got = _verdict(5, low, 0.05)
        assert not got.startswith("supported") and "contradicted" not in got, (low, got)
    assert _verdict(5, -0.05, -1e-4).startswith("contradicted")
    assert not _verdict(5, -0.05, 0.0).startswith("contradicted")
