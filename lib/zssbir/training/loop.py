"""The one training loop of the study.

- device "auto"; autocast where the device supports it (CUDA: bf16 or fp16 with a grad scaler);
- a checkpoint after every epoch's training steps, BEFORE its validation (model, optimiser, scaler, RNG states,
  history; ``validated`` False), and again once validated; written atomically. ``train`` resumes from it (a
  checkpoint whose validation did not finish is validated first, so best-epoch selection stays right), and a
  resumed CPU run ends with the same weights as an uninterrupted one (epoch e draws its batches from seed + e; the
  RNG states are restored; validation leaves them as it found them);
- unreadable images: ``unreadable_images="error"`` stops with UnreadableImageError naming the file, its list and
  the fix (the completed epochs stay in the checkpoint); "skip" leaves them out with a warning and records them
  in ``unreadable_images.json``, the checkpoint and each history record (``unreadable_images``: the count);
- DDP when launched with torchrun (gloo on CPU, nccl on CUDA); only rank 0 writes and validates;
- model selection on held-out SEEN-class sketches by default (``selection="seen_val"``); the papers'
  protocol (select on the unseen test classes) only on request, and labelled as such in the results;
- the host waits on the device only where it must (issue 24): the loss terms are summed on the device and read
  once every ``log_every`` steps (progress bar, non-finite check) and once at the epoch's end (the history, the
  same float64 sums as a read per step would give); on CUDA the batches are pinned and copied without blocking,
  cuDNN picks its fastest kernels (unless determinism was asked of torch); ``channels_last`` and ``compile``
  (runtime settings, opt-in); the loader workers (both methods) live across epochs and draw as fresh ones would
  (``training.batches.PersistentLoaders``).
Learning rate of epoch e: lr * lr_final_factor ** (e / epochs) (ClusterRetri's schedule); Adam.
"""
from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import RUNTIME_FIELDS, TrainConfig
from . import pretrained_store  # noqa: F401  registers the config name "pretrain" (models.named_weights)
from . import batches as training_batches
from .device_step import LOG_EVERY_ACCELERATOR, compile_unavailable, cudnn_benchmark, host_values, to_device
from .identity import CODE_CHANGE_POLICIES, code_changes, default_run_dir, training_code
from ..data.datasets import UnreadableImageError, load_split, subsample_per_class
from ..data.samplers import RANK_SEED_STEP
from ..data.tools import ensure_dataset
from ..models.factory import build_model, transforms_for
from ..runtime import amp_dtype, init_distributed, resolve_device, seed_everything, torch_threads

SELECTION_METRIC = {"metric": "map@all", "ap": "voc", "average": "query", "ties": "stable"}


@dataclass
class TrainResult:
    run_dir: Path
    config: TrainConfig
    history: list[dict]
    best_epoch: int
    model: torch.nn.Module
    unreadable: dict[str, str] = field(default_factory=dict)  # unreadable images left out: path -> split/domain


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def _check_resumable(saved: dict, config: TrainConfig, run_dir: Path) -> None:
    now = config.to_dict()
    diff = sorted(k for k in set(saved) | set(now) if k not in RUNTIME_FIELDS and saved.get(k) != now.get(k))
    if diff:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in diff)
        raise ValueError(f"{run_dir} holds a run with other parameters ({detail}). Use another run folder, "
                         f"or resume=False to start it again (its checkpoint is then overwritten)")


def _check_code(saved: dict, current: dict, run_dir: Path, policy: str) -> bool:
    """Whether the checkpoint in ``run_dir`` may be used, given the code that trained it and ``policy``."""
    changed = code_changes(saved.get("code"), current)
    if not changed or policy == "reuse":
        return True
    if policy == "retrain":
        print(f"{run_dir.name}: the training code changed since this run was trained ({', '.join(changed)}); "
              "training it again")
        return False
    raise ValueError(f"{run_dir} was trained by other code (changed: {', '.join(changed)}). Train it again with "
                     "if_code_changed='retrain' (zssbir train --if-code-changed retrain), or use it as it is with "
                     "'reuse'")


def _readable_rows(features: np.ndarray, dataset) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels without the rows of unreadable images (``unreadable_images="skip"``)."""
    labels = np.asarray(dataset.labels)
    bad = getattr(dataset, "unreadable_found", {})
    if not bad:
        return features, labels
    keep = np.ones(len(labels), dtype=bool)
    keep[list(bad)] = False
    return features[keep], labels[keep]


SELECTION_SCORES = {"seen_val": "val_map@all", "unseen_test": "val_map@all", "last": "val_map@all",
                    "seen_val_top1": "val_top1"}  # the history key each selection rule scores


def validation_score(model, config: TrainConfig, data: dict, device: torch.device, split: str) -> float:
    """The score ``config.selection`` picks the best epoch by: retrieval mAP@all of the split's sketches among
    its photos (``SELECTION_METRIC``), or for "seen_val_top1" the top-1 accuracy of the model's seen-class
    logits on the split's sketches (the authors' rule). Encodes with ``config.num_workers`` loader workers
    (none with unreadable_images="skip": the images left out are only known in the process that met them)."""
    from .features import extract
    from ..eval.exact_search import evaluate_features

    sketches, photos = data[(split, "sketch")], data[(split, "photo")]
    if len(sketches) == 0:
        raise ValueError(f"the {split} split of {config.dataset} holds no sketches, so no epoch can be scored for "
                         f"selection={config.selection!r}: check its list ({sketches.info.list_path}) or use "
                         "selection='last'")
    workers = config.num_workers if config.unreadable_images == "error" else 0
    if config.selection == "seen_val_top1":
        logits, labels = _readable_rows(extract(model.classify, sketches, device=device, num_workers=workers), sketches)
        return float(np.mean(logits.argmax(axis=1) == labels))
    q, ql = _readable_rows(extract(model.embed, sketches, device=device, num_workers=workers), sketches)
    g, gl = _readable_rows(extract(model.embed, photos, device=device, num_workers=workers), photos)
    conv = SELECTION_METRIC
    result = evaluate_features(q, g, ql, gl, metrics=conv["metric"], ap=conv["ap"],
                               average=conv["average"], ties=conv["ties"])
    return result[conv["metric"]].value


def _stopped(err: UnreadableImageError, where: str, ckpt_path: Path, completed: int) -> UnreadableImageError:
    """The image error with what happened to the run: which epochs are saved and how to go on."""
    saved = (f"the {completed} completed epochs are saved in {ckpt_path}" if completed else
             "no epoch was completed yet")
    return UnreadableImageError(f"{UnreadableImageError.short(err)}\nTraining stopped {where}; {saved}. After the "
                                f"fix, the same command resumes from there.")


def train(config: TrainConfig, *, run_dir: str | Path | None = None, resume: bool = True, progress: bool = True,
          if_code_changed: str = "refuse") -> TrainResult:
    """Train ``config`` into ``run_dir`` (default ``<runs>/train/<run name>``; it receives checkpoint.pt,
    best.pt, config.yaml, history.json). A checkpoint there is resumed (a finished run is only reloaded)
    when its settings match and the training code is the one that wrote it; when the code changed,
    ``if_code_changed`` decides: "refuse" (an error naming the changed files), "retrain" or "reuse".
    ``config.torch_threads`` (if set) holds torch's thread count for the call; the previous count is restored,
    as is cuDNN's benchmark flag (set on CUDA)."""
    with torch_threads(config.torch_threads), cudnn_benchmark(resolve_device(config.device)):
        return _train(config, run_dir=run_dir, resume=resume, progress=progress, if_code_changed=if_code_changed)


def _train(config: TrainConfig, *, run_dir: str | Path | None, resume: bool, progress: bool,
           if_code_changed: str) -> TrainResult:
    if if_code_changed not in CODE_CHANGE_POLICIES:
        raise ValueError(f"if_code_changed must be one of {CODE_CHANGE_POLICIES}, got {if_code_changed!r}")
    device = resolve_device(config.device)
    rank, world = init_distributed(device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    run_dir = Path(run_dir) if run_dir else default_run_dir(config)
    seed_everything(config.seed)
    if rank == 0:
        ensure_dataset(config.dataset, data_root=config.data_root, progress=progress)
    if world > 1:
        torch.distributed.barrier()

    seen = load_split(config.dataset, "train", "photo", data_root=config.data_root)
    model = build_model(config, seen.class_names).to(device)
    if config.channels_last:  # the convolutions' weights (TrainConfig refuses the backbones without any)
        model = model.to(memory_format=torch.channels_last)
    train_tf, eval_tf = transforms_for(model, config, train=True), transforms_for(model, config, train=False)
    duplicates = config.list_duplicates
    data = {d: load_split(config.dataset, "train", d, data_root=config.data_root, transform=train_tf[d],
                          unreadable=config.unreadable_images, duplicates=duplicates,
                          cache_decoded=config.decoded_cache) for d in ("sketch", "photo")}
    val_split = "zero" if config.selection == "unseen_test" else "val"
    score_key = SELECTION_SCORES[config.selection]
    val_data = {(val_split, d): load_split(config.dataset, val_split, d, data_root=config.data_root,
                                           transform=eval_tf[d], unreadable=config.unreadable_images,
                                           duplicates=duplicates, cache_decoded=config.decoded_cache)
                for d in ("sketch", "photo")}
    if config.validation_gallery and (val_split, "photo") in val_data:
        val_data[(val_split, "photo")] = subsample_per_class(val_data[(val_split, "photo")],
                                                             config.validation_gallery, config.seed)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    dtype = amp_dtype(device) if config.amp else None
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    history, start, best = [], 0, {"epoch": -1, "score": -float("inf")}
    unreadable: dict[str, str] = {}  # images left out (unreadable_images="skip"): path -> split and domain
    pending = False  # the checkpoint's last epoch is trained but not validated
    ckpt_path = run_dir / "checkpoint.pt"
    code = training_code()
    state = torch.load(ckpt_path, map_location=device, weights_only=False) if resume and ckpt_path.is_file() else None
    if state is not None and _check_code(state, code, run_dir, if_code_changed):
        _check_resumable(state["config"], config, run_dir)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        history, start, best = state["history"], state["epoch"] + 1, state["best"]
        pending = not state.get("validated", True)
        unreadable = dict(state.get("unreadable", {}))
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        config.to_yaml(run_dir / "config.yaml")
    # a method's forward(batch) returns its loss terms, so DDP can wrap it as it is
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    compiled = False
    if config.compile:  # the backbone only: the methods' forward takes lists (pair ids) and draws L_DA's targets
        reason = compile_unavailable(model, device, world)
        if reason:
            print(f"{run_dir.name}: compile ignored: {reason}; training without torch.compile", file=sys.stderr)
        else:  # in place (state-dict keys unchanged); random ops (dropout) draw as they do uncompiled
            model.backbone.compile(options={"fallback_random": True})
            compiled = True
    every = config.log_every or (1 if device.type == "cpu" else LOG_EVERY_ACCELERATOR)
    pin = device.type == "cuda"
    workers = (training_batches.PersistentLoaders(config.num_workers) if training_batches.PERSISTENT_WORKERS and config.num_workers
               and config.unreadable_images == "error" else None)

    def save_checkpoint(epoch: int, rng: dict, validated: bool) -> None:
        _atomic_save({"config": config.to_dict(), "epoch": epoch, "model": model.state_dict(),
                      "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "rng": rng,
                      "history": history, "best": best, "code": code, "validated": validated,
                      "unreadable": unreadable}, ckpt_path)

    def record_unreadable(found: dict[str, str]) -> None:
        new = {p: w for p, w in found.items() if p not in unreadable}
        if not new:
            return
        unreadable.update(new)
        for ds in [*data.values(), *val_data.values()]:  # never decoded (nor reported) again in this run
            ds.mark_unreadable(new)
        (run_dir / "unreadable_images.json").write_text(json.dumps(
            {"count": len(unreadable), "policy": config.unreadable_images, "files": unreadable}, indent=1),
            encoding="utf-8")
        print(f"{run_dir.name}: left out {len(new)} more unreadable image(s) ({len(unreadable)} in all, listed in "
              f"{run_dir / 'unreadable_images.json'}): {', '.join(list(new)[:5])}", file=sys.stderr)

    def validate(epoch: int, record: dict) -> None:
        """Score the epoch, keep best.pt, then checkpoint it as validated (rank 0)."""
        nonlocal best
        rng = _rng_state()  # validation must not move the RNG streams training goes on with
        model.eval()
        try:
            record[score_key] = validation_score(model, config, val_data, device, val_split)
        except UnreadableImageError as err:
            raise _stopped(err, f"while validating epoch {epoch + 1} (its training is saved)", ckpt_path,
                           epoch + 1) from err
        _set_rng_state(rng)
        record_unreadable({ds.entries[i].path: f"{s} {d}" for (s, d), ds in val_data.items()
                           for i in ds.unreadable_found})
        if config.unreadable_images == "skip":
            record["unreadable_images"] = len(unreadable)
        if config.selection == "last" or record[score_key] > best["score"]:
            best = {"epoch": epoch, "score": record[score_key]}
            _atomic_save({"model": model.state_dict(), "epoch": epoch, "config": config.to_dict(),
                          "selection": config.selection, "score": best["score"],
                          "score_convention": SELECTION_METRIC if score_key == "val_map@all" else
                          {"metric": "top-1 accuracy", "split": val_split}, "code": code}, run_dir / "best.pt")
        save_checkpoint(epoch, rng, validated=True)
        (run_dir / "history.json").write_text(json.dumps(history, indent=2), encoding="utf-8")

    for ds in [*data.values(), *val_data.values()]:
        ds.mark_unreadable(unreadable)
        if config.decoded_cache and config.num_workers:  # loader workers (forked each epoch) inherit the pixels
            ds.fill_cache()
    if pending and rank == 0:  # the last run stopped after training this epoch, before its validation ended
        validate(start - 1, history[-1])
    if pending and world > 1:
        torch.distributed.barrier()

    try:
        for epoch in range(start, config.epochs):
            if world > 1:  # each rank its own augmentation and L_DA targets, the same after a resume
                seed_everything(config.seed * 1_000_003 + epoch * 101 + RANK_SEED_STEP * rank)
            lr = config.lr * config.lr_final_factor ** (epoch / config.epochs)
            for group in optimizer.param_groups:
                group["lr"] = lr
            model.train()
            steps, batches = training_batches.epoch_batches(data, config, epoch, rank, world, pin_memory=pin,
                                                            workers=workers)
            # the loss terms are summed on the device, in float64 and in step order: the sums a float() per term and
            # step gave (float32 values, exactly widened, added in float64), read on the host only every `every` steps
            sums: dict[str, torch.Tensor] = {}
            read = {"step": 0, "total": 0.0}  # the last read of the summed total loss
            found: dict[str, str] = {}
            t0 = time.perf_counter()
            bar = tqdm(batches, total=steps, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress or rank,
                       mininterval=2.0)  # few updates: notebooks keep every one in their output

            def check(step: int, total: float) -> None:
                """Stop on a non-finite loss met since the last read; else show the mean loss since then."""
                if not math.isfinite(total):
                    within = (f"at step {step}" if step - read["step"] == 1 else f"within steps {read['step'] + 1}-"
                              f"{step} (the loss is read every {every} steps: log_every)")
                    raise FloatingPointError(f"loss became {total} at epoch {epoch + 1}, {within}; lower lr (now "
                                             f"{lr:.2e}) or check the inputs. The last good checkpoint is {ckpt_path}")
                if step > read["step"]:
                    bar.set_postfix(loss=f"{(total - read['total']) / (step - read['step']):.3f}")
                read.update(step=step, total=total)

            try:
                for step, batch in enumerate(bar, 1):
                    found.update((p, "train") for met in batch.pop("unreadable", ()) for p in met.split("\n") if p)
                    batch = to_device(batch, device, config.channels_last)
                    with torch.autocast(device.type, dtype=dtype) if dtype else nullcontext():
                        terms = net(batch)
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(terms["total"]).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    for k, v in terms.items():
                        if k not in sums:
                            sums[k] = torch.zeros((), dtype=torch.float64, device=v.device)
                        sums[k].add_(v.detach().reshape(()))
                    if step % every == 0 and step < steps:
                        check(step, *host_values([sums["total"]]))
            except UnreadableImageError as err:
                raise _stopped(err, f"in epoch {epoch + 1}'s training steps", ckpt_path, epoch) from err
            totals = dict(zip(sums, host_values(list(sums.values())))) if sums else {}  # the epoch's one full read
            if "total" in totals:
                check(steps, totals["total"])
            if world > 1 and config.unreadable_images == "skip":  # every rank's left-out images
                gathered: list = [None] * world
                torch.distributed.all_gather_object(gathered, found)
                found = {p: w for part in gathered for p, w in part.items()}
            record = {"epoch": epoch, "lr": lr, "seconds": time.perf_counter() - t0,
                      **{k if k.startswith("stat_") else f"loss_{k}": v / steps for k, v in totals.items()}}
            if rank == 0:
                record_unreadable(found)
                history.append(record)
                rng = _rng_state()
                save_checkpoint(epoch, rng, validated=False)  # the epoch's training is safe before validating
                validate(epoch, record)
            if world > 1:
                torch.distributed.barrier()
    finally:
        if workers is not None:
            workers.close()
        if compiled:  # the model handed back runs as it was built
            model.backbone._compiled_call_impl = None
    return TrainResult(run_dir, config, history, best["epoch"], model, unreadable)


def load_trained(run_dir: str | Path, which: str = "best", device: str = "auto") -> tuple[torch.nn.Module, TrainConfig]:
    """The model saved in ``run_dir`` (``best.pt`` or the last ``checkpoint.pt``) and its config."""
    run_dir = Path(run_dir)
    path = run_dir / ("best.pt" if which == "best" else "checkpoint.pt")
    if not path.is_file():
        raise FileNotFoundError(f"no {path.name} in {run_dir}: train first (zssbir.training.loop.train) or check the path")
    state = torch.load(path, map_location="cpu", weights_only=False)
    config = TrainConfig.from_dict(state["config"])
    seen = load_split(config.dataset, "train", "photo", data_root=config.data_root, check_files=False)
    model = build_model(config, seen.class_names, for_training=False)  # no teacher, mask or ImageNet file needed
    training_only = ("teacher.", "class_mask")
    if getattr(model.backbone, "imagenet_head", None) is None:  # the small backbone's distillation head
        training_only += ("backbone.imagenet_head.",)
    model.load_state_dict({k: v for k, v in state["model"].items() if not k.startswith(training_only)})
    return model.to(resolve_device(device)).eval(), config
