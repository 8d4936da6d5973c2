"""Batched feature extraction with a content-keyed cache.

The cache key hashes everything that determines the features: the model weights (a digest of the
state dict), the data set id, split and domain, the exact list file content, the transform, and the
code version (zssbir version plus a digest of the package's model code). A change to any of them
gives a new key, so downstream notebooks never re-encode and never read stale features.

On CUDA (issue 24) extraction runs in large batches (``EXTRACTION_BATCH``; the environment variable
``ZSSBIR_EXTRACT_BATCH`` or ``batch_size=`` set another), with loader workers and pinned memory, under
autocast in ``runtime.amp_dtype`` (bf16, or fp16 where bf16 is missing; ``amp=False`` keeps float32); the
features are float32 either way, and the cache key records the autocast dtype, so features made in reduced
precision are never mistaken for float32 ones. On the CPU extraction is as before (batch 128, float32).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from .. import __version__, paths
from ..runtime import amp_dtype, resolve_device

_CODE_FILES = ("models", "training/features.py")
# images per extraction batch by device type (others: DEFAULT_EXTRACTION_BATCH); ZSSBIR_EXTRACT_BATCH overrides
EXTRACTION_BATCH = {"cuda": 512}
DEFAULT_EXTRACTION_BATCH = 128
EXTRACTION_WORKERS = {"cuda": 8}  # loader workers by device type when num_workers is None (others: 0)


def state_digest(module: torch.nn.Module) -> str:
    """sha256 of a module's state dict (names, shapes, dtypes and values)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def code_digest() -> str:
    root = Path(__file__).resolve().parent.parent  # the zssbir package
    h = hashlib.sha256(__version__.encode())
    for name in _CODE_FILES:
        for f in sorted((root / name).rglob("*.py")) if (root / name).is_dir() else [root / name]:
            if f.is_file():
                h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:16]


def transform_signature(transform) -> str:
    """``repr`` of a transform without memory addresses (functions and lambdas print them), so the
    same transform gives the same cache key in every process."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(transform))


def cache_key(model_digest: str, dataset, precision: str | None = None) -> dict:
    """What determines a dataset's features; ``precision`` (the autocast dtype, e.g. "bfloat16") only when
    extraction ran in reduced precision, so float32 keys are as they always were."""
    info = dataset.info
    key = {"model": model_digest, "dataset": info.dataset_id, "split": info.split, "domain": info.domain,
           "list_sha256": hashlib.sha256(info.list_path.read_bytes()).hexdigest(),
           "n": len(dataset), "transform": transform_signature(dataset.transform), "code": code_digest()}
    if precision is not None:
        key["precision"] = precision
    return key


def extraction_batch_size(device: str | torch.device = "auto") -> int:
    """Images per extraction batch on ``device``: ``ZSSBIR_EXTRACT_BATCH`` when set, else ``EXTRACTION_BATCH``
    (512 on CUDA), else ``DEFAULT_EXTRACTION_BATCH`` (128)."""
    env = os.environ.get("ZSSBIR_EXTRACT_BATCH", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"ZSSBIR_EXTRACT_BATCH must be a positive integer (images per extraction batch), "
                             f"got {env!r}")
        return int(env)
    return EXTRACTION_BATCH.get(resolve_device(device).type, DEFAULT_EXTRACTION_BATCH)


def extraction_precision(device: str | torch.device = "auto", amp: bool = True) -> torch.dtype | None:
    """The autocast dtype extraction runs under on ``device`` (``runtime.amp_dtype``), None for float32."""
    return amp_dtype(resolve_device(device)) if amp else None


@torch.no_grad()
def extract(encode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], dataset, *, batch_size: int | None = None,
            device: str | torch.device = "auto", num_workers: int | None = None, amp: bool = True,
            progress: bool = False) -> np.ndarray:
    """Features (float32, one row per list entry, in list order) of ``encode(images, domains)``.

    ``batch_size`` None: ``extraction_batch_size`` (512 on CUDA, 128 elsewhere); ``num_workers`` None: 8 loader
    workers on CUDA (at most the CPU count), none elsewhere; ``amp``: autocast where ``runtime.amp_dtype``
    says it pays (CUDA), float32 elsewhere. Raises if any feature is NaN or infinite: the model has diverged or
    an input is broken.
    """
    from tqdm.auto import tqdm

    dev = resolve_device(device)
    if batch_size is None:
        batch_size = extraction_batch_size(dev)
    if num_workers is None:
        num_workers = min(EXTRACTION_WORKERS.get(dev.type, 0), os.cpu_count() or 1)
    dtype = extraction_precision(dev, amp)
    cuda = dev.type == "cuda"
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=cuda)
    chunks = []
    for batch in tqdm(loader, desc=f"encode {dataset.info.domain}/{dataset.info.split}", disable=not progress):
        images = batch["image"].to(dev, non_blocking=cuda)
        domains = torch.as_tensor(batch["domain"]).to(dev, non_blocking=cuda)
        if dtype is None:
            out = encode(images, domains)
        else:
            with torch.autocast(dev.type, dtype=dtype):
                out = encode(images, domains)
        chunks.append(out.float() if cuda else out.float().cpu())  # on CUDA: one copy to the host at the end
    feats = torch.cat(chunks).cpu().numpy() if chunks else np.zeros((0, 0), np.float32)
    bad = ~np.isfinite(feats).all(axis=1)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} of {len(feats)} features are NaN or infinite (first at list entry "
                         f"{int(np.flatnonzero(bad)[0])}): the model has probably diverged; check the training loss "
                         f"and learning rate, or the input image")
    return feats


def cached_features(encode: Callable, model: torch.nn.Module, dataset, *, cache_dir: str | Path | None = None,
                    refresh: bool = False, **extract_kwargs) -> tuple[np.ndarray, np.ndarray]:
    """(features, labels) of ``dataset``, from the cache when the key matches, else extracted and stored
    (``extract_kwargs`` go to ``extract``; its device and amp decide the key's precision)."""
    dtype = extraction_precision(extract_kwargs.get("device", "auto"), extract_kwargs.get("amp", True))
    key = cache_key(state_digest(model), dataset, precision=None if dtype is None else str(dtype).split(".")[-1])
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    folder = Path(cache_dir) if cache_dir is not None else paths.cache_dir() / "features"
    path = folder / f"{key['dataset']}_{key['split']}_{key['domain']}_{digest}.npz"
    labels = np.asarray(dataset.labels, dtype=np.int64)
    if path.is_file() and not refresh:
        with np.load(path) as cached:
            if json.loads(str(cached["key"])) == key:
                return cached["features"], cached["labels"]
    feats = extract(encode, dataset, **extract_kwargs)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, features=feats, labels=labels, key=json.dumps(key, sort_keys=True))
    tmp.replace(path)
    return feats, labels
