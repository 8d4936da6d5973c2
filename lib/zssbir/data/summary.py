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


def split_overview(counts: pd.DataFrame) -> pd.DataFrame:
    """Images per split and domain, and classes per split, from ``count_table``."""
    overview = counts.pivot_table(index="split", columns="domain", values="count", aggfunc="sum").fillna(0).astype(int)
    overview["classes"] = counts.groupby("split")["class"].nunique()
    return overview


def plot_class_counts(counts: pd.DataFrame, order: list[str], title: str = ""):
    """Stacked bars of images per class and split, one panel per domain (classes in ``order``)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(12, 6), sharex=True)
    for ax, domain in zip(axes, ("sketch", "photo")):
        per_split = counts[counts.domain == domain].pivot_table(index="class", columns="split", values="count",
                                                                aggfunc="sum")
        per_split = per_split.reindex(index=order, columns=sorted(counts.split.unique())).fillna(0)
        per_split.plot.bar(stacked=True, ax=ax, width=0.8)
        ax.set_ylabel("sketches" if domain == "sketch" else "photos")
        ax.legend(fontsize=8)
    axes[1].tick_params(axis="x", rotation=90, labelsize=7)
    axes[0].set_title(title)
    fig.tight_layout()
    return fig


def tour_sentences(datasets: dict[tuple[str, str], ListDataset], linked: dict[int, list[int]]) -> list[str]:
    """What the data tour shows, as sentences computed from the loaded lists."""
    seen, unseen = datasets[("train", "sketch")], datasets[("zero", "sketch")]
    per_class = pd.Series(datasets[("zero", "photo")].labels).value_counts()
    return [f"The model trains on {len(seen.class_names)} seen classes ({len(seen)} sketches, "
            f"{len(datasets[('train', 'photo')])} photos) and selects its checkpoint on "
            f"{len(datasets[('val', 'sketch')])} held-out sketches of those classes.",
            f"It is tested on {len(unseen.class_names)} unseen classes: {len(unseen)} query sketches against a "
            f"gallery of {len(datasets[('zero', 'photo')])} photos ({per_class.min()} to {per_class.max()} per class), "
            f"so with balanced classes a random ranking finds a relevant photo at about rate {1 / len(unseen.class_names):.3f}.",
            f"{len(linked)} unseen photos have sketches drawn from them (instance pairs, used by DMWA's quadruplets)."]
