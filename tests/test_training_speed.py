"""The speed options of training (issue 13): the decoded-image cache changes no pixel and no weight, stays within
its memory bound and survives loader workers; torch_threads holds during training only; neither names the run."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zssbir.data.datasets import ListDataset, load_split
from zssbir.data.transforms import build_transform
from zssbir.training.config import TrainConfig
from zssbir.training.identity import run_name
from zssbir.training.loop import train

from conftest import fabricate_sketchy_style

TINY = dict(dataset="synthetic_tiny", image_size=32, embed_dim=32, batch_size=12, epochs=1, max_steps_per_epoch=3,
            backbone_params={"width": 32, "depth": 1, "heads": 2, "stem_channels": (8, 16, 32)}, augment=True)


@pytest.fixture
def sketchy(isolated_dirs):
    from zssbir.data.benchmarks import BENCHMARKS

    fabricate_sketchy_style(isolated_dirs / "data" / "synthetic", per_class=3)
    return BENCHMARKS["synthetic"]


def test_cached_images_are_the_decoded_pixels_and_decoded_once(sketchy):
    tf = build_transform("photo", 16, train=True)
    plain = load_split("synthetic", "train", "photo", transform=tf)
    cached = load_split("synthetic", "train", "photo", transform=tf, cache_decoded=True)
    expected = []
    for round_ in range(2):  # the same augmented tensors, read after read (the augmentation draws the same too)
        torch.manual_seed(round_)
        expected.append([plain[i]["image"] for i in range(len(plain))])
    for i in range(len(plain)):
        assert np.array_equal(np.asarray(plain.load_image(i)), np.asarray(cached.load_image(i)))
        assert cached.load_image(i).mode == "RGB"
    for i in range(len(cached)):
        cached.path(i).unlink()  # every later read comes from memory
    for round_ in range(2):
        torch.manual_seed(round_)
        assert all(torch.equal(x, cached[i]["image"]) for i, x in enumerate(expected[round_]))
    assert cached.cache_bytes == len(cached) * 24 * 24 * 3  # the fabricated images are 24 px RGB


def test_cache_respects_its_memory_bound(sketchy):
    one = 24 * 24 * 3
    ds = load_split("synthetic", "train", "sketch")
    bounded = ListDataset(ds.info, ds.entries, cache_decoded=True, cache_limit_mb=2.5 * one / 2**20)
    assert bounded.fill_cache() == 2 * one and len(bounded._cache) == 2
    bounded.path(len(ds) - 1).unlink()  # past the bound: decoded on every read, so a missing file is noticed
    with pytest.raises(FileNotFoundError):
        bounded.load_image(len(ds) - 1)
    assert ListDataset(ds.info, ds.entries, cache_decoded=True, cache_limit_mb=0).fill_cache() == 0
    assert ds.fill_cache() == 0 and not ds._cache  # off by default


def test_training_with_the_cache_ends_with_the_same_weights_and_threads_are_restored(isolated_dirs):
    before = torch.get_num_threads()
    settings = dict(TINY, num_workers=1, torch_threads=1)  # a loader worker, which inherits the filled cache
    threads_seen = []
    original = torch.nn.Module.train

    def spy(self, mode=True):
        threads_seen.append(torch.get_num_threads())
        return original(self, mode)

    torch.nn.Module.train = spy
    try:
        plain = train(TrainConfig(**settings), run_dir=isolated_dirs / "plain", progress=False).model.state_dict()
        cached_config = TrainConfig(**settings, decoded_cache=True)
        with pytest.MonkeyPatch.context() as mp:  # once filled, a Dataset may not decode again, in any process
            fill, decode, filled = ListDataset.fill_cache, ListDataset._decode, []

            def fill_and_forbid(self):
                out = fill(self)
                self.filled = filled.append(self) or True
                return out

            def checked_decode(self, index):
                assert not getattr(self, "filled", False), "decoded again after fill_cache"
                return decode(self, index)

            mp.setattr(ListDataset, "fill_cache", fill_and_forbid)
            mp.setattr(ListDataset, "_decode", checked_decode)
            cached = train(cached_config, run_dir=isolated_dirs / "cached", progress=False).model.state_dict()
        assert len(filled) == 4  # train and val, sketches and photos
    finally:
        torch.nn.Module.train = original
    assert set(threads_seen) == {1} and torch.get_num_threads() == before
    assert plain.keys() == cached.keys() and all(torch.equal(cached[k], plain[k]) for k in plain)
    assert run_name(cached_config) == run_name(TrainConfig(**TINY))  # runtime settings do not name the run


def test_speed_options_are_validated():
    with pytest.raises(ValueError, match="torch_threads"):
        TrainConfig(torch_threads=0)
    with pytest.raises(ValueError, match="decoded_cache"):
        TrainConfig(decoded_cache="yes")
