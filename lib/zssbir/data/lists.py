"""SAKE-format file lists and class-id files.

A list line is ``<relative path> <label>``. Paths may contain spaces, so the label is the LAST
whitespace-separated token and the path is everything before it. A class-id file (``cname_cid.txt``)
holds lines ``<class name> <id>``; class names may contain spaces too.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# Sketchy sketches are named <photo_id>-<k>.png: the photo they were drawn from.
_SKETCH_NAME = re.compile(r"^(?P<photo>.+)-(?P<k>\d+)$")


@dataclass(frozen=True)
class Entry:
    path: str  # relative to the data set root, '/'-separated
    label: int


def read_list(path: str | Path) -> list[Entry]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file list not found: {path}")
    entries = []
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        head, sep, tail = line.rpartition(" ")
        if not sep or not head.strip():
            raise ValueError(f"{path}:{lineno}: expected '<relative path> <label>', got {raw!r}")
        try:
            label = int(tail)
        except ValueError:
            raise ValueError(f"{path}:{lineno}: the last token must be an integer label, got {tail!r}") from None
        entries.append(Entry(head.strip(), label))
    return entries


def format_list(entries: list[Entry]) -> str:
    return "".join(f"{e.path} {e.label}\n" for e in entries)


def write_list(path: str | Path, entries: list[Entry]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(format_list(entries), encoding="utf-8")


def read_class_ids(path: str | Path) -> dict[str, int]:
    """``cname_cid.txt`` -> {class name: id}; ids must be 0..C-1 with no repeats."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class-id file not found: {path}")
    classes: dict[str, int] = {}
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        name, sep, cid = line.rpartition(" ")
        if not sep or not cid.isdigit():
            raise ValueError(f"{path}:{lineno}: expected '<class name> <id>', got {raw!r}")
        if name in classes:
            raise ValueError(f"{path}:{lineno}: class {name!r} is listed twice")
        classes[name] = int(cid)
    if sorted(classes.values()) != list(range(len(classes))):
        raise ValueError(f"{path}: class ids must be 0..{len(classes) - 1} without gaps or repeats")
    return classes


def format_class_ids(classes: list[str]) -> str:
    return "".join(f"{name} {i}\n" for i, name in enumerate(classes))


def write_class_ids(path: str | Path, classes: list[str]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(format_class_ids(classes), encoding="utf-8")


def normalise_class_name(name: str) -> str:
    """Comparison key for class names across releases: case, spaces, '_' and '-' are ignored."""
    return re.sub(r"[\s_\-]+", "", name.strip().lower())


def paired_photo_id(sketch_path: str) -> str | None:
    """The photo a Sketchy-style sketch was drawn from (``.../n0123_45-3.png`` -> ``n0123_45``)."""
    stem = Path(sketch_path).stem
    match = _SKETCH_NAME.match(stem)
    return match.group("photo") if match else None


def drop_duplicates(entries: list[Entry]) -> tuple[list[Entry], int]:
    """Keep the first entry of each (label, file name); return the kept entries and how many were dropped.

    SAKE's Sketchy photo lists name the 12,500 originals twice (``256x256/photo/...`` and
    ``EXTEND_image_sketchy_ready/...``): the same photo of the same class under two folders.
    """
    seen: set[tuple[int, str]] = set()
    kept = []
    for e in entries:
        key = (e.label, e.path.rsplit("/", 1)[-1])
        if key not in seen:
            seen.add(key)
            kept.append(e)
    return kept, len(entries) - len(kept)
