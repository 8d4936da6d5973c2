"""The live explorer of ``06_explore``: ipywidgets controls and an ipycanvas drawing pad on top of ``study.explorer``.

``explorer_app`` shows, for a query (an unseen sketch picked by class and index, or a sketch drawn with the mouse),
its top photos under exact retrieval and under cluster-then-retrieve side by side (variant, M, K, fuse weight and
the number shown as controls), with its AP, the rank of its first correct photo and the PQ cell it falls into.
``pair_app`` shows a DMWA run's weight list pair by pair with the local block's attention. Every number comes from
``study.explorer``; this module only lays out widgets and passes their values on. Elements carry CSS classes
(``zssbir-*``) so that the browser test can find them.
"""
from __future__ import annotations

import html
import io
import time

import matplotlib.pyplot as plt
import ipywidgets as W

from ..eval.cluster_retrieval import DEFAULT_FUSE_WEIGHT, VARIANTS
from ..viz import procedure_label
from .explorer import Explorer
from .explorer_pairs import PairProbe, attention_figure
from .explorer_tiles import cell_image, ranking_image

CANVAS_SIZE = 256
SOURCES = ("unseen sketch", "my drawing")
STATIC_HINT = ("The live explorer needs a running kernel: open this notebook in JupyterLab (`make explore`), run all "
               "cells, then pick a sketch or draw one.")
PAIR_STATIC_HINT = ("The live pair picker needs a running kernel too (`make explore`); below, the lowest and highest "
                    "weighted pairs of the list.")


def _png(image) -> bytes:
    buf = io.BytesIO()
    if hasattr(image, "savefig"):
        image.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        plt.close(image)
    else:
        image.save(buf, format="PNG")
    return buf.getvalue()


def _show(widget, image) -> None:
    """Put a PIL image into an Image widget at its own size (a flex box would otherwise stretch it)."""
    widget.width, widget.height = str(image.width), str(image.height)
    widget.layout.width, widget.layout.height = f"{image.width}px", f"{image.height}px"
    widget.value = _png(image)


def _classed(widget, *names):
    for n in names:
        widget.add_class(n)
    return widget


class ExplorerApp:
    """The widgets of one explorer and what happens when they change; ``.widget`` is what the notebook shows."""

    def __init__(self, explorer: Explorer, *, M: int = 2, K: int = 16, variant: str = "rerank",
                 fuse_weight: float = DEFAULT_FUSE_WEIGHT, top_k: int = 8, cls: int = 0, index: int = 0):
        from ipycanvas import Canvas

        self.explorer = explorer
        self.strokes: list[list[tuple[float, float]]] = []
        self._drawing = False
        self.shown = None
        names = list(explorer.class_names)
        style = {"description_width": "initial"}
        self.source = _classed(W.ToggleButtons(options=SOURCES, value=SOURCES[0], description="query:", style=style),
                               "zssbir-source")
        self.cls = _classed(W.Dropdown(options=[(n, i) for i, n in enumerate(names)], value=explorer.class_id(cls),
                                       description="class (of the sketch, or of your drawing):", style=style,
                                       layout=W.Layout(width="440px")),
                            "zssbir-class")
        self.index = _classed(W.BoundedIntText(value=index, min=0, max=len(explorer.class_sketches(cls)) - 1,
                                               description="sketch index:", style=style,
                                               layout=W.Layout(width="180px")), "zssbir-index")
        self.variant = _classed(W.Dropdown(options=list(VARIANTS), value=variant, description="variant:",
                                           layout=W.Layout(width="170px")), "zssbir-variant")
        self.M = _classed(W.Dropdown(options=explorer.valid_M(), value=M, description="M:",
                                     layout=W.Layout(width="130px")), "zssbir-M")
        self.K = _classed(W.IntText(value=K, description="K:", layout=W.Layout(width="130px")), "zssbir-K")
        self.fuse = _classed(W.FloatSlider(value=fuse_weight, min=0.0, max=1.0, step=0.05,
                                           description="fuse weight:", style=style), "zssbir-fuse")
        self.top_k = _classed(W.IntSlider(value=top_k, min=1, max=min(24, explorer.gallery_size),
                                          description="photos shown:", style=style), "zssbir-topk")
        self.canvas = _classed(Canvas(width=CANVAS_SIZE, height=CANVAS_SIZE,
                                      layout=W.Layout(width=f"{CANVAS_SIZE}px", height=f"{CANVAS_SIZE}px",
                                                      border="1px solid #888")), "zssbir-canvas")
        self.clear = _classed(W.Button(description="clear drawing", icon="eraser"), "zssbir-clear")
        self.query_image = _classed(W.Image(format="png", layout=W.Layout(width="128px", height="128px")),
                                    "zssbir-query")
        self.status = _classed(W.HTML(), "zssbir-status")
        self.exact_text, self.cluster_text, self.cell_text = (_classed(W.HTML(), f"zssbir-{n}-text")
                                                              for n in ("exact", "cluster", "cell"))
        self.exact_image, self.cluster_image, self.cell_image = (_classed(W.Image(format="png"), f"zssbir-{n}-image")
                                                                 for n in ("exact", "cluster", "cell"))
        self._reset_canvas()
        self.canvas.on_mouse_down(self._down)
        self.canvas.on_mouse_move(self._move)
        self.canvas.on_mouse_up(self._up)
        self.canvas.on_mouse_out(self._up)
        self.clear.on_click(self._clear)
        for w in (self.source, self.cls, self.index, self.variant, self.M, self.K, self.fuse, self.top_k):
            w.observe(self._changed, names="value")
        header = W.HTML(f"<b>run {html.escape(explorer.run.name)}</b>: {len(explorer.sketch_feats)} unseen sketches, "
                        f"{explorer.gallery_size} photos of {len(names)} unseen classes, D = {explorer.dim}. "
                        "Pick a sketch, or draw one on the pad (it is searched when you release the mouse).")
        pad = W.VBox([W.HTML("draw here:"), self.canvas, self.clear])
        seen = W.VBox([W.HTML("what the model encodes:"), self.query_image])
        lists = W.HBox([W.VBox([self.exact_text, self.exact_image], layout=W.Layout(width="50%")),
                        W.VBox([self.cluster_text, self.cluster_image], layout=W.Layout(width="50%"))])
        self.widget = _classed(W.VBox([header, W.HBox([self.source, self.cls, self.index]),
                                       W.HBox([self.variant, self.M, self.K, self.fuse, self.top_k]),
                                       W.HBox([pad, seen]), self.status, lists, self.cell_text, self.cell_image]),
                               "zssbir-explorer")
        self.update()

    # ------------------------------------------------------------------ drawing
    def _reset_canvas(self) -> None:
        self.canvas.fill_style = "white"
        self.canvas.fill_rect(0, 0, CANVAS_SIZE, CANVAS_SIZE)
        self.canvas.stroke_style = "black"
        self.canvas.line_width = 3
        self.canvas.line_cap = "round"

    def _down(self, x, y) -> None:
        self._drawing = True
        self.strokes.append([(x, y)])

    def _move(self, x, y) -> None:
        if self._drawing:
            x0, y0 = self.strokes[-1][-1]
            self.strokes[-1].append((x, y))
            self.canvas.stroke_line(x0, y0, x, y)

    def _up(self, x, y) -> None:
        if not self._drawing:
            return
        self._drawing = False
        self.source.unobserve(self._changed, names="value")
        self.source.value = SOURCES[1]
        self.source.observe(self._changed, names="value")
        self.update()

    def _clear(self, _=None) -> None:
        self.strokes = []
        self._reset_canvas()
        if self.source.value == SOURCES[1]:
            self.update()

    # ------------------------------------------------------------------ results
    def _changed(self, change) -> None:
        if change["owner"] is self.cls:
            self.index.max = len(self.explorer.class_sketches(self.cls.value)) - 1
        self.update()

    def query(self):
        if self.source.value == SOURCES[1]:
            return self.explorer.drawing_query(self.strokes, self.cls.value, (CANVAS_SIZE, CANVAS_SIZE))
        return self.explorer.sketch_query(self.cls.value, self.index.value)

    def update(self) -> None:
        """Recompute and redraw; a refused input (empty drawing, K too large, ...) is shown with its hint."""
        start = time.perf_counter()
        try:
            query = self.query()
            shown = self.explorer.compare(query, M=self.M.value, K=self.K.value, variant=self.variant.value,
                                          fuse_weight=self.fuse.value, k=self.top_k.value)
        except ValueError as err:
            self.status.value = f"<span style='color:#b00'>refused: {html.escape(str(err))}</span>"
            return
        self.shown = shown
        names = self.explorer.class_names
        target = html.escape(names[query.label])
        self.query_image.value = _png(query.image.resize((128, 128)))
        for text, image, r in ((self.exact_text, self.exact_image, shown.exact),
                               (self.cluster_text, self.cluster_image, shown.cluster)):
            text.value = (f"<b>{html.escape(procedure_label(r.name))}</b>: AP <b>{r.ap:.3f}</b>, first {target} at rank "
                          f"<b>{r.first_correct}</b> ({r.n_relevant} {target} photos in the gallery); top photo's "
                          f"{r.score_kind} {r.scores[0]:.4f}")
            _show(image, ranking_image(self.explorer, r))
        cell = shown.cell
        where = "the query's PQ cell" if cell.own else "the nearest occupied PQ cell (the query's own holds no photo)"
        mix = ", ".join(f"{html.escape(k)} {v}" for k, v in cell.classes.items())
        self.cell_text.value = (f"{where} {cell.code}: {len(cell.members)} photos, <b>{cell.share:.0%}</b> {target} "
                                f"({mix})")
        _show(self.cell_image, cell_image(self.explorer, shown))
        self.status.value = (f"{html.escape(query.source)}: updated in {time.perf_counter() - start:.2f} s "
                             f"(PQ indexes fitted so far: {self.explorer.fitted_indexes})")


def explorer_app(explorer: Explorer, *, interactive: bool = True, **controls):
    """The live explorer (``ExplorerApp``'s widget); with ``interactive=False`` (the static HTML report, where no
    kernel answers the controls) a note saying how to open it instead."""
    if not interactive:
        from IPython.display import Markdown

        return Markdown(STATIC_HINT)
    return ExplorerApp(explorer, **controls).widget


class PairApp:
    """A DMWA run's weight list, one pair at a time: its scores, weight and rank, and the local block's attention."""

    def __init__(self, probe: PairProbe, row: int = 0):
        self.probe = probe
        frame = probe.frame
        options = [(f"pair {i}: {r['class']}, w {r['w']:.2f} (rank {r['rank by w']})", i) for i, r in frame.iterrows()]
        self.row = _classed(W.Dropdown(options=options, value=row, description="pair:"), "zssbir-pair")
        self.token = _classed(W.IntSlider(value=-1, min=-1, max=0, description="sketch token (-1: most focused):",
                                          style={"description_width": "initial"}), "zssbir-token")
        self.text = _classed(W.HTML(), "zssbir-pair-text")
        self.image = _classed(W.Image(format="png"), "zssbir-pair-image")
        self.row.observe(lambda _: self.update(), names="value")
        self.token.observe(lambda _: self.update(), names="value")
        self.widget = _classed(W.VBox([W.HBox([self.row, self.token]), self.text, self.image]), "zssbir-pairs")
        self.update()

    def update(self) -> None:
        pair = self.probe.pair(self.row.value)
        self.token.max = len(pair["sketch_to_photo"]) - 1
        token = None if self.token.value < 0 else self.token.value
        self.text.value = html.escape(self.probe.sentence(pair))
        self.image.value = _png(attention_figure(pair, token))


def pair_app(probe: PairProbe, *, interactive: bool = True, row: int = 0):
    """The DMWA pair view (``PairApp``'s widget), or a note saying how to open it when not interactive."""
    if not interactive:
        from IPython.display import Markdown

        return Markdown(PAIR_STATIC_HINT)
    return PairApp(probe, row).widget
