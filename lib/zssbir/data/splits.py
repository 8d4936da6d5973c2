"""Committed split files (``data/splits/<dataset id>/{seen,unseen}.txt``) and class-name matching.

Releases spell class names differently (``teddy_bear``, ``teddy bear``, ``teddy-bear``, ``bear (animal)``) and a
few image folders are misspelled. Every match between split files, class folders and published class-id files
goes through :func:`match_classes`: normalised names first, then names without a parenthesised qualifier, then
a close misspelling (unique best match, difflib ratio >= ``FUZZY_CUTOFF``), which is reported.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

from .. import paths
from .lists import normalise_class_name

FUZZY_CUTOFF = 0.85


@dataclass(frozen=True)
class SplitClasses:
    seen: tuple[str, ...]
    unseen: tuple[str, ...]  # in label order

    @property
    def all(self) -> tuple[str, ...]:
        return self.seen + self.unseen


def read_class_list(path: Path) -> tuple[str, ...]:
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path}")
    return tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def load_split_classes(dataset_id: str, splits_root: str | Path | None = None) -> SplitClasses:
    """The committed seen/unseen class lists of a dataset id."""
    folder = Path(splits_root or paths.splits_dir()) / dataset_id
    split = SplitClasses(read_class_list(folder / "seen.txt"), read_class_list(folder / "unseen.txt"))
    both = {normalise_class_name(c) for c in split.seen} & {normalise_class_name(c) for c in split.unseen}
    if both:
        raise ValueError(f"{folder}: classes both seen and unseen: {sorted(both)}")
    return split


def _unqualified(name: str) -> str:
    return normalise_class_name(re.sub(r"\(.*?\)", "", name))


@dataclass
class ClassMatch:
    found: dict[str, str] = field(default_factory=dict)  # wanted name -> name on disk / in the other list
    fuzzy: dict[str, str] = field(default_factory=dict)  # the subset matched as a misspelling
    missing: list[str] = field(default_factory=list)  # wanted, not found
    extra: list[str] = field(default_factory=list)  # present, not wanted


def match_classes(wanted: list[str] | tuple[str, ...], present: list[str] | tuple[str, ...]) -> ClassMatch:
    """Match wanted class names (split file) to present ones (folders, class-id files)."""
    result = ClassMatch()
    left = list(present)
    for key in (normalise_class_name, _unqualified):
        by_key: dict[str, list[str]] = {}
        for name in left:
            by_key.setdefault(key(name), []).append(name)
        for name in wanted:
            hits = by_key.get(key(name), [])
            if name not in result.found and len(hits) == 1 and hits[0] in left:
                result.found[name] = hits[0]
                left.remove(hits[0])
    for name in wanted:
        if name in result.found:
            continue
        keys = {normalise_class_name(p): p for p in left}
        close = difflib.get_close_matches(normalise_class_name(name), list(keys), n=2, cutoff=FUZZY_CUTOFF)
        if len(close) == 1:
            result.found[name] = result.fuzzy[name] = keys[close[0]]
            left.remove(keys[close[0]])
        else:
            result.missing.append(name)
    result.extra = sorted(left)
    return result


RENAME_CUTOFF = 0.6  # looser than FUZZY_CUTOFF: only suggested to the user, never used silently


def likely_matches(missing: list[str] | tuple[str, ...], extra: list[str] | tuple[str, ...]) -> dict[str, str]:
    """{missing class: the unmatched folder (or class-file name) that is probably it}: a renamed or shortened
    folder (``teddy`` for ``teddy_bear``), one name containing the other or a difflib ratio >= ``RENAME_CUTOFF``;
    each folder is suggested for one class at most, best match first."""
    scored = []
    for want in missing:
        a = _unqualified(want)
        for name in extra:
            b = _unqualified(name)
            if not a or not b:
                continue
            ratio = difflib.SequenceMatcher(None, a, b).ratio()
            contains = min(len(a), len(b)) >= 3 and (a in b or b in a)
            if contains or ratio >= RENAME_CUTOFF:
                scored.append((contains, ratio, want, name))
    out: dict[str, str] = {}
    for _, _, want, name in sorted(scored, reverse=True):
        if want not in out and name not in out.values():
            out[want] = name
    return out
