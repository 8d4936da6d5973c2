"""Which photo set a prepared benchmark's lists hold: Sketchy-Ext is only Sketchy-Ext with its extension.

Sketchy's own 12,500 photos are one photo per sketched object; the Extended benchmark adds the 60,502 photos of
``EXTEND_image_sketchy`` (Liu et al. 2017), so the retrieval gallery is about six times larger. A tree without
the extension still prepares and trains, but it is another benchmark: its scores are not comparable with
published Sketchy-Ext figures. ``photo_set`` tells them apart from the lists; ``prepare`` and ``verify`` report
it and results files record it (``params["photo_set"]``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .benchmarks import Benchmark, get_benchmark
from .layouts import LAYOUTS, find_roles
from .lists import drop_duplicates, read_list

EXTENDED, ORIGINAL, GENERATED, UNKNOWN = "extended", "original only", "generated", "unknown"
SKETCHY_PHOTOS = 12_500  # the photos of the Sketchy database itself (125 classes x 100)
EXTENSION_ROLE = "extended_photo"


@dataclass(frozen=True)
class PhotoSet:
    name: str  # EXTENDED, ORIGINAL (a benchmark with an extension, without it), GENERATED, UNKNOWN (not prepared)
    photos: int = 0  # unique photos listed (train + zero)
    extended: int = 0  # of which in the extension folder
    extension: str = ""  # the extension folder's name in the release, "" when the benchmark has none
    extension_on_disk: bool = False


def extension_role(bench: Benchmark):
    return next((r for r in LAYOUTS.get(bench.folder, ()) if r.name == EXTENSION_ROLE), None)


def photo_set(dataset_id: str, data_root: str | Path | None = None) -> PhotoSet:
    """The photo set of a prepared benchmark, read from its photo lists (UNKNOWN when they are missing)."""
    bench = get_benchmark(dataset_id)
    if bench.generator is not None:
        return PhotoSet(GENERATED)
    role = extension_role(bench)
    try:
        entries = [e for s in ("train", "zero") for e in read_list(bench.list_path("photo", s, data_root))]
    except (FileNotFoundError, ValueError):
        return PhotoSet(UNKNOWN, extension=role.candidates[1] if role else "")
    unique, _ = drop_duplicates(entries)
    if role is None:  # the benchmark's only photos are its extended set (TU-Berlin ImageResized, QuickDraw images)
        return PhotoSet(EXTENDED, len(unique))
    extended = sum(any(e.path.startswith(c + "/") for c in role.candidates) for e in entries)
    on_disk = bool(find_roles(bench.root(data_root), (role,)))
    return PhotoSet(EXTENDED if extended else ORIGINAL, len(unique), extended, role.candidates[1], on_disk)


def missing_extension_text(bench: Benchmark, found: PhotoSet) -> str:
    """What a tree without the extension is, and what that changes (for prepare and verify)."""
    total = bench.expected.get(("photo", "all"), (0, ""))[0]
    instead = f" instead of the {total:,} of {bench.id}" if total else ""
    return (f"the extended photo set ({found.extension}/) is missing: the lists hold only Sketchy's own photos "
            f"({found.photos:,} here; {SKETCHY_PHOTOS:,} in the full database){instead}. This tree is Sketchy, not "
            f"Sketchy-Ext: the gallery is about six times smaller and scores are not comparable with published "
            f"Sketchy-Ext figures (results files record photo_set '{ORIGINAL}')")


def missing_extension_fix(bench: Benchmark, found: PhotoSet, scanned: bool = True) -> str:
    get = (f"`zssbir data prepare {bench.id} --source <{found.extension} archive or folder>` (the README's 'Real "
           f"benchmarks' section says where to get it)")
    if scanned:
        return f"add the extended photos: {get}; prepare links the folder and adds its photos to the lists"
    return (f"add the extended photos ({get}) and use published photo lists that name them (SAKE's "
            f"all_photo_filelist_*.txt), or write the lists from the folders: `zssbir data prepare {bench.id} "
            f"--lists folders`")
