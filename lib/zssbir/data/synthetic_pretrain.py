"""The pretraining corpus of the embedded benchmark: photos only, of many class programs that no benchmark uses.

The papers start from ImageNet (or CLIP) weights: many classes, photos only, none of them the benchmark's
classes by construction of the zero-shot splits. This is the miniature of that: the same generator as
``synthetic`` (same part vocabulary, arrangements, photo renderer), but class programs drawn from another random
stream and kept only when their main structure (``ClassProgram.signature``, the notion that makes two classes
of one vocabulary different) belongs to NO class, seen or unseen, of any procedural benchmark in
``benchmarks.BENCHMARKS`` (``synthetic``, ``synthetic_hard`` and their tiny versions). Class names are ``pt0000``, ``pt0001``, ... so they
cannot collide with the benchmark's English names either. A corpus that would share a class (by program or by
name) is refused with the shared names (``SharedClassesError``).

Layout under ``root`` (registered ids in ``CORPORA``; default root ``paths.data_dir() / <id>``):

    photo/<class>/<class>_<NNNN>.jpg         NNNN = instance index from 0
    lists/classes.txt                        class name and id, one a line (ids 0..n_classes-1)
    lists/photo_train.txt, photo_val.txt     SAKE-format lists; ``val_per_class`` instances per class held out
    corpus.json                              manifest (config, the benchmarks avoided, each class's description),
                                             written last

Determinism: every random choice is seeded by ``[seed, tag, class index, ...]``; the same config (and the same
registered benchmarks) gives the same bytes on disk, whatever ``workers``.
"""
from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from . import drawing, drawing_photo
from .benchmarks import BENCHMARKS
from .datasets import ListDataset, MissingDataError, SplitInfo
from .lists import Entry, read_class_ids, read_list, write_class_ids, write_list
from .synthetic import (JPEG_QUALITY, MAX_SIZE, MIN_SIZE, SyntheticConfig, _lock, _progress, instance_parts,
                        read_json, write_atomically)
from .synthetic_classes import ClassProgram, check_appearance, class_vocabulary, compose_program

__all__ = ["PretrainConfig", "CORPORA", "SharedClassesError", "benchmark_programs", "benchmark_configs",
           "benchmark_captions", "check_disjoint",
           "corpus_programs", "render_corpus_photo", "generate_corpus", "ensure_corpus", "load_corpus",
           "corpus_root", "FORMAT_VERSION"]

FORMAT_VERSION = 1
MANIFEST = "corpus.json"
PHOTO_DIR = "photo"
LIST_DIR = "lists"
CLASS_FILE = "classes.txt"
LISTS = {"train": "photo_train.txt", "val": "photo_val.txt"}
MAX_CORPUS_CLASSES = 1000  # well below the number of distinct structures the part vocabulary allows
MAX_ATTEMPTS = 500  # draws per class before giving up on finding a structure not taken yet
# random streams: the benchmark draws its classes from 101 (synthetic_classes._CLASS_TAG) and instances from 201
_CLASS_STREAM, _INSTANCE_TAG, _SPLIT_TAG, _APPEARANCE_TAG = 301, 302, 303, 304


def _check_int(name: str, value: object, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an int between {lo} and {hi}, got {value!r}")


@dataclass(frozen=True)
class PretrainConfig:
    """Size of the corpus. Default: 300 classes x 24 photos at 64 px (4 of each class held out for validation).

    appearance: where a photo's hues and fills come from, as in ``synthetic.SyntheticConfig`` (the corpus of a
    benchmark follows the benchmark's rule: ``"instance"`` for ``synthetic_hard``)."""

    n_classes: int = 300
    instances_per_class: int = 24
    val_per_class: int = 4
    image_size: int = 64
    seed: int = 0
    appearance: str = "class"

    def __post_init__(self) -> None:
        check_appearance(self.appearance)
        _check_int("n_classes", self.n_classes, 2, MAX_CORPUS_CLASSES)
        _check_int("instances_per_class", self.instances_per_class, 2, 9999)
        _check_int("val_per_class", self.val_per_class, 0, self.instances_per_class - 1)
        _check_int("image_size", self.image_size, MIN_SIZE, MAX_SIZE)
        _check_int("seed", self.seed, 0, 2**63 - 1)

    def to_dict(self) -> dict:
        return asdict(self)


# registered corpora: id -> config (the folder under paths.data_dir() is the id)
CORPORA: dict[str, PretrainConfig] = {
    "synthetic_pretrain": PretrainConfig(),
    # the corpus of the hard miniature (synthetic_hard): the same classes, every photo dressed at random
    "synthetic_pretrain_hard": PretrainConfig(appearance="instance"),
    # a few seconds to generate: for tests and smoke runs
    "synthetic_pretrain_tiny": PretrainConfig(n_classes=12, instances_per_class=5, val_per_class=1, image_size=32),
}


class SharedClassesError(ValueError):
    """A pretraining corpus would share classes with a benchmark; the message names them."""


def benchmark_programs() -> dict[str, list[ClassProgram]]:
    """Every class program (seen and unseen) of every procedural benchmark in the registry, by dataset id."""
    out = {}
    for bench in BENCHMARKS.values():
        if bench.generator is not None:
            config = SyntheticConfig(**bench.generator)
            out[bench.id] = class_vocabulary(config.n_classes, config.seed)
    return out


def benchmark_configs() -> dict[str, dict]:
    """The generator config of every procedural benchmark, by dataset id (what a corpus must stay disjoint from)."""
    return {b.id: SyntheticConfig(**b.generator).to_dict() for b in BENCHMARKS.values() if b.generator is not None}


def benchmark_captions(dataset: str, class_names: Sequence[str]) -> list[str]:
    """The captions (class program summaries, as the pretraining's text tower learned them) of classes of a
    procedural benchmark; a data set without class programs, or a name it does not have, is refused."""
    programs = benchmark_programs()
    if dataset not in programs:
        raise ValueError(f"{dataset!r} has no class programs to caption: the miniature's text tower (pretrained: "
                         f"pretrain) reads the procedural benchmarks' class descriptions ({', '.join(programs)}); "
                         "on real data use a clip:<model> backbone, whose text tower reads the class names")
    appearance = SyntheticConfig(**BENCHMARKS[dataset].generator).appearance
    summary = {p.name: p.caption(appearance) for p in programs[dataset]}
    unknown = [n for n in class_names if n not in summary]
    if unknown:
        raise ValueError(f"{dataset} has no classes named {unknown[:5]}: its class lists and its generator disagree; "
                         f"regenerate it (`zssbir data generate {dataset}`)")
    return [summary[n] for n in class_names]


def check_disjoint(programs: Sequence[ClassProgram], benchmarks: dict[str, list[ClassProgram]] | None = None) -> None:
    """Raise SharedClassesError naming every corpus class whose program (main structure) or name is a benchmark
    class's; ``benchmarks`` defaults to ``benchmark_programs()``."""
    benchmarks = benchmark_programs() if benchmarks is None else benchmarks
    by_signature: dict[tuple, list[str]] = {}
    by_name: dict[str, list[str]] = {}
    for bench_id, progs in benchmarks.items():
        for p in progs:
            by_signature.setdefault(p.signature, []).append(f"{bench_id}:{p.name}")
            by_name.setdefault(p.name, []).append(f"{bench_id}:{p.name}")
    shared = []
    for p in programs:
        hits = sorted(set(by_signature.get(p.signature, []) + by_name.get(p.name, [])))
        if hits:
            shared.append(f"{p.name} = {', '.join(hits)} ({p.summary.split(';')[0]})")
    if shared:
        raise SharedClassesError(
            f"refused: the pretraining corpus would share {len(shared)} of its {len(programs)} classes with the "
            f"benchmark (seen or unseen classes, same class program or same name): {'; '.join(shared)}. A "
            "pretraining corpus must be disjoint from every benchmark class; use corpus_programs(PretrainConfig(...)), "
            "which draws only structures no benchmark uses")


def corpus_name(index: int) -> str:
    return f"pt{index:04d}"


def corpus_programs(config: PretrainConfig) -> list[ClassProgram]:
    """The corpus's class programs: drawn from their own stream, each main structure used once and by no
    benchmark class."""
    taken = {p.signature for progs in benchmark_programs().values() for p in progs}
    programs = []
    for index in range(config.n_classes):
        for attempt in range(MAX_ATTEMPTS):
            program = compose_program(index, corpus_name(index), config.seed, attempt, stream=_CLASS_STREAM)
            if program.signature not in taken:
                break
        else:
            raise ValueError(f"found no new class structure for class {index} in {MAX_ATTEMPTS} draws: "
                             f"n_classes={config.n_classes} is too many for the part vocabulary; ask for fewer")
        taken.add(program.signature)
        programs.append(program)
    return programs


def render_corpus_photo(program: ClassProgram, instance: int, config: PretrainConfig) -> Image.Image:
    """One photo (RGB) of a corpus class, exactly as ``generate_corpus`` writes it."""
    geometry, photo = (np.random.default_rng(s) for s in
                       np.random.SeedSequence([config.seed, _INSTANCE_TAG, program.index, instance]).spawn(2))
    parts = instance_parts(program, instance, config.seed, config.appearance, tag=_APPEARANCE_TAG)
    return drawing_photo.render_photo(drawing.make_instance(parts, geometry), photo, config.image_size)


def held_out(program: ClassProgram, config: PretrainConfig) -> list[int]:
    rng = np.random.default_rng([config.seed, _SPLIT_TAG, program.index])
    return sorted(int(i) for i in rng.permutation(config.instances_per_class)[:config.val_per_class])


def _write_class(args: tuple[Path, ClassProgram, PretrainConfig]) -> list[str]:
    root, program, config = args
    (root / PHOTO_DIR / program.name).mkdir(parents=True, exist_ok=True)
    rels = []
    for i in range(config.instances_per_class):
        rel = f"{PHOTO_DIR}/{program.name}/{program.name}_{i:04d}.jpg"
        render_corpus_photo(program, i, config).save(root / rel, "JPEG", quality=JPEG_QUALITY)
        rels.append(rel)
    return rels


def _write_corpus(root: Path, config: PretrainConfig, programs: list[ClassProgram], progress: bool,
                  workers: int) -> dict:
    jobs = [(root, p, config) for p in programs]
    if workers > 1:
        method = "fork" if "fork" in get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(workers, mp_context=get_context(method)) as pool:
            rendered = list(_progress(pool.map(_write_class, jobs), len(jobs), progress))
    else:
        rendered = list(_progress(map(_write_class, jobs), len(jobs), progress))
    lists: dict[str, list[Entry]] = {"train": [], "val": []}
    classes = []
    for label, (program, rels) in enumerate(zip(programs, rendered)):
        val = set(held_out(program, config))
        for i, rel in enumerate(rels):
            lists["val" if i in val else "train"].append(Entry(rel, label))
        classes.append({"name": program.name, "id": label, "index": program.index,
                        "description": f"{program.name}: {program.caption(config.appearance)}",
                        "signature": repr(program.signature),
                        "held_out_instances": sorted(val)})
    write_class_ids(root / LIST_DIR / CLASS_FILE, [p.name for p in programs])
    for split, name in LISTS.items():
        write_list(root / LIST_DIR / name, lists[split])
    manifest = {"generator": "zssbir.data.synthetic_pretrain", "format_version": FORMAT_VERSION,
                "config": config.to_dict(), "disjoint_from": benchmark_configs(),
                "photo": {"dir": PHOTO_DIR, "format": "JPEG", "quality": JPEG_QUALITY, "mode": "RGB",
                          "size": config.image_size},
                "counts": {split: len(entries) for split, entries in lists.items()} | {"classes": len(programs)},
                "classes": classes}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def generate_corpus(root: str | Path, config: PretrainConfig, *, programs: Sequence[ClassProgram] | None = None,
                    progress: bool = False, workers: int = 1) -> dict:
    """Write the corpus at ``root`` (replacing it, atomically) and return its manifest.

    ``programs`` (default ``corpus_programs(config)``) may name other classes; any that a benchmark uses
    (same program or name) makes it refuse with SharedClassesError before anything is written.
    """
    if not isinstance(config, PretrainConfig):
        raise ValueError(f"config must be a PretrainConfig, got {type(config).__name__}")
    programs = corpus_programs(config) if programs is None else list(programs)
    if len(programs) != config.n_classes:
        raise ValueError(f"{len(programs)} class programs given for n_classes={config.n_classes}")
    if len({p.name for p in programs}) != len(programs) or len({p.signature for p in programs}) != len(programs):
        raise ValueError("the corpus's class programs must have distinct names and distinct structures")
    check_disjoint(programs)
    return write_atomically(root, lambda tmp: _write_corpus(tmp, config, programs, progress, workers))


def load_manifest(root: str | Path) -> dict | None:
    """The ``corpus.json`` of a corpus, or None if missing or unreadable."""
    return read_json(Path(root) / MANIFEST)


def _is_current(root: Path, config: PretrainConfig) -> bool:
    m = load_manifest(root)
    return bool(m) and m.get("format_version") == FORMAT_VERSION and m.get("config") == config.to_dict() \
        and m.get("disjoint_from") == benchmark_configs() \
        and all((root / LIST_DIR / n).is_file() for n in (CLASS_FILE, *LISTS.values()))


def corpus_root(corpus_id: str, data_root: str | Path | None = None) -> Path:
    _config(corpus_id)
    from .. import paths

    return Path(data_root) / corpus_id if data_root is not None else paths.data_dir() / corpus_id


def _config(corpus_id: str) -> PretrainConfig:
    try:
        return CORPORA[corpus_id]
    except KeyError:
        raise ValueError(f"unknown pretraining corpus {corpus_id!r}; known: {sorted(CORPORA)}") from None


def ensure_corpus(corpus_id: str = "synthetic_pretrain", *, data_root: str | Path | None = None,
                  progress: bool = False, workers: int = 1) -> Path:
    """The root of a registered corpus, generated only if missing or made by another config (or against other
    benchmarks)."""
    config, root = _config(corpus_id), corpus_root(corpus_id, data_root)
    if not _is_current(root, config):
        with _lock(root):
            if not _is_current(root, config):
                generate_corpus(root, config, progress=progress, workers=workers)
    return root


def load_corpus(root: str | Path, split: str = "train", transform: Callable | None = None,
                corpus_id: str = "synthetic_pretrain", cache_decoded: bool = False) -> ListDataset:
    """The photos of a corpus split ("train" or "val") as a Dataset (items as in ``datasets``, domain photo;
    ``cache_decoded`` as there)."""
    if split not in LISTS:
        raise ValueError(f"unknown corpus split {split!r}; expected one of {sorted(LISTS)}")
    root = Path(root)
    list_path, class_path = root / LIST_DIR / LISTS[split], root / LIST_DIR / CLASS_FILE
    if not list_path.is_file() or not class_path.is_file():
        raise MissingDataError(f"pretraining corpus not ready under {root} (no {list_path.name} or {CLASS_FILE}); "
                               f"build it: `zssbir data generate {corpus_id}` (or "
                               f"zssbir.data.synthetic_pretrain.ensure_corpus({corpus_id!r}))")
    ids = read_class_ids(class_path)
    names = tuple(sorted(ids, key=ids.__getitem__))
    info = SplitInfo(corpus_id, split, "photo", root, list_path, class_path, names)
    return ListDataset(info, read_list(list_path), transform, cache_decoded=cache_decoded)
