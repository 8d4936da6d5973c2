"""Plots of the study: image grids, training history, retrieval results, embeddings, seed spreads. Functions return Figures."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image


def metric_name(metric: str) -> str:
    """A metric as the tables and legends write it: 'map@all' -> 'mAP@all', 'prec@100' -> 'Prec@100'; other names
    unchanged."""
    head, at, tail = str(metric).partition("@")
    return {"map": "mAP", "prec": "Prec"}.get(head, head) + at + tail


# ------------------------------------------------------------------------------------------------ palette and names
# Okabe and Ito's colour-blind-safe colours (Color Universal Design, 2008) and a neutral grey.
OKABE_ITO = {"black": "#000000", "orange": "#E69F00", "sky blue": "#56B4E9", "bluish green": "#009E73",
             "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "reddish purple": "#CC79A7",
             "grey": "#999999"}
_C = OKABE_ITO

# The study's recurring things, kind -> key -> (display name, colour), for every figure. Names as the claims
# (findings.CLAIMS) and the tables (tables.procedure_text) write them; colours differ within a kind and between the
# kinds that share a page (procedures and starts in 05; L_DA and domains in 02). Procedure keys are the results
# files' retrieval kinds; start keys those of runs.STARTS; relevance: whether a photo is of the query's class.
PALETTE = {
    "procedure": {"exact": ("exact retrieval", _C["blue"]),
                  "cluster": ("cluster-then-retrieve", _C["orange"]),
                  "transductive": ("transductive re-ranker (query expansion, gallery augmentation)",
                                   _C["reddish purple"]),
                  "random": ("chance (random ranking)", _C["grey"])},
    "start": {"pretrained": ("pretrained", _C["bluish green"]),
              "pretrained_nokd": ("pretrained without distillation", _C["sky blue"]),
              "scratch": ("from scratch", _C["vermillion"])},
    "lda": {"without": ("without L_DA", _C["grey"]), "with": ("with L_DA", _C["bluish green"])},
    "domain": {"sketch": ("sketches", _C["vermillion"]), "photo": ("photos", _C["sky blue"])},
    "relevance": {True: ("the query's class", _C["bluish green"]), False: ("another class", _C["vermillion"])},
    # 07's toy figures, on the page where blue and orange are exact retrieval and cluster-then-retrieve
    "subspaces": {1: ("k-means (M = 1)", _C["sky blue"]), 2: ("PQ (M = 2)", _C["reddish purple"])},
    "pair": {"easy": ("easy pair", _C["bluish green"]), "hard": ("hard pair", _C["vermillion"])},
}
OTHER = _C["black"]  # what no kind names (e.g. ITQ hashing, an unknown start)


def palette_colour(kind: str, key) -> str:
    """The colour of ``key`` of ``kind`` (a PALETTE kind); ``OTHER`` for a key the kind does not have."""
    return PALETTE[kind].get(key, (None, OTHER))[1]


def display_name(kind: str, key) -> str:
    """The display name of ``key`` of ``kind``; the key itself (as text) for a key the kind does not have."""
    return PALETTE[kind].get(key, (str(key), None))[0]


def procedure_of(text) -> str | None:
    """The procedure key of a retrieval kind, a ``tables.procedure_text`` or a named scoring ('exact cosine',
    'cluster M=1 K=10 adc', 'transductive re-ranker (...)'): its first word if that is a procedure, else None."""
    head = str(text).split(" ", 1)[0].rstrip(",")
    return head if head in PALETTE["procedure"] else None


def procedure_label(text) -> str:
    """``text`` with its procedure written as the display name: 'cluster M=2 K=16 rerank' -> 'cluster-then-retrieve,
    M=2 K=16 rerank', 'exact' -> 'exact retrieval'; text of no procedure unchanged."""
    key = procedure_of(text)
    if key is None:
        return str(text)
    name = display_name("procedure", key)
    rest = str(text)[len(key):].lstrip(" ,")
    return name if not rest or name.endswith(rest) else f"{name}, {rest}"


def lda_key(weight) -> str:
    """'with' for a positive L_DA weight, else 'without'."""
    return "with" if weight else "without"


def lda_label(weight) -> str:
    """'with L_DA (weight 0.1)', 'without L_DA (weight 0)'."""
    return f"{display_name('lda', lda_key(weight))} (weight {float(weight or 0):g})"


def method_name(method) -> str:
    """A results file's method as the tables write it: 'clusterretri' -> 'ClusterRetri', others in capitals."""
    return "ClusterRetri" if method == "clusterretri" else str(method).upper()


# the loss terms of a run's history (``loss_<term>``) as legends write them
LOSS_NAMES = {"ce": "cross-entropy", "da": "L_DA", "kd": "L_KD (distillation)", "quad": "quadruplet", "cls": "class",
              "total": "total"}


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
    """Loss terms (named as ``LOSS_NAMES``) and validation scores per epoch (counted from 1, integer ticks), from a
    run's history records (or the pretraining's: one ``loss``, the held-out top-1 of the class head and of the nearest
    caption)."""
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] + 1 for h in history]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.2))
    losses = sorted({k for h in history for k in h if k.startswith("loss_")}) or ["loss"]
    for key in losses:
        ax_loss.plot(epochs, [h.get(key, np.nan) for h in history], marker="o",
                     label=LOSS_NAMES.get(key.removeprefix("loss_"), key.removeprefix("loss_")))
    ax_loss.set_xlabel("epoch"), ax_loss.set_ylabel("mean loss"), ax_loss.legend(fontsize=8)
    accuracy = [k for k in ("val_top1", "val_text_top1") if any(k in h for h in history)]
    for i, key in enumerate(accuracy or ["val_map@all"]):
        ax_val.plot(epochs, [h.get(key, np.nan) for h in history], marker="o", color=f"C{3 + i}",
                    label={"val_top1": "class head", "val_text_top1": "nearest caption"}.get(key, key))
    ax_val.set_xlabel("epoch"), ax_val.set_ylabel("validation top-1 accuracy" if accuracy else "validation mAP@all")
    if len(accuracy) > 1:
        ax_val.legend(fontsize=8)
    for ax in (ax_loss, ax_val):  # whole epochs only: every epoch when they are few
        if len(epochs) <= 16:
            ax.set_xticks(epochs)
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def history_table(history, digits: int = 3):
    """A run's (or the pretraining's) history records as a reader reads them: one row per epoch counted from 1,
    losses and validation scores rounded to ``digits``, seconds to 0.1, the learning rate as set."""
    import pandas as pd

    frame = pd.DataFrame(list(history))
    frame["epoch"] = frame["epoch"].astype(int) + 1
    first = [c for c in frame.columns if c.startswith("loss")] + [c for c in frame.columns if c.startswith("val_")]
    frame = frame[["epoch", *first, *[c for c in frame.columns if c not in first and c != "epoch"]]]
    rounded = {c: 1 if c == "seconds" else digits for c in frame.columns if c not in ("epoch", "lr")}
    return frame.round(rounded).set_index("epoch")


def retrieval_grid(query_images, gallery_images, ranked: np.ndarray, relevant: np.ndarray, topk: int = 8,
                   size: float = 1.2, title: str = ""):
    """Each row: a query, then its top-``topk`` gallery items framed green (relevant) or red (the palette's
    relevance colours)."""
    n = len(query_images)
    fig, axes = plt.subplots(n, topk + 1, figsize=((topk + 1) * size, n * size), squeeze=False)
    for r in range(n):
        row = [query_images[r]] + [gallery_images(int(j)) for j in ranked[r, :topk]]
        for c, (ax, img) in enumerate(zip(axes[r], row)):
            ax.imshow(img)
            ax.set_xticks([]), ax.set_yticks([])
            colour = "black" if c == 0 else palette_colour("relevance", bool(relevant[r, c - 1]))
            for spine in ax.spines.values():
                spine.set_edgecolor(colour), spine.set_linewidth(2.5 if c else 1)
    axes[0, 0].set_title("query", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def class_colours(classes: Sequence[str]) -> dict:
    """One colour per class, in the order given: tab10 up to 10 classes, tab20 up to 20, then evenly spaced hues."""
    import seaborn as sns

    n = len(classes)
    palette = sns.color_palette("tab10" if n <= 10 else "tab20" if n <= 20 else "husl", n)
    return dict(zip(classes, palette))


DOMAIN_MARKERS = {"photo": ("o", 16), "sketch": ("x", 24)}  # dots for photos, crosses for sketches (marker, size)


def embedding_scatter(points: np.ndarray, labels: Sequence[str], domains: Sequence[str], ax=None, title: str = "",
                      legend: bool = True, fontsize: float = 9):
    """A 2-D embedding (e.g. UMAP): colour = class, marker = domain (dots: photos, crosses: sketches). With ``legend``,
    a legend outside the axes on the right, at ``fontsize`` pt: the classes as coloured dots, then the two domain
    markers in grey, drawn large enough to tell a cross from a dot."""
    from matplotlib.lines import Line2D

    ax = ax or plt.subplots(figsize=(6, 5))[1]
    points, labels, domains = np.asarray(points), np.asarray(labels), np.asarray(domains)
    colours = class_colours(sorted(set(labels.tolist())))
    for domain, (marker, size) in DOMAIN_MARKERS.items():
        for name, colour in colours.items():
            sel = (labels == name) & (domains == domain)
            if sel.any():
                ax.scatter(points[sel, 0], points[sel, 1], color=colour, marker=marker, s=size, alpha=0.75,
                           linewidths=1.3 if marker == "x" else 0)
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(title)
    if legend:
        handles = [Line2D([], [], ls="", marker="o", markersize=7, color=c, label=n) for n, c in colours.items()]
        handles += [Line2D([], [], ls="", marker=m, markersize=8, markeredgewidth=2 if m == "x" else 1, color="0.35",
                           label=display_name("domain", d))
                    for d, (m, _) in sorted(DOMAIN_MARKERS.items(), reverse=True)]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=fontsize, frameon=False,
                  ncol=1 if len(handles) <= 16 else 2, borderaxespad=0.0)
    return ax


def plot_seed_spread(frame, metric: str = "map@all", label: str = "label", ax=None, title: str = ""):
    """Per-seed values (dots) and mean ± std (diamond) of ``metric`` for each row of a long results
    frame (columns ``label``, "metric", "value"), rows in order of first appearance. With a "retrieval" column (the
    results frame's), each row is drawn in its procedure's palette colour and a legend names the procedures."""
    from matplotlib.lines import Line2D

    sub = frame[frame["metric"] == metric]
    labels = list(dict.fromkeys(sub[label]))
    procedures = (sub.groupby(label, sort=False)["retrieval"].first().map(procedure_of).to_dict()
                  if "retrieval" in sub else {})
    longest = max((len(str(name)) for name in labels), default=0)  # room for the row labels at 10 pt
    ax = ax or plt.subplots(figsize=(5 + 0.075 * longest, 0.42 * len(labels) + 1.3))[1]
    for i, name in enumerate(labels):
        values = sub.loc[sub[label] == name, "value"].to_numpy(dtype=float)
        colour = palette_colour("procedure", procedures.get(name))
        ax.scatter(values, [i] * len(values), color=colour, alpha=0.6, s=18)
        ax.errorbar(values.mean(), i, xerr=values.std(ddof=1) if len(values) > 1 else 0, fmt="D", color=colour,
                    markeredgecolor="black", ecolor="black", capsize=3)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set(xlabel=f"{metric_name(metric)} (dots: seeds; diamond: mean ± std)", title=title)
    ax.grid(axis="x", alpha=0.3)
    shown = [p for p in PALETTE["procedure"] if p in procedures.values()]
    if shown:
        ax.legend(handles=[Line2D([], [], ls="", marker="D", color=palette_colour("procedure", p),
                                  markeredgecolor="black", label=display_name("procedure", p)) for p in shown],
                  loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    ax.figure.tight_layout()
    return ax.figure


def save_figure(fig, name: str, dpi: int = 120):
    """Write ``fig`` to ``<reports>/figures/<name>.png`` (the report's figure folder) and return the path."""
    from . import paths

    path = paths.reports_dir() / "figures" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
