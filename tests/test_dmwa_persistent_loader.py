"""DMWA's quadruplet loader keeps its workers across epochs (issue 24): each epoch's batches, augmented pixels
included, are those of the loader rebuilt every epoch, the workers start once, and a DMWA run trains, and resumes,
to the weights and history of one with fresh loaders."""
import pytest
import torch

from zssbir.data.datasets import load_split
from zssbir.data.quadruplets import QuadrupletDataset, QuadrupletSampler, quadruplet_batches, stack_quadruplets
from zssbir.data.samplers import make_loader
from zssbir.data.tools import ensure_dataset
from zssbir.data.transforms import build_transform
from zssbir.models.dmwa import DMWA
from zssbir.runtime import seed_everything
from zssbir.training import batches as training_batches
from zssbir.training.config import TrainConfig
from zssbir.training.loop import train

from conftest import count_worker_starts, interrupt_forward

TINY = dict(method="dmwa", lambda_da=0.0, dataset="synthetic_tiny", image_size=32, embed_dim=32, batch_size=16,
            epochs=3, max_steps_per_epoch=3, augment=True, torch_threads=1,
            backbone_params={"width": 32, "depth": 1, "heads": 2, "stem_channels": (8, 16, 32)})


def same_batch(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k]
                                        for k in a)


def rebuilt_epoch(data: dict, config: TrainConfig, epoch: int) -> list[dict]:
    """The batches of epoch ``epoch`` from a loader built for it alone (what quadruplet_batches did before issue 24)."""
    p = config.batch_size // 4
    sketches, photos = data["sketch"], data["photo"]
    quads = QuadrupletSampler(sketches.labels, sketches.pair_ids, photos.labels, photos.pair_ids,
                              seed=config.seed * 1_000_003 + 7, mismatched=config.mismatched_pairs).epoch(epoch)
    steps = min(len(quads) // p, config.max_steps_per_epoch)
    loader = make_loader(QuadrupletDataset(sketches, photos, quads[:steps * p]), p,
                         seed=config.seed * 1_000_003 + epoch * 101 + 3, shuffle=False,
                         drop_last=True, num_workers=config.num_workers)
    return [stack_quadruplets(b) for b in loader]


@pytest.fixture
def data(isolated_dirs):
    ensure_dataset("synthetic_tiny", progress=False)
    return {d: load_split("synthetic_tiny", "train", d, transform=build_transform(d, 32, train=True))
            for d in ("sketch", "photo")}


@pytest.mark.parametrize("num_workers", [0, 2])
def test_each_epoch_gives_the_batches_of_a_loader_rebuilt_for_it(data, monkeypatch, num_workers):
    """Three epochs (the second left after one batch, as an interrupted epoch leaves its loader): the same
    quadruplets and augmented pixels as a loader rebuilt per epoch. With two workers, one persistent loader whose
    iterator and worker processes are the same in every epoch; with none, nothing to keep (the loop passes no
    ``workers``)."""
    config = TrainConfig(**TINY, num_workers=num_workers)
    pool = training_batches.PersistentLoaders(num_workers) if num_workers else None
    starts = count_worker_starts(monkeypatch)
    iterators, pids = set(), set()
    try:
        for epoch, read in ((0, None), (1, 1), (2, None)):
            seed_everything(epoch)  # without workers, augmentation draws from the main process's random state
            expected = rebuilt_epoch(data, config, epoch)
            starts.clear()  # the rebuilt loader's own
            seed_everything(epoch)
            steps, batches = quadruplet_batches(data, config, epoch, 0, 1, workers=pool)
            assert steps == len(expected) == config.max_steps_per_epoch
            got = [b for _, b in zip(range(read or steps), batches)]
            assert len(got) == (read or steps)
            assert all(same_batch(a, b) for a, b in zip(expected, got))
            if pool is not None:
                assert starts == (["_Reseeding"] if epoch == 0 else [])  # the workers started once
                (entry,) = pool.entries.values()
                iterator = entry["loader"]._iterator
                iterators.add(id(iterator))
                pids.add(tuple(w.pid for w in iterator._workers))
    finally:
        if pool is not None:
            pool.close()
    if pool is not None:
        assert len(iterators) == 1 and len(pids) == 1 and len(next(iter(pids))) == 2


def test_dmwa_with_persistent_workers_trains_and_resumes_as_with_fresh_loaders(isolated_dirs, monkeypatch):
    """Two workers, three epochs: persistent workers (one start in training) end with the weights and history of
    fresh loaders (a start per epoch), and a run cut in epoch 2 resumes to them too."""
    config = TrainConfig(**TINY, num_workers=2)
    starts = count_worker_starts(monkeypatch)
    kept = train(config, run_dir=isolated_dirs / "kept", progress=False)
    assert starts.count("_Reseeding") == 1 and "QuadrupletDataset" not in starts
    starts.clear()
    monkeypatch.setattr(training_batches, "PERSISTENT_WORKERS", False)
    fresh = train(config, run_dir=isolated_dirs / "fresh", progress=False)
    assert starts.count("QuadrupletDataset") == config.epochs and "_Reseeding" not in starts
    a, b = kept.model.state_dict(), fresh.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in kept.history] == \
        [{k: v for k, v in h.items() if k != "seconds"} for h in fresh.history]

    monkeypatch.setattr(training_batches, "PERSISTENT_WORKERS", True)
    restore = interrupt_forward(monkeypatch, DMWA, 5)  # step 2 of epoch 2
    with pytest.raises(KeyboardInterrupt):
        train(config, run_dir=isolated_dirs / "cut", progress=False)
    restore()
    resumed = train(config, run_dir=isolated_dirs / "cut", progress=False)
    c = resumed.model.state_dict()
    assert all(torch.equal(c[k], a[k]) for k in a)
