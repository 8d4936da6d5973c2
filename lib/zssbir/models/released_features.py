"""The unseen split of a benchmark encoded by the authors' released checkpoint (``released_checkpoints``): sketches
the queries (domain tag 0), photos the gallery (tag 1), with the authors' preprocessing (the ``sake`` transform at
224 px), on the GPU under float16 autocast when there is one."""
from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from .released_checkpoints import load_authors_checkpoint


@torch.no_grad()
def _encode(backbone: nn.Module, dataset, device: torch.device, batch_size: int, num_workers: int, amp: bool,
            progress: bool) -> np.ndarray:
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    cuda = device.type == "cuda"
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=cuda)
    chunks = []
    for batch in tqdm(loader, desc=f"encode {dataset.info.domain}/{dataset.info.split}", disable=not progress):
        images = batch["image"].to(device, non_blocking=True)
        domains = torch.as_tensor(batch["domain"]).to(device)
        with torch.autocast("cuda", dtype=torch.float16, enabled=cuda and amp):
            out = backbone(images, domains).embedding
        chunks.append(out.float().cpu())
    feats = torch.cat(chunks).numpy() if chunks else np.zeros((0, backbone.embed_dim), np.float32)
    bad = ~np.isfinite(feats).all(axis=1)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} of {len(feats)} {dataset.info.domain} features are NaN or infinite (first "
                         f"at list entry {int(np.flatnonzero(bad)[0])})" + (": try amp=False" if cuda and amp else ""))
    return feats


def features_from_checkpoint(path, dataset: str, *, device: str | torch.device = "auto",
                             data_root: str | os.PathLike | None = None, batch_size: int = 256,
                             num_workers: int | None = None, image_size: int = 224, embed_dim: int | None = None,
                             duplicates: str = "drop", amp: bool = True, progress: bool = False) -> dict:
    """The unseen ("zero") split of ``dataset`` encoded by a released checkpoint: sketches are the queries (tag 0),
    photos the gallery (tag 1), with the ``sake`` transform at ``image_size`` (224: the authors' size).

    Returns ``{"query", "query_labels", "gallery", "gallery_labels"}`` (float32 un-normalised embeddings, int64
    unseen-class labels, in list order), ``"class_names"`` (unseen, label order), ``"checkpoint"``
    (:meth:`CheckpointInfo.summary`), ``"device"`` and ``"duplicates"``: score them with
    ``zssbir.eval.exact_search.evaluate_features(out["query"], out["gallery"], out["query_labels"],
    out["gallery_labels"], preset=...)``. ``device="auto"`` takes the GPU when there is one (float16 autocast
    unless ``amp=False``). ``duplicates``: how the photo list is read ("drop" the study's clean protocol, "keep"
    the lists as published, the authors' protocol). ``embed_dim``: None takes the file's hashing size.
    """
    from ..data.datasets import load_split
    from ..data.transforms import build_transform
    from ..runtime import resolve_device

    backbone, info = load_authors_checkpoint(path, dataset=dataset, embed_dim=embed_dim, data_root=data_root,
                                             image_size=image_size)
    dev = resolve_device(device)
    if num_workers is None:
        num_workers = min(8, os.cpu_count() or 1) if dev.type == "cuda" else 0
    backbone = backbone.to(dev).eval()
    if dev.type == "cuda":
        backbone = backbone.to(memory_format=torch.channels_last)
    out = {"checkpoint": info.summary(), "device": str(dev), "duplicates": duplicates}
    for domain, role in (("sketch", "query"), ("photo", "gallery")):
        ds = load_split(dataset, "zero", domain, data_root=data_root, duplicates=duplicates,
                        transform=build_transform(domain, image_size, "sake", train=False))
        out[role] = _encode(backbone, ds, dev, batch_size, num_workers, amp, progress)
        out[f"{role}_labels"] = np.asarray(ds.labels, dtype=np.int64)
        out["class_names"] = list(ds.class_names)
    return out
