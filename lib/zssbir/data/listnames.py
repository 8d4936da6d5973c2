"""The names published list files go by, and which file of a list folder holds which list.

Releases name the same lists differently: SAKE ``sketch_tx_000000000000_ready_filelist_train.txt``, copies of
the original archive without ``_ready`` (``sketch_tx_000000000000_filelist_train.txt``), ZSE-SBIR's QuickDraw
``sketch_train.txt`` (Doodle2Search-style copies ``sketch_filelist_train.txt``); the held-out seen-class list is
``..._test`` (SAKE) or ``..._val``. :func:`names` gives every known name of one list, the project's own (the one
``Benchmark.list_path`` reads) first. A list file is one of (domain, split) below, or a class-id file
(``("classes", "train")`` = ``cname_cid.txt``, ``("classes", "zero")`` = ``cname_cid_zero.txt``).

``prepare`` keeps the original of every published file it has to overwrite as ``<name>.published``, so
:meth:`ListFolder.source` looks there too.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from .benchmarks import Benchmark

PUBLISHED = ".published"  # suffix of the kept original of a published file that prepare rewrote
SPLIT_WORDS = {"train": ("train",), "val": ("test", "val"), "zero": ("zero",)}
# other names of the lists in public releases, per benchmark folder and domain; "{}" is a split word
VARIANTS: dict[str, dict[str, tuple[str, ...]]] = {
    "Sketchy": {"sketch": ("sketch_tx_000000000000_ready_filelist_{}.txt", "sketch_tx_000000000000_filelist_{}.txt"),
                "photo": ("all_photo_filelist_{}.txt",)},
    "TUBerlin": {"sketch": ("png_ready_filelist_{}.txt", "png_filelist_{}.txt"),
                 "photo": ("ImageResized_ready_filelist_{}.txt", "ImageResized_filelist_{}.txt")},
    "QuickDraw": {"sketch": ("sketch_{}.txt", "sketch_filelist_{}.txt"),
                  "photo": ("all_photo_{}.txt", "photo_filelist_{}.txt", "all_photo_filelist_{}.txt")},
}
OPTIONAL = {("sketch", "val")}  # a release without it gets one held out of its train list


def list_keys(bench: Benchmark) -> list[tuple[str, str]]:
    """Every distinct file of a prepared list folder: class-id files, then the lists (the val photo list is the
    train photo list, so it is not a file of its own)."""
    keys = [("classes", "train"), ("classes", "zero")]
    for domain, table in (("sketch", bench.sketch_lists), ("photo", bench.photo_lists)):
        keys += [(domain, s) for s in ("train", "val", "zero")
                 if not (s == "val" and table["val"] == table["train"])]
    return keys


def canonical(bench: Benchmark, key: tuple[str, str]) -> str:
    """The name the project reads a file under."""
    domain, split = key
    if domain == "classes":
        return bench.class_files["unseen" if split == "zero" else "seen"]
    return (bench.sketch_lists if domain == "sketch" else bench.photo_lists)[split]


def names(bench: Benchmark, key: tuple[str, str]) -> list[str]:
    """Every known name of a file, the canonical one first."""
    out = [canonical(bench, key)]
    domain, split = key
    for pattern in VARIANTS.get(bench.folder, {}).get(domain, ()):
        out += [pattern.format(word) for word in SPLIT_WORDS[split]]
    return list(dict.fromkeys(out))


def label(key: tuple[str, str]) -> str:
    domain, split = key
    return f"class-id file of the {'unseen' if split == 'zero' else 'seen'} classes" if domain == "classes" \
        else f"{domain} {split} list"


def sha256_text(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class ListFolder:
    """A list folder and the files prepare wrote into it ({name: sha256 of what it wrote})."""
    folder: Path
    written: dict[str, str] = field(default_factory=dict)

    def is_ours(self, name: str) -> bool:
        """Whether ``name`` is a file prepare wrote and nobody changed since."""
        path = self.folder / name
        return name in self.written and path.is_file() and sha256_text(path) == self.written[name]

    def source(self, bench: Benchmark, key: tuple[str, str]) -> Path | None:
        """The published file of a list: under its canonical name (unless prepare wrote it), its kept original
        ``<canonical>.published``, or a known other name."""
        known = names(bench, key)
        first = self.folder / known[0]
        if first.is_file() and not self.is_ours(known[0]):
            return first
        kept = self.folder / (known[0] + PUBLISHED)
        if kept.is_file():
            return kept
        return next((self.folder / n for n in known[1:] if (self.folder / n).is_file() and not self.is_ours(n)), None)

    def recognised(self, bench: Benchmark) -> list[str]:
        """Files of the folder that are published lists or class-id files under a known name."""
        if not self.folder.is_dir():
            return []
        known = {n for key in list_keys(bench) for n in names(bench, key)}
        known |= {n + PUBLISHED for n in known}
        return sorted(p.name for p in self.folder.iterdir() if p.name in known and not self.is_ours(p.name))

    def files(self) -> list[str]:
        return sorted(p.name for p in self.folder.iterdir() if p.is_file()) if self.folder.is_dir() else []


class ListNamesError(ValueError):
    """A list folder holds published lists, but not every list under a name prepare knows."""


def unrecognised_message(bench: Benchmark, lists: ListFolder, missing: list[tuple[str, str]]) -> str:
    found = lists.files()
    shown = ", ".join(found[:20]) + (f", ... ({len(found)} files)" if len(found) > 20 else "") or "(no files)"
    expected = "\n".join(f"  {label(k)}: one of {', '.join(names(bench, k))}" for k in missing)
    return (f"data set {bench.id!r}: {lists.folder} holds published lists, but these are not there under any "
            f"name prepare knows:\n{expected}\nFiles found in {lists.folder}: {shown}\n"
            f"Fix: copy your lists to the expected names in {lists.folder} (prepare keeps your files as they are) "
            f"and run `zssbir data prepare {bench.id}` again; or write the lists from the class folders instead: "
            f"`zssbir data prepare {bench.id} --lists folders` (it keeps every published file it overwrites as "
            f"<name>{PUBLISHED}).")
