"""Pretraining the small backbone on the pretraining corpus (issue 13): the miniature of an ImageNet (and CLIP)
starting point.

Classification of the corpus's photos (``data.synthetic_pretrain``: classes disjoint from every benchmark class)
with the small backbone and a linear head on its embedding, cross-entropy, the study's image-side augmentation
(``data.transforms``, photo side), Adam with ClusterRetri's geometric schedule. With ``lambda_text > 0`` (default)
a small text tower (``models.small_text``) trains with it, CLIP's way: each photo's embedding against the captions
of all corpus classes (their programs' readable summaries), a contrastive cross-entropy with a learned
temperature. Runs use it when their config says ``pretrained: pretrain`` (and ``teacher_weights: pretrain`` for
the distillation; DMWA then also takes this text tower for its class texts).

- cached by content: the output folder ``<runs>/pretrain/<key>`` is named by a digest of the settings (runtime
  ones aside), the corpus's manifest config and the benchmarks it avoids, and the code that trains it
  (``PRETRAIN_CODE``); a finished folder is only reopened;
- resumable: a checkpoint after every epoch (model, optimiser, RNG, history), written atomically; epoch e draws its
  batches from seed + e, so a resumed run ends with the weights of an uninterrupted one;
- outputs: ``backbone.pt`` (the backbone's state dict, what ``build_backbone("small", pretrained=...)`` reads),
  ``head.pt`` (the corpus-class head: with the backbone, the frozen teacher of SAKE's distillation,
  ``models.small.build_small_teacher``), ``text.pt`` (the text tower, with ``lambda_text > 0``) and
  ``pretrain.json`` (settings, key, history, the files' sha256 and the command that rebuilds them);
- kept where ``training.pretrained_files`` says (apart, so that where the weights live can change without changing
  their key): a finished folder of the current key is reopened from ``<runs>/pretrain`` or from the repository's
  ``data/pretrained/`` (``--commit`` copies it there), without generating the corpus.

A run config names these weights by the value ``"pretrain"`` in ``pretrained`` and ``teacher_weights``
(``pretrained_store.resolve_weights``).

    python -m zssbir.training.pretrain                       # = make pretrain (the default corpus and settings)
    python -m zssbir.training.pretrain --corpus synthetic_pretrain_tiny --epochs 1
    python -m zssbir.training.pretrain --commit              # and copy it into data/pretrained/ (to commit)
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

from ..data.synthetic_pretrain import (CORPORA, FORMAT_VERSION, benchmark_configs, ensure_corpus, load_corpus,
                                       load_manifest)
from ..data.samplers import make_loader
from ..data.transforms import build_transform
from ..models.backbones import build_backbone
from ..models.small_text import SmallTextEncoder, build_vocabulary, contrastive_logits
from ..runtime import seed_everything, torch_threads
from .pretrained_files import build_command, commit, finished_dir, output_dir

# the files whose content decides the weights (relative to the package); a change gives a new key
PRETRAIN_CODE = ("training/pretrain.py", "models/small.py", "models/small_text.py", "models/backbones.py",
                 "data/transforms.py",
                 "data/datasets.py", "data/samplers.py", "data/synthetic_pretrain.py", "data/synthetic_classes.py",
                 "data/drawing.py", "data/drawing_photo.py", "data/synthetic.py")
RUNTIME = ("data_root", "num_workers", "decoded_cache", "torch_threads")  # how fast, not what is learned


@dataclass(frozen=True)
class PretrainSettings:
    corpus: str = "synthetic_pretrain"
    image_size: int = 48                # the benchmark runs' input size (configs/study/*.yaml)
    embed_dim: int = 512
    backbone_params: dict = field(default_factory=dict)
    epochs: int = 16
    batch_size: int = 64
    lr: float = 2e-3
    lr_final_factor: float = 1e-2
    weight_decay: float = 5e-4
    augmentation: str = "study"
    lambda_text: float = 1.0            # weight of the contrastive caption loss; 0 trains no text tower
    text_params: dict = field(default_factory=dict)  # SmallTextEncoder settings (width, depth, heads, max_words)
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
    """The backbone, a linear head over its embedding and (optionally) the text tower with CLIP's temperature."""

    def __init__(self, backbone: nn.Module, n_classes: int, text: SmallTextEncoder | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.embed_dim, n_classes)
        self.text = text
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07)))) if text is not None else None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images).embedding)

    def losses(self, images: torch.Tensor, labels: torch.Tensor, captions: list[str]) -> dict[str, torch.Tensor]:
        """Classification, and with a text tower the contrastive loss of each photo against every class caption."""
        embedding = self.backbone(images).embedding
        out = {"classification": F.cross_entropy(self.head(embedding), labels)}
        if self.text is not None:
            texts = self.text.encode(captions)
            out["caption"] = F.cross_entropy(contrastive_logits(embedding, texts, self.logit_scale), labels)
        return out


def corpus_captions(manifest: dict) -> list[str]:
    """The captions of a corpus's classes in label order: each class program's summary, without its name."""
    classes = sorted(manifest["classes"], key=lambda c: c["id"])
    return [c["description"].removeprefix(f"{c['name']}: ") for c in classes]


def code_digest() -> dict[str, str]:
    root = Path(__file__).resolve().parent.parent
    return {name: hashlib.sha256((root / name).read_bytes()).hexdigest()[:16] for name in PRETRAIN_CODE}


def content_key(settings: PretrainSettings) -> str:
    """The digest naming the pretrained weights: settings, corpus (its config and the benchmarks it avoids, which
    decide its bytes), code."""
    corpus = {"format_version": FORMAT_VERSION, "config": CORPORA[settings.corpus].to_dict(),
              "disjoint_from": benchmark_configs()}
    content = {"settings": settings.identity(), "corpus": corpus, "code": code_digest()}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@torch.no_grad()
def _accuracy(model: Classifier, dataset, batch: int, captions: list[str]) -> dict[str, float]:
    """Held-out top-1 of the head (``val_top1``) and, with a text tower, of the nearest class caption
    (``val_text_top1``: CLIP's zero-shot classification, here on the corpus's own classes)."""
    keys = ["val_top1"] + (["val_text_top1"] if model.text is not None else [])
    if len(dataset) == 0:
        return dict.fromkeys(keys, float("nan"))
    model.eval()
    texts = model.text.encode(captions) if model.text is not None else None
    right = dict.fromkeys(keys, 0)
    for b in make_loader(dataset, batch, seed=0):
        embedding = model.backbone(b["image"]).embedding
        right["val_top1"] += int((model.head(embedding).argmax(1) == b["label"]).sum())
        if texts is not None:
            logits = contrastive_logits(embedding, texts, model.logit_scale)
            right["val_text_top1"] += int((logits.argmax(1) == b["label"]).sum())
    return {k: v / len(dataset) for k, v in right.items()}


def pretrain(settings: PretrainSettings | None = None, *, progress: bool = True) -> Path:
    """Pretrain (or resume, or only reopen) and return the folder holding ``backbone.pt`` and ``pretrain.json``."""
    settings = settings or PretrainSettings()
    with torch_threads(settings.torch_threads):
        return _pretrain(settings, progress)


def _pretrain(settings: PretrainSettings, progress: bool) -> Path:
    key = content_key(settings)
    done = finished_dir(settings, key)
    if done is not None:  # built before, or committed: the corpus is not even needed
        return done
    root = ensure_corpus(settings.corpus, data_root=settings.data_root, progress=progress)
    out = output_dir(settings, key)
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
    captions = corpus_captions(load_manifest(root))
    text = (SmallTextEncoder(build_vocabulary(captions), embed_dim=settings.embed_dim, **settings.text_params)
            if settings.lambda_text > 0 else None)
    model = Classifier(backbone, len(data.class_names), text)
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
            parts = model.losses(batch["image"], batch["label"], captions)
            loss = parts["classification"] + settings.lambda_text * parts.get("caption", 0.0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}
        record = {"epoch": epoch, "lr": lr, "loss": total / max(steps, 1), "seconds": time.perf_counter() - t0,
                  **_accuracy(model, val, settings.batch_size, captions)}
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
    if model.text is not None:
        _atomic_save(model.text.file_state(), out / "text.pt")
    info = {"key": key, "settings": settings.to_dict(), "corpus": load_manifest(root)["config"],
            "classes": len(data.class_names), "history": history, "code": code_digest(),
            "backbone_sha256": _sha256(out / "backbone.pt"), "head_sha256": _sha256(out / "head.pt"),
            **({"text_sha256": _sha256(out / "text.pt"), "text_settings": model.text.settings,
                "text_vocabulary": len(model.text.vocabulary)} if model.text is not None else {}),
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
    p.add_argument("--commit", action="store_true", help="then copy the finished folder into data/pretrained/")
    args = vars(p.parse_args(argv))
    quiet, to_commit = args.pop("quiet"), args.pop("commit")
    settings = PretrainSettings(**args)
    out = pretrain(settings, progress=not quiet)
    if to_commit:
        out = commit(settings, content_key(settings))
        print(f"committed: {out} (add it with git; the committed folders of other keys were removed)")
    info = json.loads((out / "pretrain.json").read_text())
    print(f"pretrained backbone: {out / 'backbone.pt'} (sha256 {info['backbone_sha256']}); "
          f"last val top-1 {info['history'][-1]['val_top1']:.3f}" if info["history"] else "")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
