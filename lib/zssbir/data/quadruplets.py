"""Quadruplets for DMWA: (anchor sketch, positive photo, negative photo, negative sketch).

An epoch visits every training photo once as the positive, in a seeded order (``seed + epoch``,
sharded over DDP ranks like ``SeededShuffleSampler``). For each positive photo:
  anchor sketch    one of the sketches drawn from that photo (Sketchy-style pairs), else any sketch
                   of its class;
  negative photo   a photo of another class;
  negative sketch  a sketch of another class (drawn independently of the negative photo).
Draws come from ``numpy.random.default_rng([seed, epoch, rank])``, so a resumed run repeats them.

Mismatched pairs (``mismatched``, a share in [0, 1)): a fixed set of training photos, the same for every seed and
epoch (drawn once from ``MISMATCH_TAG``: a property of the degraded data, not of the run), gets as its anchor a
sketch of ANOTHER class, drawn from a stream of its own, so the other draws stay those of clean data. These are the
low-quality pairs DMWA's weight list is meant to down-weight (``mismatched_photos`` says which they are).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .samplers import RANK_SEED_STEP, SeededShuffleSampler, make_loader

ROLES = ("sketch", "photo", "neg_photo", "neg_sketch")
MISMATCH_TAG = 977  # the random stream of the mismatched set and of its anchors


class QuadrupletSampler:
    """Index quadruplets (sketch, photo, neg_photo, neg_sketch) into a sketch and a photo dataset."""

    def __init__(self, sketch_labels: Sequence[int], sketch_pairs: Sequence[str], photo_labels: Sequence[int],
                 photo_ids: Sequence[str], seed: int, num_replicas: int = 1, rank: int = 0, mismatched: float = 0.0):
        self.sketch_labels, self.photo_labels = np.asarray(sketch_labels), np.asarray(photo_labels)
        by_class, by_pair = defaultdict(list), defaultdict(list)
        for i, (y, pair) in enumerate(zip(self.sketch_labels, sketch_pairs)):
            by_class[int(y)].append(i)
            if pair:
                by_pair[(int(y), pair)].append(i)
        missing = sorted({int(y) for y in self.photo_labels} - set(by_class))
        if missing:
            raise ValueError(f"training classes {missing[:10]} have photos but no sketches: a quadruplet needs an "
                             "anchor sketch of the photo's class; check the sketch list of the train split")
        if len(set(self.photo_labels.tolist())) < 2:
            raise ValueError("quadruplets need at least two training classes (negatives come from other classes)")
        self.sketches_of_class = {c: np.asarray(v) for c, v in by_class.items()}
        self.sketches_of_photo = [np.asarray(by_pair.get((int(y), pid), [])) for y, pid in zip(self.photo_labels, photo_ids)]
        self.paired_fraction = float(np.mean([len(s) > 0 for s in self.sketches_of_photo])) if len(photo_ids) else 0.0
        self.seed, self.num_replicas, self.rank = seed, num_replicas, rank
        self.mismatched = mismatched_photos(len(self.photo_labels), mismatched)

    def __len__(self) -> int:
        return -(-len(self.photo_labels) // self.num_replicas)

    def epoch(self, epoch: int) -> np.ndarray:
        """[n, 4] int array of (sketch, photo, neg_photo, neg_sketch) indices for this rank and epoch."""
        order = np.asarray(list(SeededShuffleSampler(len(self.photo_labels), self.seed + epoch,
                                                     num_replicas=self.num_replicas, rank=self.rank)), dtype=int)
        rng = np.random.default_rng([self.seed, epoch, self.rank])
        out = np.empty((len(order), 4), dtype=int)
        n_photos, n_sketches = len(self.photo_labels), len(self.sketch_labels)
        for row, j in enumerate(order):
            y = self.photo_labels[j]
            pool = self.sketches_of_photo[j]
            pool = pool if len(pool) else self.sketches_of_class[int(y)]
            out[row, 0], out[row, 1] = pool[rng.integers(len(pool))], j
            out[row, 2] = _draw_other(rng, self.photo_labels, y, n_photos)
            out[row, 3] = _draw_other(rng, self.sketch_labels, y, n_sketches)
        if self.mismatched.any():
            other = np.random.default_rng([MISMATCH_TAG, self.seed, epoch, self.rank])
            for row in np.flatnonzero(self.mismatched[out[:, 1]]):
                out[row, 0] = _draw_other(other, self.sketch_labels, self.photo_labels[out[row, 1]], n_sketches)
        return out


def mismatched_photos(n_photos: int, share: float) -> np.ndarray:
    """Boolean mask of the ``round(share * n_photos)`` training photos whose anchors are mismatched: a fixed draw
    (``MISMATCH_TAG``), so every run on the degraded data degrades the same photos."""
    mask = np.zeros(n_photos, dtype=bool)
    if share:
        mask[np.random.default_rng(MISMATCH_TAG).permutation(n_photos)[:int(round(share * n_photos))]] = True
    return mask


def _draw_other(rng: np.random.Generator, labels: np.ndarray, y: int, n: int) -> int:
    """A uniformly drawn index whose label differs from ``y`` (rejection sampling; classes are many)."""
    for _ in range(1000):
        i = int(rng.integers(n))
        if labels[i] != y:
            return i
    others = np.flatnonzero(labels != y)
    return int(others[rng.integers(len(others))])


class QuadrupletImages(Dataset):
    """Item ``(s, p, pn, sn)`` (a quadruplet's indices) = its four images, each as the underlying dataset returns it.
    Keyed by the quadruplet itself, so a loader whose workers outlive the epoch is handed each epoch's quadruplets
    by its sampler (``quadruplet_batches``)."""

    def __init__(self, sketches: Dataset, photos: Dataset):
        self.sketches, self.photos = sketches, photos

    def __getitem__(self, quadruplet: Sequence[int]) -> dict:
        s, p, pn, sn = (int(i) for i in quadruplet)
        return {"sketch": self.sketches[s], "photo": self.photos[p], "neg_photo": self.photos[pn],
                "neg_sketch": self.sketches[sn]}


class QuadrupletDataset(QuadrupletImages):
    """Item k = the four images of quadruplet k (row k of ``quadruplets``)."""

    def __init__(self, sketches: Dataset, photos: Dataset, quadruplets: np.ndarray):
        super().__init__(sketches, photos)
        self.quadruplets = quadruplets

    def __len__(self) -> int:
        return len(self.quadruplets)

    def __getitem__(self, k: int) -> dict:
        return super().__getitem__(self.quadruplets[k])


def stack_quadruplets(batch: dict) -> dict:
    """A collated quadruplet batch -> one image batch laid out [sketch; photo; neg_photo; neg_sketch]
    (P rows each), with label, domain, pair_id; the model splits it back by ``ROLES``."""
    parts = [batch[r] for r in ROLES]
    out = {"image": torch.cat([p["image"] for p in parts]), "label": torch.cat([p["label"] for p in parts]),
           "domain": torch.cat([torch.as_tensor(p["domain"]) for p in parts]),
           "pair_id": sum((list(p["pair_id"]) for p in parts), [])}
    if any("unreadable" in p for p in parts):  # unreadable_images="skip": unreadable images met (see datasets)
        out["unreadable"] = sum((list(p.get("unreadable", [])) for p in parts), [])
    return out


def quadruplet_batches(data: dict, config, epoch: int, rank: int, world: int, *,
                       workers=None):
    """Training batches of P = (batch_size / world) // 4 quadruplets; yields (steps, iterator) like
    ``training.batches.mixed_batches``. ``data`` = {"sketch": Dataset, "photo": Dataset} of the train split.
    ``workers`` (``training.batches.PersistentLoaders``): one loader kept with its worker processes from epoch to
    epoch, its sampler handing them the epoch's quadruplets (the same batches and draws as a fresh loader per epoch);
    None: a fresh loader per epoch."""
    per_rank = max(4, config.batch_size // world)
    p = per_rank // 4
    sketches, photos = data["sketch"], data["photo"]
    sampler = QuadrupletSampler(sketches.labels, sketches.pair_ids, photos.labels, photos.pair_ids,
                                seed=config.seed * 1_000_003 + 7, num_replicas=world, rank=rank,
                                mismatched=config.mismatched_pairs)
    quads = sampler.epoch(epoch)
    steps = len(quads) // p
    if config.max_steps_per_epoch:
        steps = min(steps, config.max_steps_per_epoch)
    if steps == 0:
        raise ValueError(f"{p} quadruplets per step per process exceed the {len(quads)} training photos")
    seed = config.seed * 1_000_003 + epoch * 101 + 3
    # worker seeds (augmentation) differ per rank; rank 0 keeps the single-process seed
    if workers is not None:
        images = workers.derived(("quadruplets", id(sketches), id(photos)), lambda: QuadrupletImages(sketches, photos))
        rows = [tuple(int(i) for i in row) for row in quads[:steps * p]]  # in order, as the fresh loader's
        loader = workers.loader(images, p, seed=seed + RANK_SEED_STEP * rank, sampler=rows, drop_last=True)
    else:
        loader = make_loader(QuadrupletDataset(sketches, photos, quads[:steps * p]), p,
                             seed=seed + RANK_SEED_STEP * rank, shuffle=False, drop_last=True,
                             num_workers=config.num_workers)
    return steps, (stack_quadruplets(b) for b in loader)
