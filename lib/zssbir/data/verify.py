"""`zssbir data verify`: check a prepared benchmark against its split files and published sizes.

Errors (exit code 1): lists or class files missing, split-file classes missing from the class files or the
class folders, classes without images, listed files absent, unreadable images (every image is decoded, in
parallel threads, unless ``decode=False``), a Sketchy-Ext tree without its extended photo set. Warnings: counts
that differ from the published figures (``Benchmark.expected``), class folders that no split file names (with
the class each probably is). Every problem comes with a fix a user can act on.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from .benchmarks import SPLITS, Benchmark, get_benchmark
from .datasets import DECODE_ERRORS, SHOWN_MISSING, describe_decode_error
from .layouts import LAYOUTS, class_folders, find_roles
from .listnames import OPTIONAL, PUBLISHED, ListFolder, label, list_keys
from .listnames import names as list_names
from .lists import drop_duplicates, read_class_ids, read_list
from .photosets import ORIGINAL, missing_extension_fix, missing_extension_text, photo_set
from .splits import SplitClasses, likely_matches, load_split_classes, match_classes


@dataclass
class Problem:
    text: str
    fix: str


@dataclass
class VerifyReport:
    dataset_id: str
    root: Path
    rows: list[dict] = field(default_factory=list)  # domain, split, classes, listed, unique, expected
    duplicates: int = 0
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    photo_set: str = ""  # photosets.EXTENDED, ORIGINAL, ...

    @property
    def ok(self) -> bool:
        return not self.errors

    def text(self) -> str:
        out = [f"{self.dataset_id} at {self.root}",
               f"{'domain':<7} {'split':<5} {'classes':>7} {'listed':>8} {'unique':>8} {'expected':>16}"]
        out += [f"{r['domain']:<7} {r['split']:<5} {r['classes']:>7} {r['listed']:>8} {r['unique']:>8} "
                f"{r['expected']:>16}" for r in self.rows]
        out.append(f"duplicate photo entries (same class and file name, dropped when loading): {self.duplicates}")
        if self.photo_set:
            out.append(f"photo set: {self.photo_set}")
        for kind, items in (("warning", self.warnings), ("ERROR", self.errors)):
            out += [f"{kind} {i}: {p.text}\n    fix: {p.fix}" for i, p in enumerate(items, 1)]
        out.append("all checks passed" if self.ok else f"{len(self.errors)} errors")
        return "\n".join(out)


def _capped(paths: list[str]) -> str:
    more = f", ... and {len(paths) - SHOWN_MISSING} more" if len(paths) > SHOWN_MISSING else ""
    return ", ".join(paths[:SHOWN_MISSING]) + more


def _decode_problem(path: Path) -> str | None:
    """None if the image decodes, else a short reason (empty file, truncated, not an image)."""
    try:
        with Image.open(path) as img:
            img.load()
        return None
    except DECODE_ERRORS as err:
        return describe_decode_error(err, path)
    except Exception as err:  # noqa: BLE001 - any other decoder failure also means the file is unusable
        return f"{type(err).__name__}: {err}"


def decode_all(root: Path, paths: list[str], *, workers: int | None = None, progress: bool = False) -> dict[str, str]:
    """{path: reason} of the listed images that do not decode, checked in ``workers`` threads (Pillow decodes
    without holding the GIL; default: every CPU)."""
    workers = max(1, workers or os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        reasons = list(tqdm(pool.map(lambda p: _decode_problem(root / p), paths), total=len(paths),
                            desc=f"decoding ({workers} threads)", disable=not progress, mininterval=1.0))
    return {p: r for p, r in zip(paths, reasons) if r is not None}


def _prepared_lists(bench: Benchmark, data_root) -> str:
    """"scanned" when prepare wrote the lists from the class folders, else "published"."""
    record = bench.root(data_root) / bench.list_dir / "prepared.json"
    try:
        return json.loads(record.read_text(encoding="utf-8")).get("lists", "published")
    except (OSError, ValueError):
        return "published"


def _rescan_fix(bench: Benchmark, data_root) -> str:
    if _prepared_lists(bench, data_root) == "scanned":
        return f"run `zssbir data prepare {bench.id}` again to write the lists from the images on disk"
    return (f"write the lists from the images on disk instead: `zssbir data prepare {bench.id} --lists folders` "
            f"(the published files it overwrites are kept as <name>{PUBLISHED})")


def _check_folders(report: VerifyReport, bench: Benchmark, classes: SplitClasses, split_dir: str) -> None:
    roles = LAYOUTS.get(bench.folder, ())
    for role, rel in find_roles(report.root, roles).items():
        m = match_classes(classes.all, list(class_folders(report.root / rel)))
        guesses = likely_matches(m.missing, m.extra)
        real = (report.root / rel).resolve()
        for cls in m.missing:
            if cls in guesses:
                report.errors.append(Problem(
                    f"class {cls!r} of the split files has no folder in {report.root / rel}; the folder "
                    f"{guesses[cls]!r} there is in no split file and is probably this class",
                    f"if {rel}/{guesses[cls]} holds {cls}, rename it to {cls!r} (in {real}) and run "
                    f"`zssbir data prepare {bench.id}` again"))
            else:
                report.errors.append(Problem(
                    f"class {cls!r} of the split files has no folder in {report.root / rel}",
                    f"put the class's images in {real}/{cls}/ (from the original archive; prepare links whole "
                    f"folders and cannot restore one class), or, if the class is misnamed in {split_dir}, correct "
                    f"it there; then run `zssbir data prepare {bench.id}` again"))
        for name in m.extra:
            guess = next((c for c, g in guesses.items() if g == name), None)
            if guess:
                report.warnings.append(Problem(f"folder {rel}/{name} is in no split file (not used); it is "
                                               f"probably class {guess!r}", f"rename it to {guess!r} (in {real})"))
            else:
                report.warnings.append(Problem(f"folder {rel}/{name} is in no split file (not used)",
                                               f"nothing, unless it is a class misnamed in {split_dir}"))


def _not_prepared(report: VerifyReport, bench: Benchmark, data_root, absent: list[str]) -> None:
    folder = ListFolder(bench.root(data_root) / bench.list_dir)
    other_names = folder.recognised(bench)
    unknown = [k for k in list_keys(bench) if k not in OPTIONAL and folder.source(bench, k) is None]
    if other_names and unknown:
        expected = "; ".join(f"{label(k)}: one of {', '.join(list_names(bench, k))}" for k in unknown)
        report.errors.append(Problem(
            f"not prepared: {folder.folder} holds published lists ({', '.join(other_names)}), but not every list "
            f"under a name prepare knows ({expected})",
            f"copy your lists to the expected names in {folder.folder} and run `zssbir data prepare {bench.id}`, "
            f"or write the lists from the class folders: `zssbir data prepare {bench.id} --lists folders`"))
    elif other_names:
        report.errors.append(Problem(
            f"not prepared: {len(absent)} list files are missing under the names read here "
            f"({_capped(absent)}), but {folder.folder} holds published lists: {', '.join(other_names)}",
            f"run `zssbir data prepare {bench.id}`: it recognises the names in public use and copies the lists "
            f"to the expected names (your files are kept as they are)"))
    else:
        report.errors.append(Problem(f"not prepared: {len(absent)} list files missing: {_capped(absent)}",
                                     bench.how_to_get))


def verify(dataset_id: str, *, data_root: str | Path | None = None, classes: SplitClasses | None = None,
           decode: bool = True, progress: bool = False, workers: int | None = None) -> VerifyReport:
    """Check a prepared benchmark (see the module docstring); ``workers``: decoding threads (default: every CPU)."""
    bench = get_benchmark(dataset_id)
    root = bench.root(data_root)
    report = VerifyReport(dataset_id, root)
    needed = [bench.class_file(s, data_root) for s in ("train", "zero")]
    needed += [bench.list_path(d, s, data_root) for d in ("sketch", "photo") for s in SPLITS]
    absent = sorted({str(p) for p in needed if not p.is_file()})
    if absent:
        _not_prepared(report, bench, data_root, absent)
        return report
    if classes is None and bench.generator is None:
        classes = load_split_classes(dataset_id)
    split_dir = f"data/splits/{dataset_id}/"
    files: set[str] = set()
    totals: dict[str, list] = {}
    for split in SPLITS:
        class_path = bench.class_file(split, data_root)
        names = list(read_class_ids(class_path))
        if classes is not None and split != "val":
            m = match_classes(classes.unseen if split == "zero" else classes.seen, names)
            if m.missing or m.extra:
                report.errors.append(Problem(
                    f"{class_path} differs from {split_dir}: missing {m.missing}, extra {m.extra}",
                    f"use the published lists of this split, or {_rescan_fix(bench, data_root)}"))
        for domain in ("sketch", "photo"):
            if split == "val" and domain == "photo":
                continue  # the val gallery is the train photo list
            entries = read_list(bench.list_path(domain, split, data_root))
            unique, dropped = drop_duplicates(entries) if domain == "photo" else (entries, 0)
            report.duplicates += dropped
            per_class = Counter(e.label for e in entries)
            outside = sorted(label for label in per_class if not 0 <= label < len(names))
            if outside:
                report.errors.append(Problem(
                    f"{domain} {split}: {sum(per_class[x] for x in outside)} entries of "
                    f"{bench.list_path(domain, split, data_root).name} have labels {_capped([str(x) for x in outside])} that "
                    f"{class_path.name} does not define (it names {len(names)} classes, ids 0 to {len(names) - 1})",
                    f"the list and the class file come from different releases: use the lists and class files of "
                    f"one release, or write both from the folders with `zssbir data prepare {dataset_id} --lists "
                    f"folders`"))
            empty = [n for i, n in enumerate(names) if not per_class[i]]
            if empty and split != "val":
                report.errors.append(Problem(
                    f"{domain} {split}: classes without images: {_capped(empty)}",
                    f"put their images back in their class folders (from the original archive) and run "
                    f"`zssbir data prepare {dataset_id}` again, or correct the class names in {split_dir}"))
            files.update(e.path for e in entries)
            row = {"domain": domain, "split": split, "classes": len(per_class), "listed": len(entries),
                   "unique": len(unique)}
            report.rows.append(row)
            tot = totals.setdefault(domain, [0, 0, 0])
            tot[0] += row["classes"] if split != "val" else 0  # val classes are seen classes, counted in train
            tot[1] += row["listed"]
            tot[2] += row["unique"]
    report.rows += [{"domain": d, "split": "all", "classes": c, "listed": n, "unique": u}
                    for d, (c, n, u) in totals.items()]
    photos = photo_set(dataset_id, data_root)
    report.photo_set = photos.name
    for row in report.rows:
        want = bench.expected.get((row["domain"], row["split"]))
        row["expected"] = f"{want[0]} {want[1]}" if want else "-"
        if want and row[want[1]] != want[0]:
            cause = (" (the extended photo set is missing: see the error below)"
                     if photos.name == ORIGINAL and row["domain"] == "photo" else "")
            report.warnings.append(Problem(
                f"{row['domain']} {row['split']}: {row[want[1]]} {want[1]}, the published figure is {want[0]}{cause}",
                "check that the whole archive was unpacked; small differences between releases are known"))
    if photos.name == ORIGINAL:
        report.errors.append(Problem(f"photo set: {missing_extension_text(bench, photos)}", missing_extension_fix(
            bench, photos, scanned=_prepared_lists(bench, data_root) == "scanned")))
    elif photos.extension and photos.extended and not photos.extension_on_disk:
        report.errors.append(Problem(f"photo set: the lists name {photos.extended:,} photos of the extended set "
                                     f"{photos.extension}/, which is not under {root}",
                                     missing_extension_fix(bench, photos)))
    if classes is not None:
        _check_folders(report, bench, classes, split_dir)
    ordered = sorted(files)
    absent = [p for p in ordered if not (root / p).is_file()]
    if absent:
        report.errors.append(Problem(f"{len(absent)} listed files are absent: {_capped(absent)}",
                                     f"put them back from the original archive (unpack it again and run "
                                     f"`zssbir data prepare {dataset_id} --source <archive>`), or "
                                     f"{_rescan_fix(bench, data_root)}"))
    if decode:
        gone = set(absent)
        bad = decode_all(root, [p for p in ordered if p not in gone], workers=workers, progress=progress)
        if bad:
            shown = [f"{p} ({r})" for p, r in bad.items()]
            report.errors.append(Problem(
                f"{len(bad)} images cannot be read: {_capped(shown)}",
                f"replace each with a good copy from the original archive; or train without them: "
                f"`zssbir train --set unreadable_images=skip` leaves them out with a warning and counts them "
                f"in the run"))
    return report
