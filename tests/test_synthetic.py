"""The procedural synthetic benchmark: determinism, layout, lists, atomic writes, validation."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zssbir.data import drawing_photo, synthetic
from zssbir.data.benchmarks import BENCHMARKS
from zssbir.data.lists import paired_photo_id, read_class_ids, read_list
from zssbir.data.synthetic import SyntheticConfig, class_vocabulary, ensure_synthetic, generate
from zssbir.data.synthetic_classes import MAX_CLASSES, choose_unseen

SMALL = SyntheticConfig(n_classes=6, n_unseen=2, instances_per_class=4, sketches_per_photo=2, image_size=40, seed=3)
BENCH = BENCHMARKS["synthetic"]


def tree_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def lst(root: Path, domain: str, split: str):
    return read_list(root / BENCH.list_dir / (BENCH.sketch_lists if domain == "sketch" else BENCH.photo_lists)[split])


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "small"
    generate(root, SMALL)
    return root


def test_same_seed_same_bytes_also_in_parallel(small, tmp_path):
    again = tmp_path / "again"
    generate(again, SMALL, workers=2)
    assert tree_hashes(again) == tree_hashes(small)


def image_hashes(root: Path) -> list[str]:
    return [h for rel, h in tree_hashes(root).items() if rel.endswith((".jpg", ".png"))]


def test_different_seed_different_data(small, tmp_path):
    """Two seeds name their classes differently, so paths cannot be compared: the images are compared by
    content, and no image of one tree reappears in the other."""
    other = tmp_path / "other"
    generate(other, SyntheticConfig(**{**SMALL.to_dict(), "seed": 4}))
    a, b = image_hashes(small), image_hashes(other)
    assert len(a) == len(b) == SMALL.n_classes * SMALL.instances_per_class * (1 + SMALL.sketches_per_photo)
    assert not set(a) & set(b)


def test_seed_decides_the_pixels_of_one_class_program():
    """The same class program and instance rendered under two seeds: other pixels (photo and every sketch);
    under one seed twice: the same pixels. Content, not only the class vocabulary, follows the seed."""
    program = class_vocabulary(SMALL.n_classes, SMALL.seed)[2]
    other_seed = SyntheticConfig(**{**SMALL.to_dict(), "seed": SMALL.seed + 1})

    def pixels(config, instance=1):
        photo, sketches = synthetic.render_instance(program, instance, config)
        return [np.asarray(im) for im in (photo, *sketches)]

    first, again, other = pixels(SMALL), pixels(SMALL), pixels(other_seed)
    assert len(first) == 1 + SMALL.sketches_per_photo
    assert all(np.array_equal(x, y) for x, y in zip(first, again))
    assert not any(np.array_equal(x, y) for x, y in zip(first, other))
    assert not np.array_equal(first[0], pixels(SMALL, instance=2)[0])  # and instances differ within a seed


def test_counts_match_config(small):
    c = SMALL
    n_val = c.n_val_instances
    assert n_val == 1  # 0.2 * 4 rounded half up
    expected = {("sketch", "train"): c.n_seen * (c.instances_per_class - n_val) * c.sketches_per_photo,
                ("sketch", "val"): c.n_seen * n_val * c.sketches_per_photo,
                ("sketch", "zero"): c.n_unseen * c.instances_per_class * c.sketches_per_photo,
                ("photo", "train"): c.n_seen * c.instances_per_class,
                ("photo", "val"): c.n_seen * c.instances_per_class,
                ("photo", "zero"): c.n_unseen * c.instances_per_class}
    manifest = json.loads((small / "generator.json").read_text())
    for (domain, split), n in expected.items():
        assert len(lst(small, domain, split)) == n
        assert manifest["counts"][domain][split] == n
    assert manifest["config"] == c.to_dict() and manifest["format_version"] == synthetic.FORMAT_VERSION
    assert sum(cl["split"] == "unseen" for cl in manifest["classes"]) == c.n_unseen


def test_labels_index_the_right_class_file(small):
    seen = read_class_ids(small / BENCH.list_dir / "cname_cid.txt")
    unseen = read_class_ids(small / BENCH.list_dir / "cname_cid_zero.txt")
    assert len(seen) == SMALL.n_seen and len(unseen) == SMALL.n_unseen
    assert not set(seen) & set(unseen)
    for domain in ("sketch", "photo"):
        for split in ("train", "val", "zero"):
            ids = unseen if split == "zero" else seen
            for e in lst(small, domain, split):
                cls = e.path.split("/")[2]
                assert ids[cls] == e.label, (domain, split, e)


def test_train_and_val_sketches_are_disjoint_and_cover_seen(small):
    train = {e.path for e in lst(small, "sketch", "train")}
    val = {e.path for e in lst(small, "sketch", "val")}
    assert not train & val
    seen = read_class_ids(small / BENCH.list_dir / "cname_cid.txt")
    on_disk = {p.relative_to(small).as_posix() for cls in seen
               for p in (small / synthetic.SKETCH_DIR / cls).glob("*.png")}
    assert train | val == on_disk
    # held out by instance: all sketches of one photo are on the same side
    assert not {paired_photo_id(p) for p in train} & {paired_photo_id(p) for p in val}


def test_listed_files_open_with_right_size_and_mode(small):
    size = SMALL.image_size
    for domain, mode, fmt in (("sketch", "L", "PNG"), ("photo", "RGB", "JPEG")):
        for split in ("train", "val", "zero"):
            for e in lst(small, domain, split):
                with Image.open(small / e.path) as im:
                    assert (im.size, im.mode, im.format) == ((size, size), mode, fmt)


def test_sketches_pair_with_a_photo_of_their_class(small):
    for sk_split, ph_split in (("train", "train"), ("val", "val"), ("zero", "zero")):
        photos = {(Path(e.path).stem, e.path.split("/")[2]) for e in lst(small, "photo", ph_split)}
        for e in lst(small, "sketch", sk_split):
            assert (paired_photo_id(e.path), e.path.split("/")[2]) in photos


def test_sketches_are_dark_lines_on_white_and_photos_are_not(small):
    for e in lst(small, "sketch", "zero"):
        a = np.asarray(Image.open(small / e.path))
        assert a.mean() > 200 and a.min() < 80
    for e in lst(small, "photo", "zero"):
        a = np.asarray(Image.open(small / e.path)).astype(int)
        assert (a.min(axis=2) > 240).mean() < 0.5  # not a white page
        assert np.ptp(a, axis=2).mean() > 8  # coloured


def test_unseen_classes_depend_on_seed():
    unseen = {tuple(choose_unseen(class_vocabulary(20, s), 5, s)) for s in range(4)}
    assert len(unseen) > 1
    names = {tuple(p.name for p in class_vocabulary(20, s)) for s in range(3)}
    assert len(names) > 1


def test_vocabulary_is_readable_unique_and_prefix_stable():
    programs = class_vocabulary(MAX_CLASSES, 0)
    assert MAX_CLASSES >= 60
    assert len({p.name for p in programs}) == MAX_CLASSES
    assert len({p.signature for p in programs}) == MAX_CLASSES
    assert all(p.describe().startswith(p.name + ": ") for p in programs)
    assert [p.describe() for p in class_vocabulary(10, 0)] == [p.describe() for p in programs[:10]]
    # unseen classes are new compositions of part kinds that occur in seen classes
    unseen = set(choose_unseen(programs[:40], 10, 0))
    seen_kinds = set().union(*(p.part_kinds for p in programs[:40] if p.index not in unseen))
    assert set().union(*(programs[i].part_kinds for i in unseen)) <= seen_kinds
    with pytest.raises(ValueError, match="n_classes"):
        class_vocabulary(MAX_CLASSES + 1, 0)


@pytest.mark.parametrize("size", [32, 256])
def test_render_instance_at_size_bounds(size):
    program = class_vocabulary(1, 0)[0]
    photo, sketches = synthetic.render_instance(program, 0, SyntheticConfig(n_classes=2, n_unseen=1, image_size=size,
                                                                            sketches_per_photo=2))
    assert photo.size == (size, size) and photo.mode == "RGB"
    assert [s.size for s in sketches] == [(size, size)] * 2 and all(s.mode == "L" for s in sketches)


def _fail_after(monkeypatch, n: int) -> None:
    real, calls = drawing_photo.render_photo, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > n:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(drawing_photo, "render_photo", failing)


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    _fail_after(monkeypatch, 5)
    root = tmp_path / "ds"
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate(root, SMALL)
    assert not root.exists()
    assert list(tmp_path.iterdir()) == []  # no half-written sibling either


def test_interrupted_generation_keeps_previous_data_set(small, tmp_path, monkeypatch):
    root = tmp_path / "ds"
    generate(root, SMALL)
    before = tree_hashes(root)
    _fail_after(monkeypatch, 5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate(root, SyntheticConfig(**{**SMALL.to_dict(), "seed": 9}))
    assert tree_hashes(root) == before
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


def test_ensure_synthetic_generates_once(tmp_path, monkeypatch):
    tiny = SyntheticConfig(n_classes=3, n_unseen=1, instances_per_class=2, sketches_per_photo=1, image_size=32)
    root = ensure_synthetic(tmp_path / "ds", tiny)
    assert (root / "generator.json").is_file()
    before = tree_hashes(root)

    def no_generate(*args, **kwargs):
        raise AssertionError("regenerated although the config matches")

    monkeypatch.setattr(synthetic, "generate", no_generate)
    assert ensure_synthetic(root, tiny) == root
    monkeypatch.undo()
    other = SyntheticConfig(**{**tiny.to_dict(), "seed": 1})
    ensure_synthetic(root, other)
    assert json.loads((root / "generator.json").read_text())["config"]["seed"] == 1
    assert tree_hashes(root) != before
    (root / "generator.json").write_text("{ broken")
    ensure_synthetic(root, other)  # an unreadable manifest means regenerate
    assert json.loads((root / "generator.json").read_text())["config"] == other.to_dict()


def test_ensure_synthetic_default_root(isolated_dirs, monkeypatch):
    calls = []
    monkeypatch.setattr(synthetic, "generate", lambda root, config, **kw: calls.append((Path(root), config)))
    root = ensure_synthetic()
    assert root == isolated_dirs / "data" / "synthetic"
    assert calls == [(root, SyntheticConfig())]


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_classes=1), "n_classes must be between 2 and"),
    (dict(n_classes=MAX_CLASSES + 1), "n_classes must be between"),
    (dict(n_classes=40.0), "n_classes must be an int"),
    (dict(n_unseen=0), "n_unseen must be between 1 and 39"),
    (dict(n_unseen=40), "n_unseen must be between 1 and 39"),
    (dict(instances_per_class=0), "instances_per_class"),
    (dict(sketches_per_photo=0), "sketches_per_photo"),
    (dict(image_size=31), "image_size must be between 32 and 256"),
    (dict(image_size=257), "image_size must be between 32 and 256"),
    (dict(val_fraction=1.0), r"val_fraction must be a number in \[0, 1\)"),
    (dict(val_fraction=-0.1), "val_fraction"),
    (dict(val_fraction=0.9, instances_per_class=2), "holds out all 2 instances"),
    (dict(seed=-1), "seed"),
    (dict(seed=True), "seed must be an int"),
])
def test_bad_parameters_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SyntheticConfig(**kwargs)


def test_generate_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="SyntheticConfig"):
        generate(tmp_path / "x", {"n_classes": 6})
    with pytest.raises(ValueError, match="workers"):
        generate(tmp_path / "x", SMALL, workers=0)
