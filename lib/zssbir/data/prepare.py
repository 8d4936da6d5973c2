"""`zssbir data prepare`: arrange a downloaded benchmark under ``<data_root>/<folder>`` and write its file lists.

Sources (``--source``, any number) are archives (zip/tar, unpacked once into ``<data_root>/_extracted/<name>/``
with checked paths, shared by the benchmarks one archive serves) or folders. The layout folders found in them (``layouts.py``) are symlinked into the root and
published list folders are copied: the user's files are never moved, changed or deleted. Then the lists:
  (a) published SAKE/ZSE-SBIR lists already in ``<root>/<list_dir>`` are kept and checked against the split
      files; a published set without a val list (ZSE-SBIR QuickDraw) gets one held out of its train list, the
      original kept as ``<train list>.published``;
  (b) otherwise the class folders are scanned and lists are written from the committed split files, holding
      out ``VAL_FRACTION`` of each seen class's sketches (seeded by ``VAL_SEED`` and the class name) for ``val``.
Running it again changes nothing.
"""
from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .benchmarks import Benchmark, get_benchmark
from .datasets import MissingDataError, missing_data_message
from .layouts import class_folders, extract, find_roles, layout_of, link_into, locate
from .lists import Entry, drop_duplicates, read_class_ids, read_list, write_class_ids, write_list
from .splits import SplitClasses, load_split_classes, match_classes

VAL_FRACTION = 0.1  # share of each seen class's sketches held out for the val split (rounded half up)
VAL_SEED = 0


@dataclass
class PrepareReport:
    dataset_id: str
    root: str
    lists: str  # "published" or "scanned"
    counts: dict[str, int] = field(default_factory=dict)  # "<domain> <split>" -> list entries
    duplicates: int = 0  # photo entries naming a (class, file name) already listed; dropped when loading
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        lines = [f"{self.dataset_id}: {self.lists} lists in {self.root}", f"  entries: {counts}",
                 f"  duplicate photo entries (same class and file name): {self.duplicates}; loading drops them "
                 f"by default (load_split(..., duplicates='keep') keeps them)"]
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])


def _arrange(bench: Benchmark, root: Path, sources: list[Path], notes: list[str]) -> None:
    roles = layout_of(bench.folder)
    folders = []
    for src in sources:
        if not src.exists():
            raise FileNotFoundError(f"--source {src} does not exist")
        folders.append(extract(src, root.parent / "_extracted" / src.name.split(".")[0]) if src.is_file() else src)
    for role in roles:
        if find_roles(root, (role,)):  # already in place (or linked with an earlier role's folder)
            continue
        for folder in folders:
            hit = next(((c, p) for c in role.candidates if (p := locate(folder, c)) is not None), None)
            if hit:
                link_into(root, hit[0], hit[1])
                notes.append(f"{role.name}: linked {root / hit[0]} -> {hit[1]}")
                break
    for folder in folders:  # published lists next to the images: copied (prepare may add a val list)
        lists = locate(folder, bench.list_dir)
        if lists is not None and not (root / bench.list_dir).exists():
            shutil.copytree(lists, root / bench.list_dir)
            notes.append(f"published lists: copied {lists} to {root / bench.list_dir}")


def _check_classes(found: list[str], wanted: tuple[str, ...], where: Path) -> None:
    m = match_classes(wanted, found)
    if m.missing or m.extra:
        raise ValueError(f"{where} disagrees with the split file: classes missing {m.missing}, not in the split "
                         f"file {m.extra}. Use the published lists of this split, or remove {where.parent} to "
                         f"write lists from the class folders")


def _hold_out(entries: list[Entry], fraction: float, seed: int) -> tuple[list[Entry], list[Entry]]:
    """Split seen sketches into train and val, per class: round(fraction * n) held out, at least one kept."""
    by_class: dict[int, list[Entry]] = {}
    for e in entries:
        by_class.setdefault(e.label, []).append(e)
    val: set[Entry] = set()
    for label, items in by_class.items():
        n = min(int(fraction * len(items) + 0.5), len(items) - 1)
        val.update(random.Random(f"{seed}:{label}").sample(items, n))
    return [e for e in entries if e not in val], [e for e in entries if e in val]


def _published(bench: Benchmark, root: Path, classes: SplitClasses, report: PrepareReport) -> None:
    for split, wanted in (("train", classes.seen), ("zero", classes.unseen)):
        path = bench.class_file(split, root.parent)
        _check_classes(list(read_class_ids(path)), wanted, path)
    val_path = bench.list_path("sketch", "val", root.parent)
    if not val_path.exists():
        train_path = bench.list_path("sketch", "train", root.parent)
        original = train_path.with_name(train_path.name + ".published")
        if not original.exists():
            train_path.rename(original)
        train, val = _hold_out(read_list(original), VAL_FRACTION, VAL_SEED)
        write_list(train_path, train)
        write_list(val_path, val)
        report.notes.append(f"no published val list: held out {len(val)} seen sketches (fraction {VAL_FRACTION}, "
                            f"seed {VAL_SEED}); the published train list is kept as {original.name}")


def _scanned(bench: Benchmark, root: Path, classes: SplitClasses, report: PrepareReport) -> None:
    roles = layout_of(bench.folder)
    found = find_roles(root, roles)
    needed = [r for r in roles if r.name != "extended_photo"]
    absent = [f"{r.name}: one of {', '.join(r.candidates)}" for r in needed if r.name not in found]
    if absent:
        raise MissingDataError(missing_data_message(bench, "no published lists and no image folders", absent, root))
    label = {c: (i, "train") for i, c in enumerate(classes.seen)} | {c: (i, "zero") for i, c in enumerate(classes.unseen)}
    lists: dict[tuple[str, str], list[Entry]] = {(d, s): [] for d in ("sketch", "photo") for s in ("train", "zero")}
    missing = []
    for role in roles:
        if role.name not in found:
            continue
        folders = class_folders(root / found[role.name])
        m = match_classes(classes.all, list(folders))
        missing += [f"{c} (in {found[role.name]}/)" for c in m.missing]
        report.notes += [f"class folder {found[role.name]}/{d} is not in the split files: skipped" for d in m.extra]
        report.notes += [f"class {c!r} matched the misspelled folder {found[role.name]}/{d}" for c, d in m.fuzzy.items()]
        for cls, folder in m.found.items():
            y, split = label[cls]
            lists[role.domain, split] += [Entry(f"{found[role.name]}/{folder}/{f}", y) for f in folders[folder]]
    if missing:
        raise MissingDataError(missing_data_message(bench, f"{len(missing)} classes of the split files have no "
                                                    "class folder", missing, root))
    train, val = _hold_out(lists["sketch", "train"], VAL_FRACTION, VAL_SEED)
    lists["sketch", "train"], lists["sketch", "val"] = train, val
    for (domain, split), entries in lists.items():
        write_list(bench.list_path(domain, split, root.parent), entries)
    write_class_ids(bench.class_file("train", root.parent), list(classes.seen))
    write_class_ids(bench.class_file("zero", root.parent), list(classes.unseen))
    report.notes.append(f"val: {len(val)} seen sketches held out (fraction {VAL_FRACTION}, seed {VAL_SEED})")


def prepare(dataset_id: str, sources: list[str | Path] = (), *, data_root: str | Path | None = None,
            classes: SplitClasses | None = None) -> PrepareReport:
    """Arrange the sources under the benchmark root and make its lists; returns what was done."""
    bench = get_benchmark(dataset_id)
    if bench.generator is not None:
        raise ValueError(f"{dataset_id!r} is generated, not prepared: run `zssbir data generate {dataset_id}`")
    classes = classes or load_split_classes(dataset_id)
    root = bench.root(data_root)
    root.mkdir(parents=True, exist_ok=True)
    report = PrepareReport(dataset_id, str(root), "published")
    _arrange(bench, root, [Path(s).expanduser() for s in sources], report.notes)
    published = bench.class_file("train", data_root).is_file() and not (root / bench.list_dir / "prepared.json").exists()
    if published:
        _published(bench, root, classes, report)
    else:
        report.lists = "scanned"
        _scanned(bench, root, classes, report)
    for split in ("train", "val", "zero"):
        for domain in ("sketch", "photo"):
            if split == "val" and domain == "photo":
                continue
            entries = read_list(bench.list_path(domain, split, data_root))
            report.counts[f"{domain} {split}"] = len(entries)
            if domain == "photo":
                report.duplicates += drop_duplicates(entries)[1]
    record = asdict(report) | {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                               "sources": [str(s) for s in sources]}
    if report.lists == "scanned":
        (root / bench.list_dir / "prepared.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    return report
