"""`zssbir data prepare`: arrange a downloaded benchmark under ``<data_root>/<folder>`` and write its file lists.

Sources (``--source``, any number) are archives (zip/tar, unpacked once into ``<data_root>/_extracted/<name>/``
with checked paths, shared by the benchmarks one archive serves) or folders. The layout folders found in them
(``layouts.py``) are symlinked into the root and a published list folder is copied (under the benchmark's list
folder name; a folder of another name, such as ZSE-SBIR's ``zeroshot0`` for Sketchy split 2, only when its
unseen classes are the split's). Then the lists (``lists``: "auto", "published" or "folders"):
  published  SAKE/ZSE-SBIR lists in ``<root>/<list_dir>``, under any of the names in public use
             (``listnames.py``), are checked against the split files and copied to the names the project reads;
             a published set without a val list (ZSE-SBIR) gets one held out of its train list;
  folders    the class folders are scanned and lists are written from the committed split files, holding out
             ``VAL_FRACTION`` of each seen class's sketches (seeded by ``VAL_SEED`` and the class name) for ``val``;
  auto       what the last run did (``prepared.json``), else "published" when the list folder holds published
             lists, else "folders".
Nothing prepare did not create is renamed, changed or deleted: the user's sources are only linked or copied, and
a published file that has to be rewritten (a train list that loses its held-out sketches) is first kept as
``<name>.published``. ``prepared.json`` records what prepare wrote (with checksums), so running it again gives the
same lists and never takes its own output for a published file.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .benchmarks import Benchmark, get_benchmark
from .datasets import MissingDataError, missing_data_message
from .layouts import class_folders, extract, find_roles, layout_of, link_into, locate
from .listnames import (OPTIONAL, PUBLISHED, ListFolder, ListNamesError, canonical, label, list_keys,
                        unrecognised_message)
from .lists import (Entry, drop_duplicates, format_class_ids, format_list, read_class_ids, read_list)
from .photosets import EXTENDED, ORIGINAL, missing_extension_fix, missing_extension_text, photo_set
from .splits import SplitClasses, likely_matches, load_split_classes, match_classes

VAL_FRACTION = 0.1  # share of each seen class's sketches held out for the val split (rounded half up)
VAL_SEED = 0
LIST_MODES = ("auto", "published", "folders")
RECORD = "prepared.json"


@dataclass
class PrepareReport:
    dataset_id: str
    root: str
    lists: str  # "published" or "scanned" (written from the class folders)
    counts: dict[str, int] = field(default_factory=dict)  # "<domain> <split>" -> list entries
    duplicates: int = 0  # photo entries naming a (class, file name) already listed; dropped when loading
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # the tree is usable but not the benchmark its id names
    photo_set: str = ""  # photosets.EXTENDED or ORIGINAL

    def text(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        lines = [f"{self.dataset_id}: {self.lists} lists in {self.root}", f"  entries: {counts}",
                 f"  photo set: {self.photo_set}",
                 f"  duplicate photo entries (same class and file name): {self.duplicates}; loading drops them "
                 f"by default (load_split(..., duplicates='keep') keeps them)"]
        return "\n".join(lines + [f"  note: {n}" for n in self.notes] + [f"WARNING: {w}" for w in self.warnings])


def _read_record(bench: Benchmark, folder: Path) -> dict:
    path = folder / RECORD
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return {}
    if "written" not in record and record.get("lists") == "scanned":  # an earlier version wrote every list
        record["written"] = {n: hashlib.sha256((folder / n).read_bytes()).hexdigest()
                             for n in (canonical(bench, k) for k in list_keys(bench)) if (folder / n).is_file()}
    return record


def _write(lists: ListFolder, name: str, text: str, notes: list[str]) -> None:
    """Write a list prepare owns; a published file in the way is first kept as ``<name>.published``."""
    path = lists.folder / name
    data = text.encode("utf-8")
    if path.is_file():
        if path.read_bytes() == data:
            return  # nothing to change (a published file stays the user's)
        if not lists.is_ours(name):
            kept = path.with_name(name + PUBLISHED)
            if kept.is_file() and kept.read_bytes() != path.read_bytes():
                raise ValueError(f"{path} and {kept} both exist and differ, so prepare cannot tell which is the "
                                 f"published list and will not overwrite either. Move the one that is not the "
                                 f"published list out of {lists.folder} and run prepare again")
            if not kept.is_file():
                shutil.copy2(path, kept)
                notes.append(f"kept the published {name} as {kept.name} before rewriting it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    lists.written[name] = hashlib.sha256(data).hexdigest()


def _list_folder_in(bench: Benchmark, source: Path, classes: SplitClasses, notes: list[str]) -> Path | None:
    """The published list folder of this split in a source folder: the benchmark's own name (preferably under
    the benchmark's folder), else an alias whose unseen classes are the split's."""
    for rel in (f"{bench.folder}/{bench.list_dir}", bench.list_dir):
        hit = locate(source, rel)
        if hit is not None:
            return hit
    for alias in bench.list_dir_aliases:
        hit = locate(source, f"{bench.folder}/{alias}") or locate(source, alias)
        unseen = hit / bench.class_files["unseen"] if hit is not None else None
        if unseen is None or not unseen.is_file():
            continue
        m = match_classes(classes.unseen, list(read_class_ids(unseen)))
        if not m.missing and not m.extra:
            notes.append(f"published lists: {hit} holds this split's lists under another folder name")
            return hit
        notes.append(f"published lists: {hit} holds another split (its unseen classes differ from "
                     f"data/splits/{bench.id}/unseen.txt): not used")
    return None


def _arrange(bench: Benchmark, root: Path, sources: list[Path], classes: SplitClasses, notes: list[str]) -> list[str]:
    """Link the image folders found in the sources into root and copy a published list folder; returns where
    the list folder was copied from (empty if it was not)."""
    roles = layout_of(bench.folder)
    folders = []
    for src in sources:
        if not src.exists():
            raise FileNotFoundError(f"--source {src} does not exist: give the path of a downloaded archive (zip or "
                                    f"tar) or of the folder it was unpacked into")
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
    dest = root / bench.list_dir
    copied = []
    for folder in folders:  # published lists next to the images: copied (prepare may add a val list)
        lists = _list_folder_in(bench, folder, classes, notes)
        if lists is None:
            continue
        if dest.exists():
            notes.append(f"published lists: {dest} is already in place; {lists} was not copied again")
            break
        partial = dest.with_name(dest.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)  # a copy an interrupted run left: prepare's own
        shutil.copytree(lists, partial)
        partial.rename(dest)
        notes.append(f"published lists: copied {lists} to {dest}")
        copied.append(str(lists))
        break
    return copied


def _check_classes(bench: Benchmark, found: list[str], wanted: tuple[str, ...], where: Path) -> None:
    m = match_classes(wanted, found)
    if m.missing or m.extra:
        names = " or ".join([bench.list_dir, *bench.list_dir_aliases])
        raise ValueError(f"{where} disagrees with the split file data/splits/{bench.id}/: classes missing "
                         f"{m.missing}, not in the split file {m.extra}. Fix: use the published lists of this split "
                         f"(for {bench.id}: a list folder named {names} whose class-id files hold the split's "
                         f"classes), or write the lists from the class folders: `zssbir data prepare {bench.id} "
                         f"--lists folders` (published files it overwrites are kept as <name>{PUBLISHED})")


def _hold_out(entries: list[Entry], fraction: float, seed: int) -> tuple[list[Entry], list[Entry]]:
    """Split seen sketches into train and val, per class: round(fraction * n) held out, but at least one held out
    and one kept when the class has two or more."""
    by_class: dict[int, list[Entry]] = {}
    for e in entries:
        by_class.setdefault(e.label, []).append(e)
    val: set[Entry] = set()
    for label_, items in by_class.items():
        n = min(max(int(fraction * len(items) + 0.5), 1), len(items) - 1)
        val.update(random.Random(f"{seed}:{label_}").sample(items, n))
    return [e for e in entries if e not in val], [e for e in entries if e in val]


def _published(bench: Benchmark, lists: ListFolder, classes: SplitClasses, report: PrepareReport) -> None:
    sources = {key: lists.source(bench, key) for key in list_keys(bench)}
    missing = [k for k, p in sources.items() if p is None and k not in OPTIONAL]
    if missing:
        raise ListNamesError(unrecognised_message(bench, lists, missing))
    for split, wanted in (("train", classes.seen), ("zero", classes.unseen)):
        path = sources["classes", split]
        _check_classes(bench, list(read_class_ids(path)), wanted, path)
    for key, src in sources.items():
        target = canonical(bench, key)
        if src is None or src.name == target:
            continue
        _write(lists, target, src.read_text(encoding="utf-8"), report.notes)
        if src.name != target + PUBLISHED:
            report.notes.append(f"{label(key)}: published as {src.name}, copied to {target} (the name read here)")
    if sources["sketch", "val"] is None:
        train = sources["sketch", "train"]
        kept, val = _hold_out(read_list(train), VAL_FRACTION, VAL_SEED)
        _write(lists, canonical(bench, ("sketch", "train")), format_list(kept), report.notes)
        _write(lists, canonical(bench, ("sketch", "val")), format_list(val), report.notes)
        report.notes.append(f"no published val list: held out {len(val)} seen sketches (fraction {VAL_FRACTION}, "
                            f"seed {VAL_SEED}) of the published train list {train.name}, which is kept unchanged")


def _class_problems(root: Path, rel: str, folders: dict[str, list[str]], classes: SplitClasses,
                    report: PrepareReport) -> list[tuple[str, str]]:
    """Split-file classes of one image folder without images: no folder (with the likely renamed one) or an
    empty folder."""
    m = match_classes(classes.all, list(folders))
    guesses = likely_matches(m.missing, m.extra)
    problems = []
    for cls in m.missing:
        hint = (f"; the folder {guesses[cls]!r} there is in no split file: if it holds {cls}, rename it to "
                f"{cls!r}" if cls in guesses else "")
        problems.append((cls, f"{cls}: no folder in {rel}/{hint}"))
    problems += [(cls, f"{cls}: the folder {rel}/{d}/ is empty (no image files)") for cls, d in m.found.items()
                 if not folders[d]]
    for d in m.extra:
        guess = next((c for c, g in guesses.items() if g == d), None)
        report.notes.append(f"class folder {rel}/{d} is in no split file: skipped"
                            + (f" (it is probably {guess!r}, whose folder is missing)" if guess else ""))
    report.notes += [f"class {c!r} matched the misspelled folder {rel}/{d}" for c, d in m.fuzzy.items()]
    return problems


def _scanned(bench: Benchmark, root: Path, lists: ListFolder, classes: SplitClasses, report: PrepareReport) -> None:
    roles = layout_of(bench.folder)
    found = find_roles(root, roles)
    needed = [r for r in roles if r.name != "extended_photo"]
    absent = [f"{r.name}: one of {', '.join(r.candidates)}" for r in needed if r.name not in found]
    if absent:
        raise MissingDataError(missing_data_message(bench, "no published lists and no image folders", absent, root))
    label_of = {c: (i, "train") for i, c in enumerate(classes.seen)} | {c: (i, "zero") for i, c in enumerate(classes.unseen)}
    entries: dict[tuple[str, str], list[Entry]] = {(d, s): [] for d in ("sketch", "photo") for s in ("train", "zero")}
    problems, links = [], []
    for role in roles:
        if role.name not in found:
            continue
        rel = found[role.name]
        folders = class_folders(root / rel)
        here = _class_problems(root, rel, folders, classes, report)
        problems += here
        if here:
            links.append(f"{rel} -> {(root / rel).resolve()}")
        for cls, folder in match_classes(classes.all, list(folders)).found.items():
            y, split = label_of[cls]
            entries[role.domain, split] += [Entry(f"{rel}/{folder}/{f}", y) for f in folders[folder]]
    if problems:
        shown = "\n  ".join(text for _, text in problems)
        raise MissingDataError(
            f"data set {bench.id!r}: {len({c for c, _ in problems})} classes of the split files have no images "
            f"(looked under "
            f"{root}):\n  {shown}\nFix: put each class's images in its folder, from the original archive ("
            f"{'; '.join(links)}; prepare links whole folders and cannot restore one class), or, if the split "
            f"file names the class differently, correct data/splits/{bench.id}/seen.txt or unseen.txt (names match "
            f"ignoring case, spaces, '_' and '-'). Then run `zssbir data prepare {bench.id}` again.")
    train, val = _hold_out(entries["sketch", "train"], VAL_FRACTION, VAL_SEED)
    entries["sketch", "train"], entries["sketch", "val"] = train, val
    for (domain, split), items in entries.items():
        _write(lists, canonical(bench, (domain, split)), format_list(items), report.notes)
    _write(lists, canonical(bench, ("classes", "train")), format_class_ids(list(classes.seen)), report.notes)
    _write(lists, canonical(bench, ("classes", "zero")), format_class_ids(list(classes.unseen)), report.notes)
    report.notes.append(f"val: {len(val)} seen sketches held out (fraction {VAL_FRACTION}, seed {VAL_SEED})")


def _check_photo_set(bench: Benchmark, data_root, report: PrepareReport) -> None:
    found = photo_set(bench.id, data_root)
    report.photo_set = found.name
    if found.name == ORIGINAL:
        fix = missing_extension_fix(bench, found, scanned=report.lists == "scanned")
        report.warnings.append(f"{missing_extension_text(bench, found)}. Fix: {fix}.")
    elif found.name == EXTENDED and found.extension and not found.extension_on_disk:
        report.warnings.append(f"the photo lists name {found.extended:,} photos of the extended set "
                               f"{found.extension}/, which is not under {report.root}: loading and training will "
                               f"fail on the missing files. Fix: {missing_extension_fix(bench, found)}.")


def prepare(dataset_id: str, sources: list[str | Path] = (), *, data_root: str | Path | None = None,
            classes: SplitClasses | None = None, lists: str = "auto") -> PrepareReport:
    """Arrange the sources under the benchmark root and make its lists; returns what was done.
    ``lists``: "auto", "published" or "folders" (see the module docstring)."""
    if lists not in LIST_MODES:
        raise ValueError(f"lists must be one of {LIST_MODES}, got {lists!r}")
    bench = get_benchmark(dataset_id)
    if bench.generator is not None:
        raise ValueError(f"{dataset_id!r} is generated, not prepared: run `zssbir data generate {dataset_id}`")
    classes = classes or load_split_classes(dataset_id)
    root = bench.root(data_root)
    root.mkdir(parents=True, exist_ok=True)
    report = PrepareReport(dataset_id, str(root), "published")
    copied = _arrange(bench, root, [Path(s).expanduser() for s in sources], classes, report.notes)
    folder = root / bench.list_dir
    record = _read_record(bench, folder)
    list_folder = ListFolder(folder, dict(record.get("written", {})))
    if lists == "auto":
        mode = record.get("lists") or ("published" if list_folder.recognised(bench) else "scanned")
    else:
        mode = "published" if lists == "published" else "scanned"
    report.lists = mode
    if mode == "published":
        _published(bench, list_folder, classes, report)
    else:
        _scanned(bench, root, list_folder, classes, report)
    for split in ("train", "val", "zero"):
        for domain in ("sketch", "photo"):
            if split == "val" and domain == "photo":
                continue
            entries = read_list(bench.list_path(domain, split, data_root))
            report.counts[f"{domain} {split}"] = len(entries)
            if domain == "photo":
                report.duplicates += drop_duplicates(entries)[1]
    _check_photo_set(bench, data_root, report)
    result = asdict(report) | {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                               "sources": [str(s) for s in sources],
                               "copied_from": copied or record.get("copied_from", []),
                               "written": dict(sorted(list_folder.written.items()))}
    (folder / RECORD).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return report
