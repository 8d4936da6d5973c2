"""torch Datasets over SAKE-format lists, for every benchmark (the synthetic one included).

An item is a dict:
  image    float tensor from the transform (or the PIL image when transform is None)
  label    class id in the split's class-id file (seen ids for train/val, unseen ids for zero)
  domain   0 = sketch, 1 = photo (the SAKE/ClusterRetri domain tag)
  pair_id  the photo a sketch was drawn from (Sketchy-style names), the photo's own id for photos,
           "" where unknown
  index    position in the list
  unreadable  only with ``unreadable="skip"``: the list paths of the unreadable images first met while loading
           this item (newline-separated; "" if none), so a DataLoader's consumer learns what its workers met

Unreadable images (truncated, empty, not an image) raise UnreadableImageError naming the file, its list and the
fix; with ``unreadable="skip"`` each is logged once and replaced by the next readable image of its class (the
list entry stays; ``unreadable_found`` maps its index to the path). Evaluation code drops the rows of
``unreadable_found``.

Decoded-image cache (``cache_decoded=True``, off by default): each image is decoded once per process and kept as a
read-only uint8 RGB array; later reads rebuild the same PIL image from it (the pixels are the decoded ones, so
everything downstream is bit-identical). Memory: at most ``cache_limit_mb`` per Dataset per process (default
``CACHE_LIMIT_MB``); images past the limit are decoded on every read. A 64 px image takes 12 KiB, so the
`synthetic` training lists (about 3,000 images) take about 37 MiB. DataLoader workers are separate processes:
``fill_cache()`` in the parent before they start (fork) hands them the filled cache.
"""
from __future__ import annotations

import logging
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from .benchmarks import Benchmark, get_benchmark
from .lists import Entry, drop_duplicates, paired_photo_id, read_class_ids, read_list

DOMAIN_IDS = {"sketch": 0, "photo": 1}
DUPLICATES = ("drop", "keep")  # photo-list convention: one entry per (class, file name), or as published
UNREADABLE = ("error", "skip")  # what an unreadable image does: raise, or get left out (replaced in its batch)
# what Pillow raises on a file it cannot decode (truncated data, no image, a corrupt chunk)
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, Image.DecompressionBombError)
SHOWN_MISSING = 10  # missing files named in an error message (the count is always given)
CACHE_LIMIT_MB = 1024  # default bound of a Dataset's decoded-image cache, per process
log = logging.getLogger(__name__)


class MissingDataError(FileNotFoundError):
    """Data that a benchmark needs is not on disk; the message says what, where and how to get it."""


class UnreadableImageError(OSError):
    """An image file is there but cannot be decoded; the message names it, its list and the fix."""

    @staticmethod
    def short(err: BaseException) -> str:
        """The message without the traceback text a DataLoader worker process puts in front of it."""
        text = str(err)
        if "Traceback (most recent call last)" in text:
            marker = "UnreadableImageError: "
            text = text[text.rindex(marker) + len(marker):] if marker in text else text.strip().splitlines()[-1]
        return text.strip()


def unreadable_fix(dataset_id: str) -> str:
    return (f"Fix: replace the file with a good copy from the original archive; `zssbir data verify {dataset_id}` "
            f"lists every unreadable image; or train without them: `zssbir train --set unreadable_images=skip` "
            f"(they are left out with a warning and counted in the run).")


def unreadable_message(path: Path, info: "SplitInfo", err: BaseException) -> str:
    reason = str(err) or type(err).__name__
    return (f"cannot read image {path}: {reason} (listed in {info.list_path}, the {info.split} {info.domain} "
            f"list of {info.dataset_id}). {unreadable_fix(info.dataset_id)}")


def describe_decode_error(err: BaseException, path: Path) -> str:
    """A short reason for a decoding failure: empty file, truncated, not an image."""
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
    except OSError:
        pass
    text = str(err)
    if "truncated" in text.lower():
        return "truncated"
    if "cannot identify" in text:
        return "not an image"
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def missing_data_message(bench: Benchmark, headline: str, missing: list[str], looked_in: Path) -> str:
    """The headline, the first missing items and their count, where they were looked for, how to get them."""
    shown = "\n  ".join(str(m) for m in missing[:SHOWN_MISSING])
    more = f"\n  ... and {len(missing) - SHOWN_MISSING} more" if len(missing) > SHOWN_MISSING else ""
    return (f"data set {bench.id!r}: {headline} (looked under {looked_in}):\n  {shown}{more}\n"
            f"To get it: {bench.how_to_get}")


@dataclass(frozen=True)
class SplitInfo:
    dataset_id: str
    split: str
    domain: str
    root: Path
    list_path: Path
    class_path: Path
    class_names: tuple[str, ...]  # index = label
    duplicates: str = "drop"
    duplicates_dropped: int = 0  # photo-list entries dropped as repeats of a (class, file name)


class ListDataset(Dataset):
    """Images named by a SAKE-format list, relative to ``root``."""

    def __init__(self, info: SplitInfo, entries: list[Entry], transform: Callable | None = None,
                 unreadable: str = "error", cache_decoded: bool = False, cache_limit_mb: float = CACHE_LIMIT_MB):
        if unreadable not in UNREADABLE:
            raise ValueError(f"unreadable must be one of {UNREADABLE}, got {unreadable!r}")
        if not isinstance(cache_decoded, bool) or not cache_limit_mb >= 0:
            raise ValueError(f"cache_decoded must be a bool and cache_limit_mb >= 0, got {cache_decoded!r}, "
                             f"{cache_limit_mb!r}")
        self.cache_decoded, self.cache_limit_mb = cache_decoded, cache_limit_mb
        self._cache: dict[int, np.ndarray] = {}  # index -> decoded uint8 RGB pixels (cache_decoded=True)
        self.cache_bytes = 0
        self.info = info
        self.entries = entries
        self.transform = transform
        self.unreadable = unreadable
        self.unreadable_found: dict[int, str] = {}  # index -> path of the unreadable images met (this process)
        self.domain_id = DOMAIN_IDS[info.domain]
        self.labels = [e.label for e in entries]
        if info.domain == "sketch":
            self.pair_ids = [paired_photo_id(e.path) or "" for e in entries]
        else:
            self.pair_ids = [Path(e.path).stem for e in entries]

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.info.class_names

    def path(self, index: int) -> Path:
        return self.info.root / self.entries[index].path

    def load_image(self, index: int) -> Image.Image:
        """The image as an RGB PIL image (from the decoded-image cache when on; decoded and cached otherwise)."""
        if not self.cache_decoded:
            return self._decode(index)
        pixels = self._cache.get(index)
        if pixels is not None:
            return Image.fromarray(pixels, "RGB")
        img = self._decode(index)
        pixels = np.asarray(img, dtype=np.uint8)
        if self.cache_bytes + pixels.nbytes <= self.cache_limit_mb * 2**20:
            pixels.setflags(write=False)
            self._cache[index] = pixels
            self.cache_bytes += pixels.nbytes
        return img

    def fill_cache(self) -> int:
        """Decode every readable image into the cache (up to its limit) now; returns the bytes held. Call it before
        DataLoader workers start so they inherit the cache instead of filling one each."""
        if self.cache_decoded:
            for index in range(len(self.entries)):
                if index not in self._cache and index not in self.unreadable_found:
                    if self.cache_bytes >= self.cache_limit_mb * 2**20:
                        break
                    try:
                        self.load_image(index)
                    except UnreadableImageError:
                        if self.unreadable == "error":
                            raise
        return self.cache_bytes

    def _decode(self, index: int) -> Image.Image:
        path = self.path(index)
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except FileNotFoundError:
            raise MissingDataError(
                f"{path} is listed in {self.info.list_path} but does not exist; "
                f"run `zssbir data verify {self.info.dataset_id}` to list every missing file") from None
        except (UnidentifiedImageError, *DECODE_ERRORS) as err:
            raise UnreadableImageError(unreadable_message(path, self.info, err)) from err

    def mark_unreadable(self, paths) -> None:
        """Record images already known to be unreadable (by list path), so they are neither decoded nor logged
        again (a training loop passes on what its DataLoader workers met)."""
        wanted = set(paths)
        self.unreadable_found.update({i: e.path for i, e in enumerate(self.entries) if e.path in wanted})

    def _replacement(self, index: int, err: UnreadableImageError | None) -> tuple[int, Image.Image, list[str]]:
        """The next readable image of the same class (``unreadable="skip"``), and the list paths of the unreadable
        images met on the way (each recorded in ``unreadable_found`` and logged once)."""
        label = self.labels[index]
        n = len(self.entries)
        met = []
        for step in range(n):
            j = (index + step) % n
            if self.labels[j] != label or (j in self.unreadable_found and j != index):
                continue
            if j != index:
                try:
                    return j, self.load_image(j), met
                except UnreadableImageError as other:
                    err = other
            if j not in self.unreadable_found:
                self.unreadable_found[j] = self.entries[j].path
                met.append(self.entries[j].path)
                reason = describe_decode_error(err.__cause__ or err, self.path(j)) if err else "unreadable"
                log.warning("unreadable image left out (unreadable_images=skip): %s: %s (the %s %s list %s)",
                            self.path(j), reason, self.info.split, self.info.domain, self.info.list_path)
        raise UnreadableImageError(
            f"every {self.info.domain} image of class {self.class_names[label]!r} in {self.info.list_path} is "
            f"unreadable, so none can stand in for the unreadable ones. {unreadable_fix(self.info.dataset_id)}")

    def __getitem__(self, index: int) -> dict:
        source, met = index, []
        if self.unreadable == "skip" and index in self.unreadable_found:  # known: do not decode it again
            source, img, met = self._replacement(index, None)
        else:
            try:
                img = self.load_image(index)
            except UnreadableImageError as err:
                if self.unreadable == "error":
                    raise
                source, img, met = self._replacement(index, err)
        item = {"image": self.transform(img) if self.transform is not None else img,
                "label": self.labels[index], "domain": self.domain_id,
                "pair_id": self.pair_ids[source], "index": index}
        if self.unreadable == "skip":
            item["unreadable"] = "\n".join(met)
        return item


def _check_entries(bench: Benchmark, info: SplitInfo, entries: list[Entry], check_files: bool) -> None:
    n_classes = len(info.class_names)
    bad = sorted({e.label for e in entries if not 0 <= e.label < n_classes})
    if bad:
        raise ValueError(f"{info.list_path} has labels {bad[:10]} outside 0..{n_classes - 1} of its class-id file "
                         f"{info.class_path}: the list and the class file disagree; "
                         f"re-create the lists (`zssbir data prepare {bench.id}`)")
    empty = sorted(set(range(n_classes)) - {e.label for e in entries})
    if empty and info.split != "val":  # a tiny class may have no held-out sketch; train and zero need every class
        raise MissingDataError(missing_data_message(
            bench, f"{len(empty)} classes of {info.class_path} have no {info.domain} in {info.list_path}",
            [info.class_names[c] for c in empty], info.root))
    if check_files:
        missing = [e.path for e in entries if not (info.root / e.path).is_file()]
        if missing:
            raise MissingDataError(missing_data_message(
                bench, f"{len(missing)} of {len(entries)} files listed in {info.list_path} are missing",
                missing, info.root)
                + f"\nRun `zssbir data verify {bench.id}` for a full report.")


def load_split(dataset_id: str, split: str, domain: str, *, data_root: str | Path | None = None,
               transform: Callable | None = None, check_files: bool = True, duplicates: str = "drop",
               unreadable: str = "error", cache_decoded: bool = False) -> ListDataset:
    """The Dataset of one benchmark split and domain ('train', 'val' or 'zero'; 'sketch' or 'photo').

    Fails early, before any DataLoader runs, if the lists or the files they name are missing (the file check
    is a cheap existence test; ``check_files=False`` skips it; decoding every image is `zssbir data verify`).
    ``duplicates``: "drop" keeps one photo per (class, file name) (SAKE's Sketchy lists name the originals
    twice), "keep" reads the list as published; the number dropped is in ``info.duplicates_dropped``.
    ``unreadable``: "error" (an unreadable image raises UnreadableImageError) or "skip" (see the module docstring).
    ``cache_decoded``: keep each decoded image in memory (see the module docstring); results do not change.
    """
    bench = get_benchmark(dataset_id)
    if domain not in DOMAIN_IDS:
        raise ValueError(f"unknown domain {domain!r}; expected one of {sorted(DOMAIN_IDS)}")
    if duplicates not in DUPLICATES:
        raise ValueError(f"duplicates must be one of {DUPLICATES}, got {duplicates!r}")
    root = bench.root(data_root)
    list_path = bench.list_path(domain, split, data_root)
    class_path = bench.class_file(split, data_root)
    missing = [str(p) for p in (list_path, class_path) if not p.is_file()]
    if missing:
        raise MissingDataError(missing_data_message(bench, f"not ready: {len(missing)} list files are missing",
                                                    missing, root))
    class_ids = read_class_ids(class_path)
    names = tuple(sorted(class_ids, key=class_ids.__getitem__))
    entries = read_list(list_path)
    dropped = 0
    if domain == "photo" and duplicates == "drop":
        entries, dropped = drop_duplicates(entries)
        if dropped:
            log.info("%s %s photos: dropped %d duplicate entries of %s", dataset_id, split, dropped, list_path)
    info = SplitInfo(dataset_id, split, domain, root, list_path, class_path, names, duplicates, dropped)
    _check_entries(bench, info, entries, check_files)
    return ListDataset(info, entries, transform, unreadable=unreadable, cache_decoded=cache_decoded)


def subsample_per_class(dataset: ListDataset, total: int, seed: int) -> ListDataset:
    """The same list with at most ceil(total / classes) entries per class, drawn with ``seed`` (list order kept):
    a smaller gallery for the per-epoch validation of large benchmarks."""
    labels = np.asarray(dataset.labels)
    classes = np.unique(labels)
    per_class = -(-total // max(len(classes), 1))
    rng = np.random.default_rng(seed)
    keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes]))
    return ListDataset(dataset.info, [dataset.entries[i] for i in keep], dataset.transform, dataset.unreadable,
                       dataset.cache_decoded, dataset.cache_limit_mb)
