"""Batched feature extraction with a content-keyed cache.

The cache key hashes everything that determines the features: the model weights (a digest of the
state dict), the data set id, split and domain, the exact list file content, the transform, and the
code version (zssbir version plus a digest of the package's model code). A change to any of them
gives a new key, so downstream notebooks never re-encode and never read stale features.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from .. import __version__, paths
from ..runtime import resolve_device

_CODE_FILES = ("models", "training/features.py")


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


def cache_key(model_digest: str, dataset) -> dict:
    info = dataset.info
    return {"model": model_digest, "dataset": info.dataset_id, "split": info.split, "domain": info.domain,
            "list_sha256": hashlib.sha256(info.list_path.read_bytes()).hexdigest(),
            "n": len(dataset), "transform": transform_signature(dataset.transform), "code": code_digest()}


@torch.no_grad()
def extract(encode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], dataset, *, batch_size: int = 128,
            device: str | torch.device = "auto", num_workers: int = 0, progress: bool = False) -> np.ndarray:
    """Features (float32, one row per list entry, in list order) of ``encode(images, domains)``.

    Raises if any feature is NaN or infinite: the model has diverged or an input is broken.
    """
    from tqdm.auto import tqdm

    dev = resolve_device(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    chunks = []
    for batch in tqdm(loader, desc=f"encode {dataset.info.domain}/{dataset.info.split}", disable=not progress):
        out = encode(batch["image"].to(dev), torch.as_tensor(batch["domain"]).to(dev))
        chunks.append(out.float().cpu())
    feats = torch.cat(chunks).numpy() if chunks else np.zeros((0, 0), np.float32)
    bad = ~np.isfinite(feats).all(axis=1)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} of {len(feats)} features are NaN or infinite (first at list entry "
                         f"{int(np.flatnonzero(bad)[0])}): the model has probably diverged; check the training loss "
                         f"and learning rate, or the input image")
    return feats


def cached_features(encode: Callable, model: torch.nn.Module, dataset, *, cache_dir: str | Path | None = None,
                    refresh: bool = False, **extract_kwargs) -> tuple[np.ndarray, np.ndarray]:
    """(features, labels) of ``dataset``, from the cache when the key matches, else extracted and stored."""
    key = cache_key(state_digest(model), dataset)
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
