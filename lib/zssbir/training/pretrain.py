"""Pretraining the small backbone on the pretraining corpus (issue 13): the miniature of an ImageNet starting point.

Classification of the corpus's photos (``data.synthetic_pretrain``: classes disjoint from every benchmark class)
with the small backbone and a linear head on its embedding, cross-entropy, the study's image-side augmentation
(``data.transforms``, photo side), Adam with ClusterRetri's geometric schedule. Runs use it when their config says
``pretrained: pretrain`` (and ``teacher_weights: pretrain`` for the distillation).

- cached by content: the output folder ``<runs>/pretrain/<key>`` is named by a digest of the settings (runtime
  ones aside), the corpus's manifest config and the benchmarks it avoids, and the code that trains it
  (``PRETRAIN_CODE``); a finished folder is only reopened;
- resumable: a checkpoint after every epoch (model, optimiser, RNG, history), written atomically; epoch e draws its
  batches from seed + e, so a resumed run ends with the weights of an uninterrupted one;
- outputs: ``backbone.pt`` (the backbone's state dict, what ``build_backbone("small", pretrained=...)`` reads),
  ``head.pt`` (the corpus-class head: with the backbone, the frozen teacher of SAKE's distillation,
  ``models.small.build_small_teacher``) and ``pretrain.json`` (settings, key, history, the files' sha256 and the
  command that rebuilds them).

A run config names these weights by the value ``"pretrain"`` (``PRETRAINED_MINIATURE``) in ``pretrained`` and
``teacher_weights``: ``resolve_weights`` turns it into the file of the default settings, or says which command
builds it.

    python -m zssbir.training.pretrain                       # = make pretrain (the default corpus and settings)
    python -m zssbir.training.pretrain --corpus synthetic_pretrain_tiny --epochs 1
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .. import paths
from ..data.synthetic_pretrain import CORPORA, corpus_root, ensure_corpus, load_corpus, load_manifest
from ..data.samplers import make_loader
from ..data.transforms import build_transform
from ..models.backbones import build_backbone
from ..runtime import seed_everything, torch_threads

# the files whose content decides the weights (relative to the package); a change gives a new key
PRETRAIN_CODE = ("training/pretrain.py", "models/small.py", "models/backbones.py", "data/transforms.py",
                 "data/datasets.py", "data/samplers.py", "data/synthetic_pretrain.py", "data/synthetic_classes.py",
                 "data/drawing.py", "data/drawing_photo.py")
PRETRAINED_MINIATURE = "pretrain"  # a config's name for the weights of `make pretrain` (default settings)
RUNTIME = ("data_root", "num_workers", "decoded_cache", "torch_threads")  # how fast, not what is learned


@dataclass(frozen=True)
class PretrainSettings:
    corpus: str = "synthetic_pretrain"
    image_size: int = 48                # the benchmark runs' input size (configs/study/*.yaml)
    embed_dim: int = 512
    backbone_params: dict = field(default_factory=dict)
    epochs: int = 8
    batch_size: int = 64
    lr: float = 2e-3
    lr_final_factor: float = 1e-2
    weight_decay: float = 5e-4
    augmentation: str = "study"
    max_steps_per_epoch: int | None = None
    seed: int = 0
    data_root: str | None = None
    num_workers: int = 0
    decoded_cache: bool = True          # the corpus is small: decode each photo once (same pixels)
    torch_threads: int | None = None

    def __post_init__(self) -> None:
        if self.corpus not in CORPORA:
            raise ValueError(f"unknown pretraining corpus {self.corpus!r}; known: {sorted(CORPORA)}")
        for name in ("image_size", "embed_dim", "epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def identity(self) -> dict:
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME}


class Classifier(nn.Module):
    """The backbone and a linear head over its embedding."""

    def __init__(self, backbone: nn.Module, n_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.embed_dim, n_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images).embedding)


def code_digest() -> dict[str, str]:
    root = Path(__file__).resolve().parent.parent
    return {name: hashlib.sha256((root / name).read_bytes()).hexdigest()[:16] for name in PRETRAIN_CODE}


def content_key(settings: PretrainSettings, corpus_manifest: dict) -> str:
    """The digest naming the pretrained weights: settings, corpus (config and benchmarks avoided), code."""
    content = {"settings": settings.identity(), "corpus": {k: corpus_manifest.get(k) for k in
                                                           ("format_version", "config", "disjoint_from")},
               "code": code_digest()}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


CLI_FIELDS = ("corpus", "epochs", "seed", "batch_size", "image_size", "lr", "max_steps_per_epoch")


def build_command(settings: PretrainSettings) -> str:
    """The command that builds the weights of ``settings``: ``make pretrain`` for the defaults, else the module's
    command line, else (settings it has no flag for) the Python call."""
    default = PretrainSettings().identity()
    changed = {k: v for k, v in settings.identity().items() if v != default[k]}
    if not changed:
        return "make pretrain"
    if set(changed) <= set(CLI_FIELDS):
        return "python -m zssbir.training.pretrain" + "".join(f" --{k.replace('_', '-')} {changed[k]}"
                                                              for k in CLI_FIELDS if k in changed)
    args = ", ".join(f"{k}={v!r}" for k, v in changed.items())
    return f"python -c \"from zssbir.training.pretrain import *; pretrain(PretrainSettings({args}))\""


def output_dir(settings: PretrainSettings, key: str) -> Path:
    return paths.runs_dir() / "pretrain" / f"{settings.corpus}_{key}"


def pretrained_weights(settings: PretrainSettings | None = None) -> Path:
    """The ``backbone.pt`` of finished pretraining with these settings (and the current code and corpus); a missing
    or mismatched one raises FileNotFoundError naming the command that builds it."""
    settings = settings or PretrainSettings()
    manifest = load_manifest(corpus_root(settings.corpus, settings.data_root))
    command = build_command(settings)
    if manifest is None:
        raise FileNotFoundError(f"no pretrained backbone: the corpus {settings.corpus!r} is not generated; build both "
                                f"with `{command}`")
    path = output_dir(settings, content_key(settings, manifest)) / "backbone.pt"
    if not path.is_file():
        others = sorted(str(p) for p in (paths.runs_dir() / "pretrain").glob(f"{settings.corpus}_*/backbone.pt"))
        note = (f" (other pretrained files exist, made by other settings, code or corpus: {', '.join(others)})"
                if others else "")
        raise FileNotFoundError(f"no pretrained backbone for these settings and code at {path}{note}; build it with "
                                f"`{command}`")
    return path


def resolve_weights(value: str | None) -> str | None:
    """A config's ``pretrained`` / ``teacher_weights`` value as a file: ``"pretrain"`` is the ``backbone.pt`` of
    the default pretraining (FileNotFoundError naming ``make pretrain`` when it is missing); others pass through."""
    if value != PRETRAINED_MINIATURE:
        return value
    return str(pretrained_weights())


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@torch.no_grad()
def _accuracy(model: nn.Module, dataset, batch: int) -> float:
    if len(dataset) == 0:
        return float("nan")
    model.eval()
    loader = make_loader(dataset, batch, seed=0)
    right = sum(int((model(b["image"]).argmax(1) == b["label"]).sum()) for b in loader)
    return right / len(dataset)


def pretrain(settings: PretrainSettings | None = None, *, progress: bool = True) -> Path:
    """Pretrain (or resume, or only reopen) and return the folder holding ``backbone.pt`` and ``pretrain.json``."""
    settings = settings or PretrainSettings()
    with torch_threads(settings.torch_threads):
        return _pretrain(settings, progress)


def _pretrain(settings: PretrainSettings, progress: bool) -> Path:
    root = ensure_corpus(settings.corpus, data_root=settings.data_root, progress=progress)
    key = content_key(settings, load_manifest(root))
    out = output_dir(settings, key)
    if all((out / name).is_file() for name in ("backbone.pt", "head.pt", "pretrain.json")):
        return out
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(settings.seed)
    train_tf = build_transform("photo", settings.image_size, "sake", train=True, augmentation=settings.augmentation)
    eval_tf = build_transform("photo", settings.image_size, "sake", train=False)
    data = load_corpus(root, "train", train_tf, settings.corpus, cache_decoded=settings.decoded_cache)
    val = load_corpus(root, "val", eval_tf, settings.corpus, cache_decoded=settings.decoded_cache)
    if settings.decoded_cache and settings.num_workers:  # loader workers (forked) inherit the pixels
        for ds in (data, val):
            ds.fill_cache()
    backbone = build_backbone("small", embed_dim=settings.embed_dim, image_size=settings.image_size,
                              **settings.backbone_params)
    model = Classifier(backbone, len(data.class_names))
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    history, start = [], 0
    ckpt = out / "checkpoint.pt"
    if ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        history, start = state["history"], state["epoch"] + 1
        if progress:
            print(f"pretraining {out.name}: resuming after epoch {start}")
    for epoch in range(start, settings.epochs):
        lr = settings.lr * settings.lr_final_factor ** (epoch / settings.epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loader = make_loader(data, settings.batch_size, seed=settings.seed * 1_000_003 + epoch, shuffle=True,
                             drop_last=True, num_workers=settings.num_workers)
        steps = len(loader) if not settings.max_steps_per_epoch else min(len(loader), settings.max_steps_per_epoch)
        model.train()
        total, t0 = 0.0, time.perf_counter()
        bar = tqdm(loader, total=steps, desc=f"pretrain epoch {epoch + 1}/{settings.epochs}", disable=not progress,
                   mininterval=2.0)
        for step, batch in enumerate(bar):
            if step == steps:
                break
            loss = F.cross_entropy(model(batch["image"]), batch["label"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}
        record = {"epoch": epoch, "lr": lr, "loss": total / max(steps, 1), "seconds": time.perf_counter() - t0,
                  "val_top1": _accuracy(model, val, settings.batch_size)}
        history.append(record)
        torch.set_rng_state(rng["torch"])  # evaluation leaves the RNG streams as it found them
        np.random.set_state(rng["numpy"])
        _atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": rng,
                      "history": history, "epoch": epoch, "key": key}, ckpt)
        if progress:
            print(f"pretrain epoch {epoch + 1}/{settings.epochs}: loss {record['loss']:.3f}, "
                  f"val top-1 {record['val_top1']:.3f} ({record['seconds']:.0f} s)")
    _atomic_save(model.backbone.state_dict(), out / "backbone.pt")
    _atomic_save(model.head.state_dict(), out / "head.pt")
    info = {"key": key, "settings": settings.to_dict(), "corpus": load_manifest(root)["config"],
            "classes": len(data.class_names), "history": history, "code": code_digest(),
            "backbone_sha256": _sha256(out / "backbone.pt"), "head_sha256": _sha256(out / "head.pt"),
            "backbone_params": settings.backbone_params, "command": build_command(settings),
            "loads_with": f"build_backbone('small', image_size={settings.image_size}, embed_dim={settings.embed_dim}, "
                          f"pretrained='{out / 'backbone.pt'}')"}
    (out / "pretrain.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    d = PretrainSettings()
    p.add_argument("--corpus", default=d.corpus, choices=sorted(CORPORA))
    for name in ("epochs", "seed", "batch_size", "image_size", "num_workers", "torch_threads", "max_steps_per_epoch"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--data-root", default=None)
    p.add_argument("--quiet", action="store_true")
    args = vars(p.parse_args(argv))
    quiet = args.pop("quiet")
    out = pretrain(PretrainSettings(**args), progress=not quiet)
    info = json.loads((out / "pretrain.json").read_text())
    print(f"pretrained backbone: {out / 'backbone.pt'} (sha256 {info['backbone_sha256']}); "
          f"last val top-1 {info['history'][-1]['val_top1']:.3f}" if info["history"] else "")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
