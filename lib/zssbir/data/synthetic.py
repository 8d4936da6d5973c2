"""The embedded synthetic benchmark: a seeded, procedural, Sketchy-like ZS-SBIR data set.

Classes are compositions of a shared part vocabulary (``synthetic_classes``); each instance is
posed and coloured (``drawing``) and yields one photo (``drawing_photo``: RGB JPEG, textured
parts on clutter) and ``sketches_per_photo`` sketches (``drawing_sketch``: greyscale "L" PNG,
wobbly outlines on white). Layout under ``root`` (list names from ``BENCHMARKS["synthetic"]``):

    sketch/tx_000000000000_ready/<class>/<class>_<NNNN>-<k>.png   k = 1..sketches_per_photo
    photo/tx_000000000000_ready/<class>/<class>_<NNNN>.jpg        NNNN = instance index from 0
    zeroshot/cname_cid.txt, cname_cid_zero.txt                    seen / unseen classes, ids by name
    zeroshot/<sketch and photo lists of the train, val ("test") and zero splits>
    generator.json                                                manifest, written last

Determinism: every random choice comes from ``np.random.default_rng`` / ``SeedSequence`` seeded by
``[seed, tag, class index, instance index]``, so the same config gives the same bytes on disk.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from . import drawing, drawing_photo, drawing_sketch
from .benchmarks import BENCHMARKS
from .lists import Entry, write_class_ids, write_list
from .synthetic_classes import (MAX_CLASSES, ClassProgram, check_appearance, choose_unseen,
                                class_vocabulary, dress_instance)

__all__ = ["SyntheticConfig", "generate", "ensure_synthetic", "load_manifest", "class_vocabulary",
           "ClassProgram", "render_instance", "FORMAT_VERSION", "MAX_CLASSES"]

FORMAT_VERSION = 1
MANIFEST = "generator.json"
PHOTO_DIR = "photo/tx_000000000000_ready"
SKETCH_DIR = "sketch/tx_000000000000_ready"
JPEG_QUALITY = 90
MIN_SIZE, MAX_SIZE = 32, 256
_INSTANCE_TAG, _SPLIT_TAG, _APPEARANCE_TAG = 201, 202, 203
_BENCH = BENCHMARKS["synthetic"]


def _check_int(name: str, value: object, lo: int, hi: int, why: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}{why}, got {value}")


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the synthetic benchmark (all validated on construction).

    val_fraction: the share of each SEEN class's instances whose sketches are held out for the
    ``val`` split (list ``..._filelist_test.txt``); rounded half up, at least one instance stays in train.
    """

    n_classes: int = 40
    n_unseen: int = 10
    instances_per_class: int = 30
    sketches_per_photo: int = 3
    image_size: int = 64
    val_fraction: float = 0.2
    seed: int = 0
    appearance: str = "class"

    def __post_init__(self) -> None:
        _check_int("n_classes", self.n_classes, 2, MAX_CLASSES, " (at least 2; at most the number of class names)")
        _check_int("n_unseen", self.n_unseen, 1, self.n_classes - 1,
                   f" (at least one unseen and one seen class among n_classes={self.n_classes})")
        _check_int("instances_per_class", self.instances_per_class, 1, 9999)
        _check_int("sketches_per_photo", self.sketches_per_photo, 1, 20)
        _check_int("image_size", self.image_size, MIN_SIZE, MAX_SIZE, " pixels")
        _check_int("seed", self.seed, 0, 2**63 - 1, " (a non-negative int)")
        check_appearance(self.appearance)
        vf = self.val_fraction
        if isinstance(vf, bool) or not isinstance(vf, (int, float, np.floating)) or not 0 <= vf < 1:
            raise ValueError(f"val_fraction must be a number in [0, 1), got {vf!r}")
        object.__setattr__(self, "val_fraction", float(vf))
        if self.n_val_instances >= self.instances_per_class:
            raise ValueError(f"val_fraction={vf} holds out all {self.instances_per_class} instances of each seen "
                             "class; "
                             "lower it or raise instances_per_class so at least one instance stays in train")

    @property
    def n_seen(self) -> int:
        return self.n_classes - self.n_unseen

    @property
    def n_val_instances(self) -> int:
        """Held-out instances per seen class: val_fraction * instances_per_class rounded half up."""
        return int(np.floor(self.val_fraction * self.instances_per_class + 0.5))

    def to_dict(self) -> dict:
        return asdict(self)


def photo_id(program: ClassProgram, instance: int) -> str:
    return f"{program.name}_{instance:04d}"


def held_out_instances(program: ClassProgram, config: SyntheticConfig) -> list[int]:
    """Instances of a seen class whose sketches go to the val split (drawn by the seed)."""
    rng = np.random.default_rng([config.seed, _SPLIT_TAG, program.index])
    return sorted(int(i) for i in rng.permutation(config.instances_per_class)[:config.n_val_instances])


def instance_parts(program: ClassProgram, instance: int, seed: int, appearance: str, tag: int = _APPEARANCE_TAG):
    """The parts an instance is drawn from: the class program's, or re-dressed from their own random stream
    ``[seed, tag, class index, instance]`` under ``appearance="instance"`` (the other streams stay as they are)."""
    if check_appearance(appearance) == "class":
        return program.parts
    return dress_instance(program.parts, np.random.default_rng([seed, tag, program.index, instance]))


def render_instance(program: ClassProgram, instance: int, config: SyntheticConfig
                    ) -> tuple[Image.Image, list[Image.Image]]:
    """The photo (RGB) and sketches (L) of one instance, exactly as ``generate`` writes them."""
    seq = np.random.SeedSequence([config.seed, _INSTANCE_TAG, program.index, instance])
    geometry, photo, *sketches = (np.random.default_rng(s) for s in seq.spawn(2 + config.sketches_per_photo))
    parts = drawing.make_instance(instance_parts(program, instance, config.seed, config.appearance), geometry)
    image = drawing_photo.render_photo(parts, photo, config.image_size)
    runs = drawing_sketch.visible_runs(parts)
    return image, [drawing_sketch.render_sketch(runs, rng, config.image_size) for rng in sketches]


def _write_class(args: tuple[Path, ClassProgram, SyntheticConfig]) -> list[tuple[str, list[str]]]:
    """Render and save every instance of one class; returns (photo path, sketch paths) per instance."""
    root, program, config = args
    (root / PHOTO_DIR / program.name).mkdir(parents=True, exist_ok=True)
    (root / SKETCH_DIR / program.name).mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(config.instances_per_class):
        photo, sketches = render_instance(program, i, config)
        pid = photo_id(program, i)
        photo_rel = f"{PHOTO_DIR}/{program.name}/{pid}.jpg"
        photo.save(root / photo_rel, "JPEG", quality=JPEG_QUALITY)
        sketch_rels = [f"{SKETCH_DIR}/{program.name}/{pid}-{k}.png" for k in range(1, len(sketches) + 1)]
        for rel, sketch in zip(sketch_rels, sketches):
            sketch.save(root / rel, "PNG")
        out.append((photo_rel, sketch_rels))
    return out


def _render_all(root: Path, programs: list[ClassProgram], config: SyntheticConfig, progress: bool,
                workers: int) -> Iterator[list[tuple[str, list[str]]]]:
    jobs = [(root, p, config) for p in programs]
    if workers > 1:
        # fork where available: "spawn" would re-run an unguarded calling script in every worker
        method = "fork" if "fork" in get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(workers, mp_context=get_context(method)) as pool:
            yield from _progress(pool.map(_write_class, jobs), len(jobs), progress)
    else:
        yield from _progress(map(_write_class, jobs), len(jobs), progress)


def _progress(it, total: int, progress: bool):
    if not progress:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, total=total, desc="synthetic classes", unit="class")


def _write_dataset(root: Path, config: SyntheticConfig, progress: bool, workers: int) -> dict:
    programs = class_vocabulary(config.n_classes, config.seed)
    unseen_idx = set(choose_unseen(programs, config.n_unseen, config.seed))
    seen = sorted((p for p in programs if p.index not in unseen_idx), key=lambda p: p.name)
    unseen = sorted((p for p in programs if p.index in unseen_idx), key=lambda p: p.name)
    list_dir = root / _BENCH.list_dir
    write_class_ids(list_dir / _BENCH.class_files["seen"], [p.name for p in seen])
    write_class_ids(list_dir / _BENCH.class_files["unseen"], [p.name for p in unseen])
    lists: dict[tuple[str, str], list[Entry]] = {(d, s): [] for d in ("sketch", "photo")
                                                 for s in ("train", "val", "zero")}
    held = {p.name: held_out_instances(p, config) for p in seen}
    classes = []
    rendered = list(_render_all(root, seen + unseen, config, progress, workers))
    for cid, (program, files) in enumerate(zip(seen + unseen, rendered)):
        is_seen = cid < len(seen)
        label = cid if is_seen else cid - len(seen)
        for i, (photo_rel, sketch_rels) in enumerate(files):
            split = "zero" if not is_seen else "val" if i in held[program.name] else "train"
            lists["sketch", split] += [Entry(rel, label) for rel in sketch_rels]
            lists["photo", "train" if is_seen else "zero"].append(Entry(photo_rel, label))
        classes.append({"name": program.name, "split": "seen" if is_seen else "unseen", "id": label,
                        "index": program.index, "description": f"{program.name}: {program.caption(config.appearance)}",
                        "held_out_instances": held.get(program.name, [])})
    lists["photo", "val"] = lists["photo", "train"]  # val queries are searched among seen-class photos
    for (domain, split), entries in lists.items():  # (the photo val list is the photo train file)
        write_list(list_dir / _list_name(domain, split), entries)
    manifest = _manifest(config, lists, sorted(classes, key=lambda c: c["index"]))
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _list_name(domain: str, split: str) -> str:
    return (_BENCH.sketch_lists if domain == "sketch" else _BENCH.photo_lists)[split]


def _manifest(config: SyntheticConfig, lists: dict, classes: list[dict]) -> dict:
    return {
        "generator": "zssbir.data.synthetic",
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "domains": {
            "photo": {"dir": PHOTO_DIR, "format": "JPEG", "quality": JPEG_QUALITY, "mode": "RGB",
                      "size": config.image_size},
            "sketch": {"dir": SKETCH_DIR, "format": "PNG", "mode": "L", "size": config.image_size,
                       "per_photo": config.sketches_per_photo},
        },
        "lists": {"dir": _BENCH.list_dir, "classes": dict(_BENCH.class_files),
                  "sketch": dict(_BENCH.sketch_lists), "photo": dict(_BENCH.photo_lists)},
        "counts": {domain: {split: len(lists[domain, split]) for split in ("train", "val", "zero")}
                   for domain in ("sketch", "photo")}
                  | {"classes": {"seen": config.n_seen, "unseen": config.n_unseen}},
        "classes": classes,
    }


def _replace_dir(new: Path, root: Path) -> None:
    """Move the complete ``new`` folder to ``root``; an existing ``root`` is removed only afterwards."""
    if not root.exists():
        os.replace(new, root)
        return
    old = root.parent / f".{root.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(root, old)
    try:
        os.replace(new, root)
    except BaseException:
        os.replace(old, root)
        raise
    shutil.rmtree(old, ignore_errors=True)


def generate(root: str | Path, config: SyntheticConfig, *, progress: bool = False, workers: int = 1) -> dict:
    """Write the data set for ``config`` at ``root`` (replacing it) and return its manifest.

    Everything is written into a hidden sibling folder first and renamed into place at the end, so
    an interrupted run leaves ``root`` as it was. ``workers`` > 1 renders classes in parallel
    processes; the bytes written do not depend on it.
    """
    if not isinstance(config, SyntheticConfig):
        raise ValueError(f"config must be a SyntheticConfig, got {type(config).__name__}")
    _check_int("workers", workers, 1, 256)
    return write_atomically(root, lambda tmp: _write_dataset(tmp, config, progress, workers))


def write_atomically(root: str | Path, write: Callable[[Path], dict]) -> dict:
    """``write(folder)`` into a hidden sibling folder of ``root``, renamed into place at the end (replacing
    ``root``); an interruption leaves ``root`` as it was. Returns what ``write`` returns (the manifest)."""
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        os.chmod(tmp, 0o755)
        manifest = write(tmp)
        _replace_dir(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def read_json(path: str | Path) -> dict | None:
    """A JSON file's content, or None if missing or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def load_manifest(root: str | Path) -> dict | None:
    """The ``generator.json`` of a data set, or None if missing or unreadable."""
    return read_json(Path(root) / MANIFEST)


def _is_current(root: Path, config: SyntheticConfig) -> bool:
    manifest = load_manifest(root)
    if not manifest or manifest.get("format_version") != FORMAT_VERSION or manifest.get("config") != config.to_dict():
        return False
    names = set(_BENCH.sketch_lists.values()) | set(_BENCH.photo_lists.values()) | set(_BENCH.class_files.values())
    return all((root / _BENCH.list_dir / name).is_file() for name in names)


@contextlib.contextmanager
def _lock(root: Path) -> Iterator[None]:
    """An advisory lock next to ``root`` so concurrent callers generate once (no-op without fcntl)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_synthetic(root: str | Path | None = None, config: SyntheticConfig | None = None, *,
                     progress: bool = False, workers: int = 1) -> Path:
    """The data set root, (re)generated only if its manifest is missing or was made by another config.

    Default root: ``paths.data_dir() / "synthetic"``; default config: ``SyntheticConfig()``.
    """
    root = Path(root) if root is not None else _BENCH.root()
    config = SyntheticConfig() if config is None else config
    if _is_current(root, config):
        return root
    with _lock(root):
        if not _is_current(root, config):  # another process may have finished it meanwhile
            generate(root, config, progress=progress, workers=workers)
    return root
