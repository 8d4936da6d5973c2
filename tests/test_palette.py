"""One palette and one set of names for the study's recurring things (issue 25, point 4): every figure that shows a
procedure, a start, L_DA on or off, a domain or whether a photo is of the query's class draws it in the colour that
``zssbir.viz.PALETTE`` fixes and names it as the tables and claims do."""
import json
import sys
import types

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_hex, to_rgb  # noqa: E402
from PIL import Image  # noqa: E402

from zssbir import viz  # noqa: E402
from zssbir.study import alignment, conventions, convergence, explorer, explorer_tiles, walkthrough_2d  # noqa: E402
from zssbir.study.findings import CLAIMS  # noqa: E402
from zssbir.study.tables import procedure_text  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def hexed(colour) -> str:
    return to_hex(to_rgb(np.asarray(colour).ravel()[:3] if not isinstance(colour, str) else colour))


def palette(kind, key) -> str:
    return hexed(viz.palette_colour(kind, key))


# ------------------------------------------------------------------------------------------ what each figure draws
def seed_spread_colours() -> tuple[dict, list[str]]:
    """plot_seed_spread of one row per procedure: {procedure: colour of its dots}, legend texts."""
    rows = [("ClusterRetri L_DA 0.1, exact", "exact"), ("ClusterRetri L_DA 0.1, cluster M=1 K=4 adc", "cluster"),
            ("ClusterRetri L_DA 0.1, " + procedure_text("transductive", None, None, None), "transductive"),
            ("chance (random ranking)", "random")]
    frame = pd.DataFrame([{"row": r, "retrieval": kind, "metric": "map@all", "value": 0.1 * i + 0.01 * s}
                          for i, (r, kind) in enumerate(rows) for s in range(3)])
    ax = viz.plot_seed_spread(frame, "map@all", label="row").axes[0]
    dots = [c for c in ax.collections if len(c.get_offsets()) == 3]  # the seeds' dots, one collection per row
    colours = {kind: hexed(dots[i].get_facecolor()[0]) for i, (_, kind) in enumerate(rows)}
    return colours, [t.get_text() for t in ax.get_legend().get_texts()]


def convention_colours() -> tuple[dict, list[str]]:
    """plot_deltas of exact and cluster scores: {procedure: colour}, legend texts."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 8))
    gl, ql = np.repeat(np.arange(3), 8), np.repeat(np.arange(3), 4)
    g, q = centres[gl] + rng.standard_normal((24, 8)), centres[ql] + rng.standard_normal((12, 8))
    scores = [conventions.exact_scores(q, g, ql, gl), conventions.cluster_scores(q, g, ql, gl)]
    frame = conventions.convention_study(scores, tie_seeds=2)
    ax = conventions.plot_deltas(frame, ("map@all",)).axes[0]
    colours = {"exact" if c.get_label().startswith("exact retrieval") else "cluster": hexed(c.get_facecolor()[0])
               for c in ax.collections}
    return colours, [t.get_text() for t in ax.get_legend().get_texts()]


def tie_colours() -> tuple[dict, list[str]]:
    """07's plot_ties: {procedure: colour} of exact retrieval's line and cluster-then-retrieve's dots and lines."""
    points, labels = walkthrough_2d.toy_gallery(classes=3, per_class=8)
    ax = walkthrough_2d.plot_ties(walkthrough_2d.tie_study(points, labels, (0.0, 1.5), 0, K=3, seeds=3)).axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    artists = [*ax.lines, *ax.collections]
    colours = {}
    for a in artists:
        kind = "exact" if a.get_label().startswith("exact retrieval") else "cluster"
        colour = hexed(a.get_color() if a in ax.lines else a.get_facecolor()[0])
        assert colours.setdefault(kind, colour) == colour, f"{a.get_label()} in another colour than its procedure"
    return colours, legend


def fake_explorer():
    names = ["cat", "dog"]
    ex = types.SimpleNamespace(class_names=names, gallery_size=4, photo_labels=np.array([0, 1, 0, 1]),
                               photo=lambda j: Image.new("RGB", (8, 8), "white"))
    def ranking(name, top):
        top = np.asarray(top)
        return explorer.Ranking(name, top, np.zeros(len(top)), ex.photo_labels[top] == 0, 0.5, 1, 2)
    query = explorer.Query(np.zeros(4), 0, Image.new("RGB", (8, 8), "white"), "sketch cat #0")
    shown = explorer.Comparison(query, ranking("exact", [0, 1, 2]), ranking("cluster M=2 K=3 rerank", [1, 0, 3]),
                                explorer.Cell((0, 1), np.array([0, 1, 2]), 2 / 3, {"cat": 2, "dog": 1}, True))
    return ex, shown


def comparison_colours() -> tuple[dict, dict]:
    """06's comparison figure: {procedure: colour of its row label}, {relevant?: colour of the photo frames}."""
    ex, shown = fake_explorer()
    fig = explorer.comparison_figure(ex, shown)
    labels = {t.get_text().split("\n")[0]: hexed(t.get_color()) for ax in fig.axes for t in ax.texts}
    colours = {"exact": labels.pop("exact retrieval"), "cluster": labels.pop("cluster-then-retrieve")}
    axes = np.array(fig.axes).reshape(4, -1)
    frames = {}
    for row, r in ((1, shown.exact), (2, shown.cluster)):
        for c, ok in enumerate(r.relevant):
            colour = hexed(axes[row, c + 1].spines["top"].get_edgecolor())
            assert frames.setdefault(bool(ok), colour) == colour
    return colours, frames


# ------------------------------------------------------------------------------------------------ procedures
def test_every_figure_draws_each_procedure_in_its_palette_colour():
    figures = {"seed spread (04, 05)": seed_spread_colours()[0], "convention deltas (05)": convention_colours()[0],
               "tie policies (07)": tie_colours()[0], "explorer comparison (06)": comparison_colours()[0]}
    for procedure in ("exact", "cluster"):
        seen = {name: colours[procedure] for name, colours in figures.items()}
        assert set(seen.values()) == {palette("procedure", procedure)}, (procedure, seen)
    spread = figures["seed spread (04, 05)"]
    assert spread["transductive"] == palette("procedure", "transductive")
    assert spread["random"] == palette("procedure", "random")
    assert len(set(spread.values())) == 4, "each procedure its own colour"


def test_procedures_are_named_as_the_claims_and_tables_name_them():
    claim_sides = {s for c in CLAIMS for s in (c.with_text, c.without_text)}
    assert {"exact retrieval", "cluster-then-retrieve"} <= claim_sides
    assert viz.display_name("procedure", "exact") == "exact retrieval"
    assert viz.display_name("procedure", "cluster") == "cluster-then-retrieve"
    assert viz.display_name("procedure", "transductive") == procedure_text("transductive", None, None, None)
    assert viz.procedure_label("cluster M=2 K=16 rerank") == "cluster-then-retrieve, M=2 K=16 rerank"
    assert viz.procedure_label(procedure_text("transductive", None, None, None)) == procedure_text(
        "transductive", None, None, None)
    assert viz.procedure_label("exact") == "exact retrieval" and viz.procedure_label("ITQ 64-bit") == "ITQ 64-bit"
    _, legend = seed_spread_colours()
    assert legend == [viz.display_name("procedure", k) for k in ("exact", "cluster", "transductive", "random")]
    _, legend = convention_colours()
    assert legend == ["exact retrieval, cosine", "cluster-then-retrieve, M=1 K=3 adc"]
    _, legend = tie_colours()
    assert legend[0].startswith("cluster-then-retrieve, adc, ties random") and legend[1].startswith("exact retrieval: ")
    assert all(t.startswith(("exact retrieval", "cluster-then-retrieve")) for t in legend)
    ex, shown = fake_explorer()  # 06's sentence under its comparison figure
    assert "exact retrieval: AP 0.500" in shown.sentence(ex.class_names)
    assert "cluster-then-retrieve, M=2 K=3 rerank: AP 0.500" in shown.sentence(ex.class_names)


def test_palette_colours_are_colour_blind_safe_and_distinct_where_they_share_a_page():
    safe = {hexed(c) for c in viz.OKABE_ITO.values()}
    for kind, keys in viz.PALETTE.items():
        colours = [hexed(c) for _, c in keys.values()]
        assert set(colours) <= safe, kind
        assert len(set(colours)) == len(colours), f"two {kind} keys share a colour"
    for together in (("procedure", "start"), ("lda", "domain")):  # 05; 02
        colours = [hexed(c) for kind in together for _, c in viz.PALETTE[kind].values()]
        assert len(set(colours)) == len(colours), together


# ------------------------------------------------------------------------------------------------ relevance
def test_relevance_frames_share_the_palette_colours():
    _, frames = comparison_colours()
    expected = {ok: palette("relevance", ok) for ok in (True, False)}
    assert frames == expected
    fig = viz.retrieval_grid([np.ones((4, 4, 3))], lambda j: np.ones((4, 4, 3)), np.array([[0, 1]]),
                             np.array([[True, False]]), topk=2)
    assert [hexed(ax.spines["top"].get_edgecolor()) for ax in fig.axes[1:]] == [expected[True], expected[False]]
    ex, shown = fake_explorer()
    image = explorer_tiles.ranking_image(ex, shown.exact, ncols=3, tile=8, border=2)
    step = 8 + 2 * 2 + 4  # tile + both borders + gap
    pixels = [to_hex(np.array(image.getpixel((c * step, 0))) / 255) for c in range(3)]
    assert pixels == [expected[bool(ok)] for ok in shown.exact.relevant]


# ------------------------------------------------------------------------------------------------ starts
def _curves_frame(tmp_path):
    runs = {"p0": ("clusterretri", "pretrained", 1.0), "n0": ("clusterretri", "pretrained", 0.0),
            "s0": ("clusterretri", "scratch", 0.0), "d0": ("dmwa", "pretrained", 0.0)}
    rows = []
    for name, (method, start, kd) in runs.items():
        (tmp_path / name).mkdir()
        history = [{"epoch": e, "val_map@all": 0.1 * e} for e in range(3)]
        (tmp_path / name / "history.json").write_text(json.dumps(history))
        rows.append({"name": f"{name}__exact", "method": method, "start": start, "lambda_kd": kd, "epochs": 3,
                     "seed": 0, "dataset": "d", "retrieval": "exact", "label": "", "mismatched_pairs": 0.0,
                     "metric": "map@all", "value": 0.2})
    return pd.DataFrame(rows)


def test_starts_are_drawn_and_named_by_the_palette(tmp_path):
    curves = convergence.validation_curves(_curves_frame(tmp_path), "d", runs_root=tmp_path)
    starts = curves.drop_duplicates("run").set_index("run")["start"].to_dict()
    # as the tables: without distillation only where the method's pretrained runs differ in it (DMWA's do not)
    assert starts == {"p0": "pretrained", "n0": "pretrained_nokd", "s0": "scratch", "d0": "pretrained"}
    fig = convergence.plot_curves(curves, {"clusterretri": 3, "dmwa": 3})
    assert [ax.get_title() for ax in fig.axes] == ["ClusterRetri", "DMWA"]
    lines = {line.get_label(): hexed(line.get_color()) for ax in fig.axes for line in ax.lines
             if "epochs (" in line.get_label()}
    for key in ("pretrained", "pretrained_nokd", "scratch"):
        name = viz.display_name("start", key)
        assert lines[f"{name}, 3 epochs (1 seeds)"] == palette("start", key)
    assert viz.display_name("start", "scratch") == "from scratch"
    assert {"pretrained", "from scratch"} <= {s for c in CLAIMS for s in (c.with_text, c.without_text)}


# ------------------------------------------------------------------------------------------------ L_DA and domains
@pytest.fixture
def two_runs():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 6)
    def feats():
        return {"sketch": (rng.standard_normal((18, 8)).astype(np.float32), labels),
                "photo": (rng.standard_normal((18, 8)).astype(np.float32), labels)}
    return {"L_DA weight 0": feats(), "L_DA weight 0.1": feats()}, {"L_DA weight 0": 0.0, "L_DA weight 0.1": 0.1}


def test_lda_and_domains_in_the_same_colours_and_names_in_every_02_figure(two_runs, monkeypatch):
    runs, weights = two_runs
    titles = [viz.lda_label(w) for w in weights.values()]
    assert titles == ["without L_DA (weight 0)", "with L_DA (weight 0.1)"]
    fig, _ = alignment.channel_profiles(runs, lambda_da=weights)
    assert [ax.get_title() for ax in fig.axes] == titles
    lines = {line.get_label(): hexed(line.get_color()) for line in fig.axes[0].lines}
    for domain in ("sketch", "photo"):
        assert lines[viz.display_name("domain", domain)] == palette("domain", domain)
    _, fig = alignment.domain_gaps(runs, ["a", "b", "c"], lambda_da=weights)
    handles, texts = fig.axes[0].get_legend_handles_labels()
    assert texts == titles
    for patch_group, w in zip(handles, weights.values()):
        assert {hexed(p.get_facecolor()) for p in patch_group.patches} == {palette("lda", viz.lda_key(w))}
    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=lambda **kw: types.SimpleNamespace(
        fit_transform=lambda x: x[:, :2])))
    fig = alignment.umap_panels(runs, ["a", "b", "c"], per_class=3, lambda_da=weights)
    assert [ax.get_title() for ax in fig.axes] == titles
    legend = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    assert legend[-2:] == [viz.display_name("domain", d) for d in ("sketch", "photo")]
    assert {"with L_DA"} <= {s for c in CLAIMS for s in (c.with_text, c.without_text)}


def test_history_legends_name_the_loss_terms():
    history = [{"epoch": e, "loss_ce": 1.0, "loss_da": 0.5, "loss_kd": 0.2, "loss_total": 1.7, "val_map@all": 0.1}
               for e in range(2)]
    fig = viz.plot_history(history)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["cross-entropy", "L_DA",
                                                                              "L_KD (distillation)", "total"]


def test_the_toy_figures_of_07_keep_blue_and_orange_for_the_procedures():
    """07's PQ and weight-list figures share a page with the tie plot, where blue and orange are exact retrieval and
    cluster-then-retrieve: M = 1 / M = 2 and easy / hard pairs draw their own palette colours and names."""
    points, labels = walkthrough_2d.toy_gallery(classes=3, per_class=8)
    cells = walkthrough_2d.pq_cells(points, labels, points[0], K=3, grid=20)
    ax = walkthrough_2d.plot_pq(cells).axes[2]
    scatter = {t.get_text(): hexed(c.get_facecolor()[0]) for t, c in zip(ax.get_legend().get_texts(), ax.collections)}
    assert scatter == {"k-means (M = 1)": palette("subspaces", 1), "PQ (M = 2)": palette("subspaces", 2)}
    pairs = walkthrough_2d.toy_pairs(easy=2, hard=2)
    ax = walkthrough_2d.plot_weights(pairs, walkthrough_2d.weight_study(pairs)).axes[0]
    arrows = {hexed(a.arrow_patch.get_edgecolor()) for a in ax.texts if getattr(a, "arrow_patch", None)}
    assert arrows == {palette("pair", "easy"), palette("pair", "hard")}
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["easy pair", "hard pair"]
    procedures = {palette("procedure", "exact"), palette("procedure", "cluster")}
    assert not procedures & (arrows | set(scatter.values()))
