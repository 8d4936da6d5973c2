"""Seeded samplers and DataLoaders: every shuffle comes from an explicit generator.

Samplers draw epoch ``e`` from ``seed + e`` (call ``set_epoch``), so a run resumed at epoch ``e``
sees the same batches as an uninterrupted one, and DDP ranks agree on the permutation.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class SeededShuffleSampler(Sampler[int]):
    """A fresh permutation per epoch from ``seed + epoch``; with ``num_replicas > 1`` each rank takes
    every ``num_replicas``-th index of it (the tail is padded by wrapping, as DistributedSampler does)."""

    def __init__(self, n: int, seed: int, shuffle: bool = True, num_replicas: int = 1, rank: int = 0):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside 0..{num_replicas - 1}")
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.num_replicas, self.rank, self.epoch = num_replicas, rank, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self) -> Iterator[int]:
        order = self._order()
        total = len(self) * self.num_replicas
        order = (order * (total // max(self.n, 1) + 1))[:total] if self.n else []
        return iter(order[self.rank::self.num_replicas])

    def __len__(self) -> int:
        return -(-self.n // self.num_replicas)


class ClassBalancedBatchSampler(Sampler[list[int]]):
    """Batches of ``classes_per_batch`` classes x ``samples_per_class`` items (P x K), for metric losses.

    Each epoch visits every class about ``len(labels) / batch_size`` times in total; classes with
    fewer than ``samples_per_class`` items are sampled with replacement.
    """

    def __init__(self, labels: Sequence[int], classes_per_batch: int, samples_per_class: int, seed: int,
                 batches_per_epoch: int | None = None):
        self.by_class: dict[int, np.ndarray] = {}
        groups: dict[int, list[int]] = defaultdict(list)
        for i, y in enumerate(labels):
            groups[int(y)].append(i)
        self.by_class = {c: np.asarray(ix) for c, ix in sorted(groups.items())}
        if classes_per_batch > len(self.by_class):
            raise ValueError(f"classes_per_batch={classes_per_batch} exceeds the {len(self.by_class)} classes present")
        self.p, self.k, self.seed, self.epoch = classes_per_batch, samples_per_class, seed, 0
        self.batches = batches_per_epoch or max(1, len(labels) // (self.p * self.k))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        classes = np.asarray(list(self.by_class))
        for _ in range(self.batches):
            batch: list[int] = []
            for c in rng.choice(classes, size=self.p, replace=False):
                pool = self.by_class[int(c)]
                batch += rng.choice(pool, size=self.k, replace=len(pool) < self.k).tolist()
            yield batch

    def __len__(self) -> int:
        return self.batches


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; numpy and random follow it
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


RANK_SEED_STEP = 7919  # added once per DDP rank to the seeds of per-rank randomness (augmentation, targets)


def make_loader(dataset: Dataset, batch_size: int, *, seed: int, shuffle: bool = False, drop_last: bool = False,
                num_workers: int = 0, sampler: Sampler | None = None, batch_sampler: Sampler | None = None,
                pin_memory: bool = False) -> DataLoader:
    """A DataLoader whose randomness (shuffling, worker seeds, augmentation) derives from ``seed``."""
    if sampler is None and batch_sampler is None:
        sampler = SeededShuffleSampler(len(dataset), seed, shuffle=shuffle)
    kwargs = dict(batch_size=batch_size, sampler=sampler, drop_last=drop_last)
    if batch_sampler is not None:
        kwargs = dict(batch_sampler=batch_sampler)
    return DataLoader(dataset, num_workers=num_workers, worker_init_fn=_seed_worker,
                      generator=torch.Generator().manual_seed(seed), pin_memory=pin_memory,
                      persistent_workers=False, **kwargs)
