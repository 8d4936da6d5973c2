import numpy as np
import pytest
import torch
from PIL import Image

from conftest import fabricate_sketchy_style
from zssbir.data.datasets import MissingDataError, load_split
from zssbir.data.samplers import ClassBalancedBatchSampler, SeededShuffleSampler, make_loader
from zssbir.data.summary import count_table, load_all, pairs
from zssbir.data.tools import ensure_dataset
from zssbir.data.transforms import build_transform, crop_white_border, pad_to_square


@pytest.fixture
def tree(isolated_dirs):
    return fabricate_sketchy_style(isolated_dirs / "data" / "synthetic")


def test_items_carry_label_domain_and_pair(tree):
    sketches = load_split("synthetic", "train", "sketch", transform=build_transform("sketch", 16))
    item = sketches[0]
    assert item["image"].shape == (3, 16, 16)
    assert item["domain"] == 0 and item["label"] in (0, 1) and item["pair_id"].endswith("_0000")
    photos = load_split("synthetic", "zero", "photo")
    assert photos.class_names == ("teddy bear",) and photos[0]["domain"] == 1
    assert isinstance(photos[0]["image"], Image.Image)


def test_splits_and_counts(tree):
    data = load_all("synthetic")
    table = count_table(data)
    assert set(table["split"]) == {"seen (train)", "seen (held-out val)", "unseen (test)"}
    assert table["count"].sum() == 2 * 2 + 2 * 2 + 2 * 1 + 1 * 2  # photos, seen sketches, unseen sketches
    assert "hot air balloon" in set(table["class"])
    linked = pairs(data[("zero", "sketch")], data[("zero", "photo")])
    assert sorted(len(v) for v in linked.values()) == [1, 1]


def test_missing_data_fails_early_with_instructions(isolated_dirs):
    with pytest.raises(MissingDataError, match="zssbir data generate synthetic"):
        load_split("synthetic", "train", "sketch")


def test_listed_but_absent_file(tree):
    (tree / "sketch/tx_000000000000_ready/teddy bear/teddy_bear_0000-1.png").unlink()
    with pytest.raises(MissingDataError, match=r"1 of 2 files listed .* missing(?s:.*)teddy_bear_0000-1.png"):
        load_split("synthetic", "zero", "sketch")


def test_corrupt_image_names_the_file(tree):
    victim = tree / "photo/tx_000000000000_ready/teddy bear/teddy_bear_0001.jpg"
    victim.write_bytes(b"not a jpeg")
    ds = load_split("synthetic", "zero", "photo")
    with pytest.raises(OSError, match="cannot read image .*teddy_bear_0001.jpg"):
        ds[1]


def test_labels_outside_class_file(tree):
    lst = tree / "zeroshot" / "all_photo_filelist_zero.txt"
    lst.write_text(lst.read_text().replace(" 0\n", " 5\n"))
    with pytest.raises(ValueError, match="outside 0..0 .* disagree"):
        load_split("synthetic", "zero", "photo")


def test_unknown_dataset_split_domain(tree):
    with pytest.raises(ValueError, match="unknown dataset id"):
        load_split("sketchy", "train", "sketch")
    with pytest.raises(ValueError, match="unknown split"):
        load_split("synthetic", "test", "sketch")
    with pytest.raises(ValueError, match="unknown domain"):
        load_split("synthetic", "train", "image")


def test_transforms_conventions():
    img = Image.new("RGB", (40, 20), (255, 255, 255))
    img.paste((0, 0, 0), (10, 5, 20, 10))
    assert crop_white_border(img).size == (10, 5)
    assert pad_to_square(crop_white_border(img), (255, 255, 255)).size == (10, 10)
    inverted = build_transform("sketch", 8, "sem_pcyc")(Image.new("RGB", (8, 8), (255, 255, 255)))
    assert torch.allclose(inverted, torch.zeros(3, 8, 8))
    half = build_transform("photo", 8, "zse_sbir")(Image.new("RGB", (8, 8), (255, 255, 255)))
    assert torch.allclose(half, torch.ones(3, 8, 8))
    with pytest.raises(ValueError, match="unknown transform convention"):
        build_transform("photo", 8, "imagenet")


def test_shuffle_sampler_is_seeded_per_epoch_and_splits_ranks():
    a, b = SeededShuffleSampler(10, seed=3), SeededShuffleSampler(10, seed=3)
    assert list(a) == list(b) and sorted(a) == list(range(10))
    a.set_epoch(1)
    assert list(a) != list(b)
    ranks = [list(SeededShuffleSampler(10, seed=3, num_replicas=3, rank=r)) for r in range(3)]
    assert all(len(r) == 4 for r in ranks) and set(sum(ranks, [])) == set(range(10))


def test_class_balanced_batches():
    labels = [0] * 5 + [1] * 3 + [2] * 8
    s = ClassBalancedBatchSampler(labels, classes_per_batch=2, samples_per_class=4, seed=0, batches_per_epoch=6)
    batches = list(s)
    assert len(batches) == 6 and list(ClassBalancedBatchSampler(labels, 2, 4, seed=0, batches_per_epoch=6)) == batches
    for batch in batches:
        classes = [labels[i] for i in batch]
        assert len(set(classes)) == 2 and all(classes.count(c) == 4 for c in set(classes))
    with pytest.raises(ValueError, match="exceeds"):
        ClassBalancedBatchSampler(labels, 4, 2, seed=0)


def test_loader_order_depends_only_on_seed():
    data = list(range(20))
    order = lambda seed: torch.cat([b for b in make_loader(data, 4, seed=seed, shuffle=True)]).tolist()
    assert order(1) == order(1) != order(2)
    assert torch.cat(list(make_loader(data, 4, seed=1))).tolist() == data


def test_ensure_real_dataset_missing_reports_all_files(isolated_dirs, monkeypatch):
    from zssbir.data import benchmarks

    fake = benchmarks.Benchmark(id="fake", folder="Fake", list_dir="zs", how_to_get="download it from X",
                                sketch_lists={"train": "s_tr", "val": "s_te", "zero": "s_z"},
                                photo_lists={"train": "p_tr", "val": "p_tr", "zero": "p_z"})
    monkeypatch.setitem(benchmarks.BENCHMARKS, "fake", fake)
    with pytest.raises(MissingDataError, match=r"(?s)not ready under .*Fake.*cname_cid.txt.*s_z.*download it from X"):
        ensure_dataset("fake")
