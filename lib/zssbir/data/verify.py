"""`zssbir data verify`: check a prepared benchmark against its split files and published sizes.

Errors (exit code 1): lists or class files missing, split-file classes missing from the class files or the
class folders, classes without images, listed files absent, unreadable images. Warnings: counts that differ
from the published figures (``Benchmark.expected``), class folders that no split file names. Every problem
comes with how to fix it.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from .benchmarks import SPLITS, get_benchmark
from .datasets import SHOWN_MISSING
from .layouts import LAYOUTS, class_folders, find_roles
from .lists import drop_duplicates, read_class_ids, read_list
from .splits import SplitClasses, load_split_classes, match_classes


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

    @property
    def ok(self) -> bool:
        return not self.errors

    def text(self) -> str:
        out = [f"{self.dataset_id} at {self.root}",
               f"{'domain':<7} {'split':<5} {'classes':>7} {'listed':>8} {'unique':>8} {'expected':>16}"]
        out += [f"{r['domain']:<7} {r['split']:<5} {r['classes']:>7} {r['listed']:>8} {r['unique']:>8} "
                f"{r['expected']:>16}" for r in self.rows]
        out.append(f"duplicate photo entries (same class and file name, dropped when loading): {self.duplicates}")
        for kind, items in (("warning", self.warnings), ("ERROR", self.errors)):
            out += [f"{kind} {i}: {p.text}\n    fix: {p.fix}" for i, p in enumerate(items, 1)]
        out.append("all checks passed" if self.ok else f"{len(self.errors)} errors")
        return "\n".join(out)


def _capped(paths: list[str]) -> str:
    more = f", ... and {len(paths) - SHOWN_MISSING} more" if len(paths) > SHOWN_MISSING else ""
    return ", ".join(paths[:SHOWN_MISSING]) + more


def _readable(path: Path) -> bool:
    try:
        with Image.open(path) as img:
            img.load()
        return True
    except Exception:  # noqa: BLE001 - any decoder failure means the file is unusable
        return False


def _check_folders(report: VerifyReport, folder: str, classes: SplitClasses, fix_cmd: str, split_dir: str) -> None:
    roles = LAYOUTS.get(folder, ())
    for role, rel in find_roles(report.root, roles).items():
        m = match_classes(classes.all, list(class_folders(report.root / rel)))
        for cls in m.missing:
            report.errors.append(Problem(f"class {cls!r} of the split files has no folder in {report.root / rel}",
                                         f"restore it from the archive ({fix_cmd}), or correct {split_dir}"))
        for name in m.extra:
            report.warnings.append(Problem(f"folder {rel}/{name} is in no split file (not used)",
                                           f"nothing, unless the class is misnamed in {split_dir}"))


def verify(dataset_id: str, *, data_root: str | Path | None = None, classes: SplitClasses | None = None,
           decode: bool = True, progress: bool = False) -> VerifyReport:
    bench = get_benchmark(dataset_id)
    root = bench.root(data_root)
    report = VerifyReport(dataset_id, root)
    prepare_cmd = f"`zssbir data prepare {dataset_id} --source <archive or folder>`"
    needed = [bench.class_file(s, data_root) for s in ("train", "zero")]
    needed += [bench.list_path(d, s, data_root) for d in ("sketch", "photo") for s in SPLITS]
    absent = sorted({str(p) for p in needed if not p.is_file()})
    if absent:
        report.errors.append(Problem(f"not prepared: {len(absent)} list files missing: {_capped(absent)}",
                                     bench.how_to_get))
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
                report.errors.append(Problem(f"{class_path} differs from {split_dir}: missing {m.missing}, "
                                             f"extra {m.extra}", f"re-create the lists: {prepare_cmd}"))
        for domain in ("sketch", "photo"):
            if split == "val" and domain == "photo":
                continue  # the val gallery is the train photo list
            entries = read_list(bench.list_path(domain, split, data_root))
            unique, dropped = drop_duplicates(entries) if domain == "photo" else (entries, 0)
            report.duplicates += dropped
            per_class = Counter(e.label for e in entries)
            empty = [n for i, n in enumerate(names) if not per_class[i]]
            if empty and split != "val":
                report.errors.append(Problem(f"{domain} {split}: classes without images: {_capped(empty)}",
                                             f"restore their folders ({prepare_cmd}), or correct {split_dir}"))
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
    for row in report.rows:
        want = bench.expected.get((row["domain"], row["split"]))
        row["expected"] = f"{want[0]} {want[1]}" if want else "-"
        if want and row[want[1]] != want[0]:
            report.warnings.append(Problem(
                f"{row['domain']} {row['split']}: {row[want[1]]} {want[1]}, the published figure is {want[0]}",
                "check that the whole archive was unpacked; small differences between releases are known"))
    if classes is not None:
        _check_folders(report, bench.folder, classes, prepare_cmd, split_dir)
    ordered = sorted(files)
    absent = [p for p in ordered if not (root / p).is_file()]
    if absent:
        report.errors.append(Problem(f"{len(absent)} listed files are absent: {_capped(absent)}",
                                     f"restore them from the archive ({prepare_cmd}), or re-create the lists "
                                     f"from the folders on disk (run prepare again; for published lists delete "
                                     f"{bench.list_dir}/ first)"))
    if decode:
        gone = set(absent)
        present = [p for p in ordered if p not in gone]
        bad = [p for p in tqdm(present, desc="decoding", disable=not progress) if not _readable(root / p)]
        if bad:
            report.errors.append(Problem(f"{len(bad)} images cannot be read: {_capped(bad)}",
                                         "re-extract them from the archive (lists that prepare wrote from the "
                                         "folders: or delete them and run prepare again)"))
    return report
