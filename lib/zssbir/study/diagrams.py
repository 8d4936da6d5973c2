"""Block diagrams of the methods, drawn with matplotlib (notebook 04 shows DMWA's; ``python -m zssbir.study.diagrams``
writes it to ``docs/figures/dmwa_blocks.svg``). A box's colour says whose it is: named by the paper's abstract, or a
choice of the study's reconstruction (``models.dmwa``, docs/dmwa.md)."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch

PAPER, CHOICE, DATA = "#cfe3f7", "#fde2c4", "#eeeeee"  # named by the abstract | the reconstruction's | inputs, outputs

# name: (x, y, width, height, colour, text) on a 16 x 9.6 canvas
DMWA_BOXES = {
    "images": (0.2, 6.3, 2.6, 2.5, DATA, "anchor sketch $s$\npositive photo $p^+$\nnegative photo $p^-$\n"
                                           "negative sketch $s^-$\n(another class)"),
    "prompts": (0.2, 0.5, 2.6, 2.0, DATA, '"a sketch of a {c}"\n"a photo of a {c}"\n(seen classes only)'),
    "visual": (3.4, 6.5, 3.0, 2.1, PAPER, "visual encoder\n(one backbone, shared)\nglobal $g$, patch tokens $T$"),
    "retrieval": (3.4, 8.9, 3.0, 0.5, DATA, "at test time: L2-normalised $g$ only"),
    "text": (3.4, 0.5, 3.0, 2.0, PAPER, "text encoder (frozen)\n+ trained projection\nclass texts $t^s_y,\\ t^p_y$"),
    "local": (7.2, 4.6, 3.4, 1.7, PAPER, "local aggregation block\ntoken cross-attention $T_s \\leftrightarrow T_p$\n"
                                         "$a_{loc} \\in [0, 1]$"),
    "global": (7.2, 2.4, 3.4, 1.7, PAPER, "global aggregation block\n$(1 + \\mathrm{mean}\\ \\cos(g, t_y))\\,/\\,2$\n"
                                          "$a_{glob} \\in [0, 1]$"),
    "weights": (11.6, 3.6, 4.2, 2.1, PAPER, "alignment weight list (no gradient)\n"
                                            "$w_i = B\\ \\mathrm{softmax}_i((\\beta\\, a_{loc,i} + "
                                            "(1-\\beta)\\, a_{glob,i})\\,/\\,\\tau)$\nmean$(w) = 1$"),
    "quad": (11.6, 6.5, 4.2, 2.1, PAPER, "weighted quadruplet loss\n$\\mathrm{mean}_i\\ w_i\\, h_i$, "
                                         "$h_i$: two hinges\n(control: one balanced hinge)"),
    "cls": (11.6, 0.5, 4.2, 2.0, CHOICE, "text-anchored cross-entropy\n$\\cos(g, t_c) / T$ over the seen classes\n"
                                         "(on $g$ of every image)"),
}
# (from, to, side of from, side of to): l, r, t, b
DMWA_ARROWS = [("images", "visual", "r", "l"), ("prompts", "text", "r", "l"), ("visual", "retrieval", "t", "b"),
               ("visual", "local", "r", "l"), ("visual", "global", "b", "l"), ("text", "global", "r", "l"),
               ("visual", "quad", "r", "l"), ("local", "weights", "r", "l"), ("global", "weights", "r", "l"),
               ("weights", "quad", "t", "b"), ("text", "cls", "r", "l")]


def _side(box: tuple, side: str) -> tuple[float, float]:
    """The middle of one side of ``box``: l, r, t or b."""
    x, y, w, h = box[:4]
    return {"l": (x, y + h / 2), "r": (x + w, y + h / 2), "t": (x + w / 2, y + h), "b": (x + w / 2, y)}[side]


def block_diagram(boxes: dict, arrows: list[tuple[str, str, str, str]], *, title: str = "", legend: bool = True,
                  size: tuple[float, float] = (13, 7.8)):
    """A figure of labelled boxes (name: (x, y, width, height, colour, text) on a 16 x 9.6 canvas) joined by arrows
    (from, to, side of from, side of to)."""
    fig, ax = plt.subplots(figsize=size)
    ax.set(xlim=(0, 16), ylim=(0, 9.6))
    ax.axis("off")
    for x, y, w, h, colour, text in boxes.values():
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05,rounding_size=0.15", fc=colour,
                                    ec="#555555"))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=10, linespacing=1.4)
    for start, end, out, into in arrows:
        ax.add_patch(FancyArrowPatch(_side(boxes[start], out), _side(boxes[end], into), arrowstyle="-|>",
                                     mutation_scale=14, color="#444444",
                                     lw=1.2, shrinkA=4, shrinkB=4))
    if legend:
        ax.legend(handles=[Patch(fc=PAPER, ec="#555555",
                                 label="a module the abstract names\n(its form: the reconstruction's)"),
                           Patch(fc=CHOICE, ec="#555555", label="added by the reconstruction"),
                           Patch(fc=DATA, ec="#555555", label="inputs and test-time output")],
                  loc="center left", bbox_to_anchor=(0.0, 0.47), fontsize=9,
                  frameon=False)
    if title:
        ax.set_title(title, fontsize=12)
    fig.tight_layout()
    return fig


def dmwa_block_diagram():
    """DMWA as the study rebuilds it: the modules of the abstract and the reconstruction's choices between them."""
    return block_diagram(DMWA_BOXES, DMWA_ARROWS, title="DMWA (reconstructed from its abstract): one training step")


def write_svg(fig, path: str | Path) -> Path:
    """``fig`` as an SVG without a date in its metadata (the same drawing, the same bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="svg", metadata={"Date": None}, bbox_inches="tight")
    return path


if __name__ == "__main__":
    from .. import paths

    plt.rcParams["svg.hashsalt"] = "zssbir"  # stable element ids
    print(write_svg(dmwa_block_diagram(), paths.project_root() / "docs" / "figures" / "dmwa_blocks.svg"))
