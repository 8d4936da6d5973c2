"""The training batches of each method, for the loop (``training.loop``): ClusterRetri's mixed sketch and photo
batches (``mixed_batches``), DMWA's quadruplets (``data.quadruplets``), by method in ``BATCHES``; on CUDA they are
concatenated into pinned memory; ``PersistentLoaders`` keeps both methods' loader workers alive across epochs while
every draw stays that of fresh loaders (issue 24)."""
from __future__ import annotations

import inspect
import random
from typing import Callable, Hashable, Iterable

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, get_worker_info
from torch.utils.data._utils.worker import _generate_state

from ..config import TrainConfig
from ..data.quadruplets import quadruplet_batches
from ..data.samplers import RANK_SEED_STEP, SeededShuffleSampler, _seed_worker, make_loader


def _cat(parts: list[torch.Tensor], pin: bool) -> torch.Tensor:
    """torch.cat, into page-locked (pinned) memory when ``pin`` (a CUDA run: the copy to the device can then
    run without blocking the host). The loaders' own pinning would be lost here, in the concatenation."""
    if not pin:
        return torch.cat(parts)
    out = torch.empty((sum(p.shape[0] for p in parts), *parts[0].shape[1:]), dtype=parts[0].dtype, pin_memory=True)
    return torch.cat(parts, out=out)


def _collate(*batches: dict, pin: bool = False) -> dict:
    out = {"image": _cat([b["image"] for b in batches], pin), "label": _cat([b["label"] for b in batches], pin),
           "domain": _cat([torch.as_tensor(b["domain"]) for b in batches], pin),
           "pair_id": sum((list(b["pair_id"]) for b in batches), [])}
    if any("unreadable" in b for b in batches):  # unreadable_images="skip": unreadable images met (see datasets)
        out["unreadable"] = sum((list(b.get("unreadable", [])) for b in batches), [])
    return out


# Persistent loader workers (issue 24). A DataLoader with persistent_workers=True keeps its worker processes and their
# random states from one pass to the next: torch seeds a worker once, when it starts, from the base seed the loader's
# generator gives its first iterator. The training loaders are built anew for every pass (every epoch, every cycle of
# ClusterRetri's sketches) with a seed of their own, so that epoch e draws the same augmentation whether the run is
# resumed there or not; persistent workers as torch has them would go on with the states of the passes before
# (and a resumed run would then draw otherwise). PersistentLoaders keeps one DataLoader per Dataset and tags each
# index with its pass (a counter and the base seed a fresh loader of that pass would draw); a worker that meets a new
# tag first sets its random state exactly as a fresh worker of that pass would be set (torch's _worker_loop, then the
# loader's worker_init_fn, data.samplers._seed_worker), so the batches and every draw stay those of fresh loaders
# (tests/test_loop_device.py, tests/test_dmwa_persistent_loader.py compare them). DMWA's Dataset of an epoch is
# its quadruplets: one QuadrupletImages (``derived``) is kept instead, and the sampler hands it each epoch's
# quadruplets. Not used with unreadable_images="skip" (the workers' copies of a Dataset would not learn what the
# main process marks unreadable).
PERSISTENT_WORKERS = True  # the switch (tests compare with fresh loaders)


class _Reseeding(Dataset):
    """Item ``(tag, i)`` is ``dataset[i]``; the first item of a new tag first reseeds the worker (see above)."""

    def __init__(self, dataset: Dataset, worker_init_fn):
        self.dataset, self.worker_init_fn, self.tag = dataset, worker_init_fn, None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[tuple[int, int], int]):
        tag, index = key
        if tag != self.tag:
            self.tag = tag
            base_seed, worker = tag[1], get_worker_info().id
            seed = base_seed + worker  # as torch.utils.data._utils.worker._worker_loop seeds a starting worker
            random.seed(seed)
            torch.manual_seed(seed)
            np.random.seed(_generate_state(base_seed, worker))
            if self.worker_init_fn is not None:
                self.worker_init_fn(worker)
        return self.dataset[index]


class _Plan(Sampler):
    """The batch sampler of a persistent loader: the batches of the current pass, each index with its pass's tag."""

    def __init__(self):
        self.batches, self.tag = [], None

    def __iter__(self):
        batches, tag = self.batches, self.tag
        for batch in batches:
            yield [(tag, i) for i in batch]

    def __len__(self) -> int:
        return len(self.batches)


class _Pass:
    """One pass of a persistent loader (what a fresh loader would be): its length, and its batches when iterated."""

    def __init__(self, entry: dict, batches: BatchSampler, seed: int):
        self.entry, self.batches, self.seed = entry, batches, seed

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        entry = self.entry
        entry["passes"] += 1
        generator = torch.Generator().manual_seed(self.seed)  # the generator make_loader gives a fresh loader,
        base_seed = torch.empty((), dtype=torch.int64).random_(generator=generator).item()  # and its first draw
        entry["plan"].batches, entry["plan"].tag = self.batches, (entry["passes"], base_seed)
        return iter(entry["loader"])


class PersistentLoaders:
    """One DataLoader per training Dataset, its ``num_workers`` workers kept from pass to pass, drawing what the
    fresh loaders of ``make_loader`` (one per pass) would draw. One pass of a Dataset at a time."""

    def __init__(self, num_workers: int):
        if num_workers < 1:
            raise ValueError("persistent loaders need num_workers > 0")
        self.num_workers, self.entries, self.datasets = num_workers, {}, {}

    def derived(self, key: Hashable, make: Callable[[], Dataset]) -> Dataset:
        """The Dataset ``make()`` gave when ``key`` was first asked for: one object from pass to pass, so its loader
        (kept per Dataset object) is too."""
        if key not in self.datasets:
            self.datasets[key] = make()
        return self.datasets[key]

    def loader(self, dataset: Dataset, batch_size: int, *, seed: int, sampler: Sampler | Iterable,
               drop_last: bool) -> _Pass:
        """The pass ``make_loader(dataset, batch_size, seed=seed, sampler=sampler, drop_last=drop_last,
        num_workers=self.num_workers)`` would make."""
        entry = self.entries.get(id(dataset))
        if entry is None:
            plan = _Plan()
            # a generator of its own: without one, torch would draw the (unused) base seed from the global stream
            loader = DataLoader(_Reseeding(dataset, _seed_worker), batch_sampler=plan, num_workers=self.num_workers,
                                worker_init_fn=_seed_worker, generator=torch.Generator(), persistent_workers=True)
            entry = self.entries[id(dataset)] = {"loader": loader, "plan": plan, "passes": 0, "dataset": dataset}
        return _Pass(entry, BatchSampler(sampler, batch_size, drop_last), seed)

    def close(self) -> None:
        """End the workers now (they would end with the loaders, when these are collected)."""
        for entry in self.entries.values():
            iterator = getattr(entry["loader"], "_iterator", None)
            if iterator is not None:
                iterator._shutdown_workers()
        self.entries.clear()
        self.datasets.clear()


def mixed_batches(data: dict, config: TrainConfig, epoch: int, rank: int, world: int, *, pin_memory: bool = False,
                  workers: PersistentLoaders | None = None):
    """ClusterRetri batches: ``sketch_fraction`` sketches and the rest photos, from separate loaders.

    Yields (steps, iterator). ``config.epoch_mode`` "photos": an epoch is one pass over the photos, sketches
    cycle if fewer; "shorter_loader": the two loaders are zipped as in the authors' code, so the epoch ends
    with the shorter one. ``pin_memory``: batches in pinned memory (CUDA); ``workers``: loaders whose worker
    processes outlive the epoch (the same batches and draws as the fresh loaders of every epoch).
    """
    per_rank = max(2, config.batch_size // world)
    n_sketch = max(1, round(per_rank * config.sketch_fraction))
    n_photo = per_rank - n_sketch

    def loader(domain: str, batch: int, salt: int):
        ds = data[domain]
        seed = config.seed * 1_000_003 + epoch * 101 + salt
        sampler = SeededShuffleSampler(len(ds), seed, num_replicas=world, rank=rank)  # one permutation, split
        if workers is not None:
            return workers.loader(ds, batch, seed=seed + RANK_SEED_STEP * rank, sampler=sampler, drop_last=True)
        return make_loader(ds, batch, seed=seed + RANK_SEED_STEP * rank, sampler=sampler, drop_last=True,
                           num_workers=config.num_workers)  # worker seeds (augmentation) differ per rank

    photos = loader("photo", n_photo, 0)
    steps = len(photos)
    if config.epoch_mode == "shorter_loader":
        steps = min(steps, len(loader("sketch", n_sketch, 1)))
    if config.max_steps_per_epoch:
        steps = min(steps, config.max_steps_per_epoch)
    if steps == 0:
        raise ValueError(f"batch of {n_photo} photos per process exceeds the {len(data['photo'])} training photos")

    def iterate():
        sketch_iter, cycle = iter(loader("sketch", n_sketch, 1)), 1
        for step, photo_batch in enumerate(photos):
            if step == steps:
                return
            try:
                sketch_batch = next(sketch_iter)
            except StopIteration:
                cycle += 1
                sketch_iter = iter(loader("sketch", n_sketch, cycle))
                sketch_batch = next(sketch_iter)
            yield _collate(sketch_batch, photo_batch, pin=pin_memory)

    return steps, iterate()


# how each method draws its training batches: (data, config, epoch, rank, world) -> (steps, iterator); a function
# that also takes the keywords pin_memory and workers (as mixed_batches does) is given them
BATCHES = {"clusterretri": mixed_batches, "dmwa": quadruplet_batches}


def epoch_batches(data: dict, config: TrainConfig, epoch: int, rank: int, world: int, **extras):
    make = BATCHES[config.method]
    accepted = inspect.signature(make).parameters
    return make(data, config, epoch, rank, world, **{k: v for k, v in extras.items() if k in accepted})
