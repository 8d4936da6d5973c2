"""The retrieval explorer of ``06_explore``: what one sketch retrieves from a trained run, by exact retrieval and by
cluster-then-retrieve side by side, and, for a DMWA run, what its weighting blocks see in one sketch-photo pair.

Everything here is plain Python (no widgets): ``explorer_widgets`` puts controls on top, and the notebook's static
views (its HTML report) call the same functions for a few fixed queries.

- ``Explorer.open(run_config, overrides)`` opens a trained run through ``zssbir.study.runs`` (a missing or
  unfinished run raises ``RunNotFoundError`` naming it and how to train it) and encodes its unseen split once
  (through the feature cache, as ``scoring.split_features`` does).
- A query is an unseen sketch (``sketch_query``: class and index) or a drawing (``drawing_query``): strokes in
  canvas coordinates rendered by ``render_strokes`` like the data set's sketch files (black strokes on white,
  the files' size, RGB as ``ListDataset.load_image`` returns them), then the run's evaluation transform of
  sketches and ``model.embed``, exactly as a sketch of the data set is encoded.
- ``compare`` ranks the gallery for one query both ways: exact cosine retrieval, and the PQ index of (M, K)
  (fitted once per (M, K) and kept) with variant adc / fuse / rerank; each list with the query's AP (the run's
  metric convention), the rank of its first photo of the query's class, and the PQ cell the query falls into.

The DMWA pair view is ``explorer_pairs``; the live explorer's fast PIL tiles are ``explorer_tiles``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw

from ..data.datasets import load_split
from ..data.drawing import supersample
from ..eval.cluster_retrieval import ClusterIndex, DEFAULT_FUSE_WEIGHT, divisors, resolve_ties
from ..eval.pq_encode import encode
from ..eval.exact_search import score_blocks
from ..eval.metrics import evaluate
from ..eval.relevant_ranks import rank_positions, ranked_order
from ..models.factory import transforms_for
from ..runtime import resolve_device
from . import runs
from .scoring import split_features

EMPTY_DRAWING_HINT = ("the drawing is empty: draw at least one stroke on the canvas (press the mouse button, move, "
                      "release), then search again")


# ------------------------------------------------------------------------------------------------ drawing
def render_strokes(strokes, size: int | tuple[int, int], canvas_size: tuple[float, float], *,
                   width: float | None = None, ink: int = 0) -> Image.Image:
    """A drawing as the data set's sketch files look: ``strokes`` (each a sequence of (x, y) points in a canvas of
    ``canvas_size`` = (width, height)) drawn in black on white at ``size`` pixels, RGB.

    The stroke width is the synthetic sketches' nominal width (``max(1, side / 80)`` pixels of the final image)
    unless ``width`` (pixels of the final image) is given; like the generator, it draws supersampled and
    downsamples with LANCZOS. Raises ValueError with a hint when no stroke has a point."""
    strokes = [np.asarray(s, dtype=np.float64).reshape(-1, 2) for s in (strokes or [])]
    strokes = [s for s in strokes if len(s)]
    if not strokes:
        raise ValueError(EMPTY_DRAWING_HINT)
    w_img, h_img = (size, size) if isinstance(size, int) else size
    cw, ch = canvas_size
    if cw <= 0 or ch <= 0:
        raise ValueError(f"canvas_size must be positive, got {canvas_size}")
    factor = supersample(max(w_img, h_img))
    big = (w_img * factor, h_img * factor)
    line = (max(1.0, max(w_img, h_img) / 80) if width is None else float(width)) * factor
    img = Image.new("L", big, 255)
    draw = ImageDraw.Draw(img)
    for s in strokes:
        pts = np.clip(s / [cw, ch], 0.0, 1.0) * [big[0] - 1, big[1] - 1]
        if len(pts) > 1:
            draw.line([tuple(p) for p in pts], fill=ink, width=max(1, int(round(line))), joint="curve")
        for x, y in pts[[0, -1]]:  # round ends (and a single click is a dot)
            draw.ellipse([x - line / 2, y - line / 2, x + line / 2, y + line / 2], fill=ink)
    return img.resize((w_img, h_img), Image.LANCZOS).convert("RGB")


def open_for_exploring(run_config: str | Path, overrides: dict | None = None, *, device: str = "auto",
                       trained_by: str = "01_train", if_code_changed: str = "refuse") -> runs.TrainedRun:
    """``runs.open_run`` of a settings file plus overrides; a run that does not exist or is incomplete (unfinished,
    or its folder lacks the selected checkpoint) raises one ``RunNotFoundError`` that names the run, its folder and
    the commands that create it."""
    config = runs.run_config(run_config, overrides, device=device)
    name, folder = runs.run_name(config), runs.default_run_dir(config)
    create = (f"Create it with `make reports` (notebook {trained_by} trains it) or "
              f"`{runs.train_command(run_config, overrides)}`")
    if not (folder / "checkpoint.pt").is_file():
        raise runs.RunNotFoundError(f"cannot explore run {name}: it has not been trained (no {folder}). {create}")
    try:
        return runs.open_run(config, device=device, trained_by=trained_by, if_code_changed=if_code_changed)
    except FileNotFoundError as err:  # RunNotFoundError (unfinished, other code), or load_trained's missing best.pt
        raise runs.RunNotFoundError(f"cannot explore run {name} (folder {folder}): {err}. {create}") from None


# ------------------------------------------------------------------------------------------------ results
@dataclass
class Query:
    feature: np.ndarray      # (D,) the run's embedding (un-normalised)
    label: int               # the class (unseen split id) it is scored against; for a drawing: the intended class
    image: Image.Image       # the image the model encoded (before its transform)
    source: str              # "sketch <class> #i" or "drawing meant as <class>"


@dataclass
class Ranking:
    name: str                # "exact" or "cluster M=.. K=.. <variant>"
    top: np.ndarray          # the first k gallery indices, best first
    scores: np.ndarray       # their scores (cosine similarity, or distance for the cluster lists: smaller first)
    relevant: np.ndarray     # bool, same class as the query
    ap: float                # the query's AP over the whole ranking
    first_correct: int | None  # 1-based rank of the first photo of the query's class (None: the class has none)
    n_relevant: int          # photos of the query's class in the gallery
    score_kind: str = "cosine similarity"  # what ``scores`` hold: "cosine similarity" or "distance"


@dataclass
class Cell:
    code: tuple[int, ...]    # the PQ code (one centroid per sub-space) the query falls into
    members: np.ndarray      # gallery indices in that cell
    share: float             # fraction of them in the query's class (nan: empty cell)
    classes: dict            # class name -> members
    own: bool                # False: the query's own cell holds no photo, this is the nearest occupied one


@dataclass
class Comparison:
    query: Query
    exact: Ranking
    cluster: Ranking
    cell: Cell
    settings: dict = field(default_factory=dict)  # M, K, variant, fuse_weight, k
    seconds: float = 0.0

    def sentence(self, class_names) -> str:
        """One line: both lists' AP and first correct rank (lists named as the figures name them), and the cell."""
        from ..viz import procedure_label

        name = class_names[self.query.label]
        parts = [f"{procedure_label(r.name)}: AP {r.ap:.3f}, first {name} at rank {r.first_correct}"
                 for r in (self.exact, self.cluster)]
        cell = (f"its cell {self.cell.code} holds {len(self.cell.members)} photos, {self.cell.share:.0%} {name}"
                + ("" if self.cell.own else " (its own cell is empty: the nearest occupied cell)"))
        return f"{self.query.source}: " + "; ".join(parts) + f"; {cell}."


# ------------------------------------------------------------------------------------------------ explorer
class Explorer:
    """A trained run's unseen split, encoded once, and its PQ indexes, one per (M, K), fitted when first asked."""

    def __init__(self, run: runs.TrainedRun, *, device: str = "auto", preset: str = "clusterretri",
                 split: str = "zero"):
        self.run, self.config, self.preset, self.split = run, run.config, preset, split
        self.device = resolve_device(device)
        self.model = run.model.eval().to(self.device)
        feats = split_features(self.model, self.config, split, device=device)
        (self.sketch_feats, sl), (self.photo_feats, pl) = feats["sketch"], feats["photo"]
        self.sketch_labels, self.photo_labels = np.asarray(sl), np.asarray(pl)
        self.sketches, self.photos = (load_split(self.config.dataset, split, d, data_root=self.config.data_root)
                                      for d in ("sketch", "photo"))
        self.transform = transforms_for(self.model, self.config, train=False)["sketch"]
        self.sketch_size = self.sketches.load_image(0).size
        self._indexes: dict[tuple[int, int], ClusterIndex] = {}
        self._photo_cache: dict[int, Image.Image] = {}

    @classmethod
    def open(cls, run_config: str | Path, overrides: dict | None = None, *, device: str = "auto",
             trained_by: str = "01_train", if_code_changed: str = "refuse", **kwargs) -> Explorer:
        """Open the trained run of a settings file plus overrides (``RunNotFoundError`` naming it and the command
        that creates it when it is missing or incomplete)."""
        return cls(open_for_exploring(run_config, overrides, device=device, trained_by=trained_by,
                                      if_code_changed=if_code_changed), device=device, **kwargs)

    # ------------------------------------------------------------------ what can be asked
    @property
    def class_names(self) -> tuple[str, ...]:
        return self.sketches.class_names

    @property
    def dim(self) -> int:
        return self.photo_feats.shape[1]

    @property
    def gallery_size(self) -> int:
        return len(self.photo_feats)

    def valid_M(self) -> list[int]:
        return divisors(self.dim)

    def class_id(self, cls: int | str) -> int:
        if isinstance(cls, str):
            if cls not in self.class_names:
                raise ValueError(f"no unseen class {cls!r}; the unseen classes: {', '.join(self.class_names)}")
            return self.class_names.index(cls)
        if not 0 <= int(cls) < len(self.class_names):
            raise ValueError(f"class number {cls} is out of range: {len(self.class_names)} unseen classes, "
                             f"0..{len(self.class_names) - 1}")
        return int(cls)

    def class_sketches(self, cls: int | str) -> np.ndarray:
        """List positions of the unseen sketches of a class."""
        return np.flatnonzero(self.sketch_labels == self.class_id(cls))

    def photo(self, index: int) -> Image.Image:
        if index not in self._photo_cache:
            self._photo_cache[index] = self.photos.load_image(int(index))
        return self._photo_cache[index]

    # ------------------------------------------------------------------ queries
    def sketch_query(self, cls: int | str, index: int) -> Query:
        """The ``index``-th unseen sketch of class ``cls`` (name or number), with its cached feature."""
        c = self.class_id(cls)
        members = self.class_sketches(c)
        if not 0 <= int(index) < len(members):
            raise ValueError(f"class {self.class_names[c]!r} has {len(members)} unseen sketches: index 0.."
                             f"{len(members) - 1}, got {index}")
        i = int(members[int(index)])
        return Query(self.sketch_feats[i], c, self.sketches.load_image(i),
                     f"sketch {self.class_names[c]} #{int(index)}")

    def encode(self, image: Image.Image) -> np.ndarray:
        """The run's feature of one sketch image: its evaluation transform of sketches, then ``model.embed``."""
        x = self.transform(image.convert("RGB"))[None].to(self.device)
        with torch.no_grad():
            f = self.model.embed(x, torch.zeros(1, dtype=torch.long, device=self.device))
        return f.float().cpu().numpy()[0]

    def drawing_query(self, strokes, cls: int | str, canvas_size: tuple[float, float], *,
                      width: float | None = None) -> Query:
        """A drawing (strokes in canvas coordinates) rendered like the data set's sketches and encoded; scored
        against class ``cls`` (what the person meant to draw). An empty drawing raises ValueError with a hint."""
        c = self.class_id(cls)
        image = render_strokes(strokes, self.sketch_size, canvas_size, width=width)
        return Query(self.encode(image), c, image, f"drawing meant as {self.class_names[c]}")

    # ------------------------------------------------------------------ indexes and rankings
    def check_mk(self, M: int, K: int) -> None:
        """Refuse an M that does not divide D and a K larger than the gallery, naming what is valid."""
        if int(M) not in self.valid_M():
            raise ValueError(f"M = {M} does not divide the feature dimension D = {self.dim}; valid M: "
                             f"{', '.join(map(str, self.valid_M()))}")
        if not 1 <= int(K) <= self.gallery_size:
            raise ValueError(f"K = {K} is not possible: every sub-space has at most as many centroids as the gallery "
                             f"has photos ({self.gallery_size}); the largest valid K is {self.gallery_size}")

    @property
    def fitted_indexes(self) -> int:
        """How many (M, K) indexes have been fitted (each is fitted once)."""
        return len(self._indexes)

    def index(self, M: int, K: int) -> ClusterIndex:
        """The PQ index of the gallery with M sub-spaces and K centroids (fitted once, then reused)."""
        self.check_mk(M, K)
        key = (int(M), int(K))
        if key not in self._indexes:
            self._indexes[key] = ClusterIndex.fit(self.photo_feats, *key)
        return self._indexes[key]

    def _ranking(self, name: str, scores, label: int, k: int, *, higher_is_better: bool, ties: str,
                 seed: int | None = None, secondary=None) -> Ranking:
        scores = np.asarray(scores, dtype=np.float32)[None]
        sec = None if secondary is None else np.asarray(secondary, dtype=np.float32)[None]
        kw = dict(higher_is_better=higher_is_better, ties=ties, seed=seed, secondary=sec,
                  secondary_higher_is_better=None if sec is None else False)
        order = ranked_order(scores, **kw)[0]
        top = order[:k]
        relevant = self.photo_labels[top] == label
        n_rel = int((self.photo_labels == label).sum())
        kind = "cosine similarity" if higher_is_better else "distance"
        if not n_rel:
            return Ranking(name, top, scores[0, top], relevant, float("nan"), None, 0, kind)
        ap = evaluate(scores, [label], self.photo_labels, metrics=["map@all"], preset=self.preset,
                      **{k_: v for k_, v in kw.items() if v is not None})["map@all"].value
        first = int(rank_positions(scores, [label], self.photo_labels, **kw)[0][0])
        return Ranking(name, top, scores[0, top], relevant, float(ap), first, n_rel, kind)

    def exact(self, query: Query, k: int = 8) -> Ranking:
        """Exact cosine retrieval (ties by gallery index, as the study scores it)."""
        (_, _, block), = score_blocks(query.feature[None], self.photo_feats, metric="cosine")
        return self._ranking("exact", block[0].numpy(), query.label, k, higher_is_better=True, ties="stable")

    def clustered(self, query: Query, M: int, K: int, variant: str = "rerank", *,
                  fuse_weight: float = DEFAULT_FUSE_WEIGHT, k: int = 8) -> Ranking:
        """Cluster-then-retrieve with the (M, K) index: ADC distances (smaller first) under the variant's tie policy
        (random ties seeded by the k-means seed for adc / fuse, the exact distance for rerank)."""
        index = self.index(M, K)
        ties = resolve_ties(variant, None)
        block = next(index.score_blocks(query.feature[None], variant, fuse_weight=fuse_weight))
        secondary = block[3][0].numpy() if variant == "rerank" else None
        name = f"cluster M={M} K={K} {variant}" + (f" w={fuse_weight:g}" if variant == "fuse" else "")
        return self._ranking(name, block[2][0].numpy(), query.label, k, higher_is_better=False, ties=ties,
                             seed=index.seed if ties == "random" else None, secondary=secondary)

    def cell(self, query: Query, M: int, K: int) -> Cell:
        """The PQ cell (code tuple) the query falls into, or the nearest occupied one when its own holds no photo."""
        index = self.index(M, K)
        q = index.prepare_queries(query.feature[None])
        code = encode(q, index.centroids)[0]
        members = np.flatnonzero((index.codes == code).all(1))
        own = len(members) > 0
        if not own:
            code = index.codes[int(np.argmin(index.adc(query.feature[None])[0]))]
            members = np.flatnonzero((index.codes == code).all(1))
        labels = self.photo_labels[members]
        classes = {self.class_names[c]: int(n) for c, n in zip(*np.unique(labels, return_counts=True))}
        classes = dict(sorted(classes.items(), key=lambda kv: -kv[1]))
        share = float(np.mean(labels == query.label)) if len(members) else float("nan")
        return Cell(tuple(int(c) for c in code), members, share, classes, own)

    def compare(self, query: Query, *, M: int, K: int, variant: str = "rerank",
                fuse_weight: float = DEFAULT_FUSE_WEIGHT, k: int = 8) -> Comparison:
        """Both rankings of one query and its cell (the index of (M, K) is fitted on first use only)."""
        start = time.perf_counter()
        self.check_mk(M, K)
        if not 1 <= int(k) <= self.gallery_size:
            raise ValueError(f"k = {k} photos shown: choose 1..{self.gallery_size}")
        out = Comparison(query, self.exact(query, k), self.clustered(query, M, K, variant, fuse_weight=fuse_weight, k=k),
                         self.cell(query, M, K), {"M": M, "K": K, "variant": variant, "fuse_weight": fuse_weight, "k": k})
        out.seconds = time.perf_counter() - start
        return out

    def k_sweep(self, query: Query, M: int, Ks, variant: str = "rerank", *,
                fuse_weight: float = DEFAULT_FUSE_WEIGHT) -> pd.DataFrame:
        """How one query's cluster list and cell change with K (exact retrieval alongside, for reference)."""
        exact = self.exact(query)
        rows = []
        for K in Ks:
            r, c = self.clustered(query, M, K, variant, fuse_weight=fuse_weight), self.cell(query, M, K)
            rows.append({"K": K, "AP cluster": r.ap, "first correct (cluster)": r.first_correct, "AP exact": exact.ap,
                         "first correct (exact)": exact.first_correct, "cell size": len(c.members),
                         "cell share of the class": c.share})
        return pd.DataFrame(rows).set_index("K")


# ------------------------------------------------------------------------------------------------ figures
def _frame(ax, colour: str, width: float = 3.0) -> None:
    ax.set_xticks([]), ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(colour), spine.set_linewidth(width)


def comparison_figure(explorer: Explorer, shown: Comparison, size: float = 1.45):
    """The query; a row per list (exact; cluster-then-retrieve) of its top photos framed green (query's class) or
    red, each titled with its rank and class, the row labelled in its procedure's palette colour and display name
    with AP and first correct rank; a last row of photos of the query's PQ cell with its share of the query's class.
    Frames in the palette's relevance colours."""
    from ..viz import palette_colour, procedure_label, procedure_of

    k = len(shown.exact.top)
    names = explorer.class_names
    target = names[shown.query.label]
    cell = shown.cell
    fig, axes = plt.subplots(4, k + 1, figsize=((k + 1) * size, 4 * size * 1.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes[0, 0].axis("on")
    axes[0, 0].imshow(shown.query.image)
    _frame(axes[0, 0], "black", 1)
    axes[0, 1].text(0.0, 0.5, f"query: {shown.query.source}\nscored against class {target} "
                    f"({shown.exact.n_relevant} photos of {explorer.gallery_size})", fontsize=8, va="center",
                    transform=axes[0, 1].transAxes)
    for row, r in enumerate((shown.exact, shown.cluster), start=1):
        label = (procedure_label(r.name).replace(", ", "\n", 1)  # 'cluster-then-retrieve\nM=2 K=16 rerank'
                 + f"\nAP {r.ap:.3f}\nfirst {target}\nat rank {r.first_correct}")
        axes[row, 0].text(1.0, 0.5, label, fontsize=8, ha="right", va="center", transform=axes[row, 0].transAxes,
                          color=palette_colour("procedure", procedure_of(r.name)))
        for c, j in enumerate(r.top[:k]):
            ax = axes[row, c + 1]
            ax.axis("on")
            ax.imshow(explorer.photo(int(j)))
            ax.set_title(f"{c + 1}. {names[explorer.photo_labels[j]]}", fontsize=8)
            _frame(ax, palette_colour("relevance", bool(r.relevant[c])))
    axes[3, 0].text(1.0, 0.5, f"PQ cell {cell.code}{'' if cell.own else ' (nearest occupied)'}\n"
                    f"{len(cell.members)} photos\n{cell.share:.0%} {target}", fontsize=8, ha="right", va="center",
                    transform=axes[3, 0].transAxes)
    for c, j in enumerate(cell.members[:k]):
        ax = axes[3, c + 1]
        ax.axis("on")
        ax.imshow(explorer.photo(int(j)))
        ax.set_title(names[explorer.photo_labels[j]], fontsize=8)
        _frame(ax, palette_colour("relevance", bool(explorer.photo_labels[j] == shown.query.label)), 1.5)
    fig.suptitle("exact retrieval and cluster-then-retrieve of one query (green: the query's class), and its PQ cell",
                 fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.9, bottom=0.02, wspace=0.15, hspace=0.45)
    return fig
