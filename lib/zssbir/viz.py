"""Plots of the study: image grids, training history, retrieval results, embeddings, seed spreads. Functions return Figures."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image


def image_grid(images: Sequence[Image.Image | np.ndarray | None], titles: Sequence[str] | None = None, ncols: int = 8,
               size: float = 1.4, row_labels: Sequence[str] | None = None, suptitle: str | None = None):
    """Images in rows of ``ncols``; ``row_labels`` name each row on its left. A ``None`` image leaves its
    cell blank (to end a short row)."""
    n = len(images)
    if n == 0:
        raise ValueError("image_grid needs at least one image")
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * size * 1.1), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([]), ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        if k < n and images[k] is not None:
            ax.imshow(images[k], cmap="gray" if np.ndim(images[k]) == 2 else None)
            if titles is not None:
                ax.set_title(titles[k], fontsize=7)
    if row_labels is not None:
        for r, label in enumerate(row_labels[:nrows]):
            axes[r, 0].set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def plot_history(history: Sequence[dict], title: str = ""):
    """Loss terms and validation mAP per epoch, from a run's history records."""
    epochs = [h["epoch"] + 1 for h in history]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.2))
    for key in sorted({k for h in history for k in h if k.startswith("loss_")}):
        ax_loss.plot(epochs, [h.get(key, np.nan) for h in history], marker="o", label=key[5:])
    ax_loss.set_xlabel("epoch"), ax_loss.set_ylabel("mean loss"), ax_loss.legend(fontsize=8)
    key = "val_top1" if any("val_top1" in h for h in history) else "val_map@all"
    ax_val.plot(epochs, [h.get(key, np.nan) for h in history], marker="o", color="C3")
    ax_val.set_xlabel("epoch"), ax_val.set_ylabel("validation top-1 accuracy" if key == "val_top1" else
                                                  "validation mAP@all")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def retrieval_grid(query_images, gallery_images, ranked: np.ndarray, relevant: np.ndarray, topk: int = 8,
                   size: float = 1.2, title: str = ""):
    """Each row: a query, then its top-``topk`` gallery items framed green (relevant) or red."""
    n = len(query_images)
    fig, axes = plt.subplots(n, topk + 1, figsize=((topk + 1) * size, n * size), squeeze=False)
    for r in range(n):
        row = [query_images[r]] + [gallery_images(int(j)) for j in ranked[r, :topk]]
        for c, (ax, img) in enumerate(zip(axes[r], row)):
            ax.imshow(img)
            ax.set_xticks([]), ax.set_yticks([])
            colour = "black" if c == 0 else ("tab:green" if relevant[r, c - 1] else "tab:red")
            for spine in ax.spines.values():
                spine.set_edgecolor(colour), spine.set_linewidth(2.5 if c else 1)
    axes[0, 0].set_title("query", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def embedding_scatter(points: np.ndarray, labels: Sequence[str], domains: Sequence[str], ax=None, title: str = ""):
    """A 2-D embedding (e.g. UMAP): colour = class, marker = domain (o photo, x sketch)."""
    import seaborn as sns

    ax = ax or plt.subplots(figsize=(6, 5))[1]
    sns.scatterplot(x=points[:, 0], y=points[:, 1], hue=list(labels), style=list(domains),
                    markers={"photo": "o", "sketch": "X"}, s=14, alpha=0.7, linewidth=0, ax=ax, legend="brief")
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(title)
    ax.legend(fontsize=6, markerscale=0.8, ncol=2, loc="best")
    return ax


def plot_seed_spread(frame, metric: str = "map@all", label: str = "label", ax=None, title: str = ""):
    """Per-seed values (dots) and mean ± std (diamond) of ``metric`` for each row of a long results
    frame (columns ``label``, "metric", "value"), rows in order of first appearance."""
    sub = frame[frame["metric"] == metric]
    labels = list(dict.fromkeys(sub[label]))
    ax = ax or plt.subplots(figsize=(8, 0.42 * len(labels) + 1.3))[1]
    for i, name in enumerate(labels):
        values = sub.loc[sub[label] == name, "value"].to_numpy(dtype=float)
        ax.scatter(values, [i] * len(values), color="C0", alpha=0.6, s=18)
        ax.errorbar(values.mean(), i, xerr=values.std(ddof=1) if len(values) > 1 else 0, fmt="D", color="C3",
                    capsize=3)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set(xlabel=f"{metric} (dots: seeds; diamond: mean ± std)", title=title)
    ax.grid(axis="x", alpha=0.3)
    ax.figure.tight_layout()
    return ax.figure


def save_figure(fig, name: str, dpi: int = 120):
    """Write ``fig`` to ``<reports>/figures/<name>.png`` (the report's figure folder) and return the path."""
    from . import paths

    path = paths.reports_dir() / "figures" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
