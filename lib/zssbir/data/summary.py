"""Counts and pairs of a benchmark, as tables (for the data tour and for checks)."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pandas as pd

from .datasets import ListDataset, load_split

SPLIT_ROLES = {"train": "seen (train)", "val": "seen (held-out val)", "zero": "unseen (test)"}


def load_all(dataset_id: str, data_root: str | Path | None = None, transform=None) -> dict[tuple[str, str], ListDataset]:
    """{(split, domain): Dataset} for the train, val and zero splits of both domains."""
    return {(split, domain): load_split(dataset_id, split, domain, data_root=data_root, transform=transform)
            for split in ("train", "val", "zero") for domain in ("sketch", "photo")}


def count_table(datasets: dict[tuple[str, str], ListDataset]) -> pd.DataFrame:
    """One row per (split, domain, class) with the number of images.

    The val photo list is the seen-class gallery (the train photos), so it is left out of the counts.
    """
    rows = []
    for (split, domain), ds in datasets.items():
        if split == "val" and domain == "photo":
            continue
        counts: dict[int, int] = defaultdict(int)
        for y in ds.labels:
            counts[y] += 1
        rows += [{"split": SPLIT_ROLES[split], "domain": domain, "class": ds.class_names[y], "count": n}
                 for y, n in sorted(counts.items())]
    return pd.DataFrame(rows)


def pairs(sketches: ListDataset, photos: ListDataset) -> dict[int, list[int]]:
    """Photo index -> indices of the sketches drawn from it (from Sketchy-style file names)."""
    by_id = {pid: i for i, pid in enumerate(photos.pair_ids)}
    out: dict[int, list[int]] = defaultdict(list)
    for j, pid in enumerate(sketches.pair_ids):
        if pid in by_id:
            out[by_id[pid]].append(j)
    return dict(out)
