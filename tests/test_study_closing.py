"""The closing prose of 02, 03 and 06 (``study.closing``, ``alignment.sentences``, ``cluster_analysis.cluster_sentences``,
``explorer_closing``) and their figures: sentences built from hand-made tables say what those tables say (counts,
directions, the oracle and k-means-seed caveats), never '-0.000' or 'nan'; the heat maps share one colour scale; the
UMAP legend and the metric names are readable."""
from __future__ import annotations

import json
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from zssbir.study import alignment, closing, cluster_analysis, explorer_closing  # noqa: E402
from zssbir.study.explorer_pairs import stripe_share  # noqa: E402
from zssbir.viz import embedding_scatter, metric_name  # noqa: E402

A, B = "L_DA weight 0", "L_DA weight 0.1"


# ------------------------------------------------------------------------------------------------ closing helpers
def test_markdown_is_a_bulleted_list_and_never_empty():
    shown = closing.markdown(["One.", " ", "Two."])
    assert type(shown).__name__ == "Markdown" and shown.data == "- One.\n- Two."
    assert closing.markdown([], empty="nothing yet").data == "nothing yet"


def test_wording_helpers():
    assert closing.signed(-1e-9) == "+0.000" and closing.signed(-0.0126) == "-0.013"
    assert closing.percent_change(0.088, 0.096) == "-8 %" and closing.percent_change(1.0, 0.0) == "n/a"
    assert closing.percent_change(1.0, 1.0) == "+0 %"
    assert closing.listed([]) == "" and closing.listed(["a"]) == "a" and closing.listed(["a", "b", "c"]) == "a, b and c"
    assert closing.listed(list("abcdefgh"), limit=3) == "a, b, c and 5 more"
    assert closing.count_of(4, 10, "classes") == "4 of 10 classes"


# ------------------------------------------------------------------------------------------------ 02
def _gap(per_class: dict[str, tuple[float, float, float, float]], overall=(0.10, 0.60, 0.08, 0.50)) -> pd.DataFrame:
    """Columns (run, measure); values per class: (mmd A, frechet A, mmd B, frechet B)."""
    rows = {**per_class, "(all)": overall}
    cols = pd.MultiIndex.from_tuples([(A, "mmd"), (A, "frechet"), (B, "mmd"), (B, "frechet")])
    return pd.DataFrame(list(rows.values()), index=pd.Index(list(rows), name="class"), columns=cols)


LDA = pd.DataFrame({"photo": [0.87, 0.91], "sketch": [0.83, 0.81]}, index=pd.Index([A, B], name="run"))


def test_alignment_sentences_count_the_classes_whose_gap_widens():
    gap = _gap({"apple": (0.7, 1.2, 0.6, 1.0), "boat": (0.4, 0.6, 0.6, 0.9), "crab": (1.2, 0.7, 1.1, 0.8),
                "tree": (0.5, 1.0, 0.5 + 1e-6, 0.9)})
    text = alignment.sentences(LDA, gap, baseline=A, aligned=B)
    assert text[0].startswith("Sketch-photo mmd over the whole split")
    assert "0.100 without L_DA" in text[0] and "0.080 with it" in text[0] and "-20 %" in text[0]
    assert "the two domains are closer with L_DA" in text[0]
    assert text[1].startswith("Per class the picture is mixed: 2 of 4 classes get a larger squared MMD with L_DA "
                              "(boat and tree) and 2 of 4 a larger Fréchet distance (boat and crab); boat by both.")
    assert "photos 0.870 and 0.910 (+0.040)" in text[2] and "for photos it is higher in the run trained to lower it" in text[2]
    assert "nan" not in " ".join(text) and "-0.000" not in " ".join(text)


def test_alignment_sentences_directions_and_the_floor():
    wider = alignment.sentences(LDA, _gap({"a": (0.1, 0.1, 0.2, 0.2)}, overall=(0.1, 0.5, 0.2, 0.7)), baseline=A,
                                aligned=B)
    assert "further apart with L_DA" in wider[0]
    assert wider[1].startswith("Per class: 1 of 1 classes get a larger squared MMD with L_DA and 1 of 1 a larger Fréchet")
    mixed = alignment.sentences(LDA, _gap({}, overall=(0.1, 0.5, 0.05, 0.7)), baseline=A, aligned=B)
    assert "the two measures disagree" in mixed[0] and len(mixed) == 2  # no per-class rows, no sentence on them
    history = [{"loss_da": 0.98, "loss_total": 5.0}, {"loss_da": 0.78, "loss_total": 4.0},
               {"loss_da": 0.89, "loss_total": 3.5}]
    text = alignment.sentences(LDA, _gap({}), baseline=A, aligned=B, floor=0.5, dim=512, history=history,
                               weight=0.1)[-1]
    assert "from 0.980 in epoch 1 to 0.780 in epoch 2 and back up to 0.890 in epoch 3" in text
    assert "made 3% of the last epoch's total loss, so the other terms" in text
    # values 0.31..0.41 above the floor; run means 0.35 and 0.36: about as far from flat
    assert "0.31 to 0.41 above the floor F_D = 0.500 of D = 512 channels" in text and "about as far from flat" in text


def test_alignment_sentences_without_a_pair_list_each_run():
    text = alignment.sentences(LDA, _gap({}))
    assert text[0] == f"{A}: L_DA on the test features is 0.830 for sketches and 0.870 for photos."
    assert text[-1] == f"Sketch-photo frechet over the whole split: {A} 0.600, {B} 0.500; the smallest gap is {B}."


def _two_domains(separated: bool, n: int = 20, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], n // 2)
    sketch = rng.normal(size=(n, 8)) + (np.eye(8)[0] * 20 if separated else 0)
    photo = rng.normal(size=(n, 8)) - (np.eye(8)[0] * 20 if separated else 0)
    return {"sketch": (sketch, labels), "photo": (photo, labels)}


def test_domain_mixing_tells_islands_from_a_mixed_cloud():
    mixing = alignment.domain_mixing({"apart": _two_domains(True), "mixed": _two_domains(False)}, per_class=10, k=5)
    key, ref = "photos among a sketch's neighbours", "photos if mixed (sketch)"
    assert mixing.loc["apart", key] == 0.0 and mixing.loc["apart", "sketches among a photo's neighbours"] == 0.0
    assert mixing.loc["mixed", ref] == pytest.approx(20 / 39)
    assert 0.3 < mixing.loc["mixed", key] < 0.7
    text = alignment.sentences(LDA.rename(index={A: "apart", B: "mixed"}),
                               _gap({}).rename(columns={A: "apart", B: "mixed"}), mixing, baseline="apart",
                               aligned="mixed")
    assert any("of each sketch's 5 nearest neighbours, 0% are photos without L_DA" in s for s in text)


def test_umap_legend_is_readable():
    points = np.random.default_rng(0).normal(size=(20, 2))
    ax = embedding_scatter(points, ["cat"] * 10 + ["dog"] * 10, ["sketch", "photo"] * 10)
    legend = ax.get_legend()
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts == ["cat", "dog", "sketches", "photos"]
    assert min(t.get_fontsize() for t in legend.get_texts()) >= 9
    markers = {h.get_label(): (h.get_marker(), h.get_markersize()) for h in legend.legend_handles}
    assert markers["sketches"][0] == "x" and markers["photos"][0] == "o" and markers["sketches"][1] >= 7
    plt.close("all")


def test_metric_names():
    assert [metric_name(m) for m in ("map@all", "prec@100", "map@200", "purity")] == \
        ["mAP@all", "Prec@100", "mAP@200", "purity"]


# ------------------------------------------------------------------------------------------------ 03
def _grid() -> pd.DataFrame:
    rows = []
    for variant, ties in (("adc", "random"), ("adc", "stable"), ("rerank", "secondary")):
        for M in (1, 2):
            for K in (4, 8):
                value = 0.30 + 0.01 * M + 0.001 * K + (0.02 if variant == "rerank" else 0) + (0.1 if ties == "stable" else 0)
                rows.append({"M": M, "K": K, "variant": variant, "ties": ties, "metric": "map@all", "value": value})
    return pd.DataFrame(rows)


QUALITY = pd.DataFrame({"purity": [0.6, 0.9], "nmi": [0.7, 0.8], "ari": [0.5, 0.6]}, index=pd.Index([4, 8], name="K"))
SWEEP = pd.DataFrame({"map@all": [0.40, 0.38, 0.33]}, index=pd.Index([0.0, 0.5, 1.0], name="fuse_weight"))
TIES = pd.DataFrame({"scores": "cluster M=1 K=4 adc",
                     "tie rule": ["stable (gallery index)", "random (seed 0)", "random (seed 1)", "rerank by exact distance"],
                     "map@all": [0.45, 0.40, 0.41, 0.42]})
USED = {"M": 2, "K": 8, "variant": "rerank", "map@all": 0.3468, "per_kmeans_seed": [0.348, 0.345],
        "kmeans_seeds": [123, 124]}


def test_cluster_sentences_say_transductive_oracle_and_kmeans_seeds():
    nearest = pd.DataFrame({"class": [0, 1, 2, 0], "cluster": [0, 1, 1, 2], "cluster size": 5,
                            "share of its class": [0.0, 0.05, 0.8, 0.4], "shown": [True, True, True, False]})
    text = cluster_analysis.cluster_sentences(0.33, QUALITY, _grid(), SWEEP, TIES, 4, used=USED, nearest=nearest)
    assert text[0].startswith("Cluster-then-retrieve is transductive") and "purity 0.900 and NMI 0.800 at K = 8 (the K " \
        "01 uses) and purity 0.600 and NMI 0.700 at K = 4 (the number of classes)" in text[0]
    # 8 points not stable: adc random and rerank over M in (1, 2), K in (4, 8); the best is rerank M=2 K=8 = 0.348;
    # above 0.33: rerank everywhere (from 0.334), adc at none (at most 0.328)
    assert text[1].startswith("The best of the 8 grid points (section 2) is rerank M=2 K=8 at mAP@all 0.348, +0.018 "
                              "against exact retrieval, and 4 of 8 points beat exact retrieval.")
    assert "oracle choice" in text[1]
    assert text[2].startswith("01's setting, rerank M=2 K=8, gives 0.348 in the heat map (framed; rank 1 of 8 points). "
                              "01 reports 0.3468 for this run: the mean over 2 k-means seeds (123 to 124; 0.345 to 0.348)")
    assert "differ by 0.001: the k-means seed, not an error" in text[2]
    assert "peaks at λ_f = 0, cluster-then-retrieve alone" in text[3]
    assert text[4].startswith("With cluster M=1 K=4 adc (section 4), random tie orders spread mAP@all by 0.010 (max - "
                              "min over 2 orders); the stable order (gallery index) gives +0.045 against their mean and "
                              "ordering the ties by exact distance +0.015: the list order alone moves the number")
    assert text[5].startswith("In section 5, 2 of 3 example sketches are nearest to a cluster in which at most 10% of "
                              "the photos are of their class (0% and 5%); over all 4 unseen sketches, 75% are nearest")
    assert "although at this K the clusters are 60% pure" in text[5] and "still beats exact retrieval" in text[5]
    assert "nan" not in " ".join(text) and "-0.000" not in " ".join(text)


def test_cluster_sentences_when_01_agrees_or_is_off_the_grid():
    agree = cluster_analysis.cluster_sentences(0.33, QUALITY, _grid(), SWEEP, TIES, 4,
                                               used={**USED, "map@all": 0.3481})
    assert "here the two agree" in agree[2]
    off = cluster_analysis.cluster_sentences(0.33, QUALITY, _grid(), SWEEP, TIES, 4, used={**USED, "K": 16})
    assert off[2] == "01's setting (rerank M=2 K=16) is not on this grid."
    plain = cluster_analysis.cluster_sentences(0.5, QUALITY, _grid(), SWEEP.iloc[::-1].set_axis(SWEEP.index), TIES, 4)
    assert "0 of 8 points beat exact retrieval" in plain[1] and "exact retrieval alone" in plain[2]


def test_nearest_clusters_against_a_naive_loop():
    from zssbir.eval.cluster_retrieval import ClusterIndex

    rng = np.random.default_rng(0)
    centres = np.eye(6)[:3] * 5
    gl = np.repeat([0, 1, 2], 10)
    g = centres[gl] + rng.normal(scale=0.3, size=(30, 6))
    ql = np.array([0, 1, 2, 0])
    q = centres[[0, 1, 2, 1]] + rng.normal(scale=0.3, size=(4, 6))  # the last query sits in another class's cluster
    table = cluster_analysis.nearest_clusters(q, ql, g, gl, 3)
    index = ClusterIndex.fit(g, 1, 3)
    for i in range(len(q)):
        cell = index.codes[np.argmin(index.adc(q[i:i + 1])[0]), 0]
        members = np.flatnonzero(index.codes[:, 0] == cell)
        assert table.loc[i, "cluster"] == cell and table.loc[i, "cluster size"] == len(members)
        assert table.loc[i, "share of its class"] == pytest.approx(np.mean(gl[members] == ql[i]))
    assert list(table["share of its class"]) == [1.0, 1.0, 1.0, 0.0]


def test_scored_in_01_reads_the_runs_cluster_record(tmp_path):
    assert cluster_analysis.scored_in_01("run", tmp_path) is None
    record = {"params": {"retrieval": {"kind": "cluster", "M": 2, "K": 16, "variant": "rerank", "kmeans_seeds": 2}},
              "metrics": {"map@all": {"value": 0.43, "per_kmeans_seed": [0.42, 0.44], "kmeans_seeds": [123, 124]}}}
    (tmp_path / "run__cluster.json").write_text(json.dumps(record))
    assert cluster_analysis.scored_in_01("run", tmp_path) == {
        "M": 2, "K": 16, "variant": "rerank", "map@all": 0.43, "per_kmeans_seed": [0.42, 0.44], "kmeans_seeds": [123, 124]}


def test_heat_maps_share_one_colour_scale_and_one_colour_bar():
    fig = cluster_analysis.grid_heatmaps(_grid(), 0.2, used=USED)
    meshes = [ax.collections[0] for ax in fig.axes[:2]]
    for mesh in meshes:  # exact retrieval (0.2) is the lowest value, rerank M=2 K=8 (0.348) the highest
        assert (mesh.norm.vmin, mesh.norm.vmax) == (0.2, pytest.approx(0.348))
    assert len(fig.axes) == 3, "two heat maps and ONE colour bar"
    assert fig.axes[1].patches, "01's setting is framed"
    plt.close("all")


def test_figures_use_readable_names_and_integer_ticks():
    fig = cluster_analysis.quality_figure(QUALITY, 4, used_K=8)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[:3] == ["purity", "NMI", "ARI"] and any("01's setting" in t for t in labels)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["4", "8"]
    sweep = cluster_analysis.sweep_figure(SWEEP.assign(**{"prec@100": 0.2}), 2, 8)
    assert [t.get_text() for t in sweep.axes[0].get_legend().get_texts()] == ["mAP@all", "Prec@100"]
    plt.close("all")


def test_skipped_note():
    table = pd.DataFrame({"M": [1, 3, 3], "K": [4, 4, 4], "skipped": [False, True, True],
                          "reason": [None, "M = 3 does not divide D = 8", "M = 3 does not divide D = 8"]})
    assert cluster_analysis.skipped_note(table[~table["skipped"]]) is None
    assert cluster_analysis.skipped_note(table).data == ("Not scored (blank in the heat maps): M=3 K=4: M = 3 does not "
                                                         "divide D = 8.")


# ------------------------------------------------------------------------------------------------ 06
def _comparison(source, label, share, members, classes, first_cluster, first_exact, ap_exact=0.2, ap_cluster=0.3):
    return SimpleNamespace(query=SimpleNamespace(source=source, label=label),
                           cell=SimpleNamespace(share=share, members=np.arange(members), classes=classes),
                           exact=SimpleNamespace(ap=ap_exact, first_correct=first_exact),
                           cluster=SimpleNamespace(ap=ap_cluster, first_correct=first_cluster, name="cluster M=2"))


NAMES = ("apple", "crab", "spider")


def test_explorer_cell_sentence_counts_queries_in_cells_of_another_class():
    compared = [_comparison("sketch apple #0", 0, 0.0, 7, {"spider": 7}, 30, 39),
                _comparison("sketch crab #1", 1, 0.05, 20, {"spider": 19, "crab": 1}, 25, 18),
                _comparison("sketch spider #2", 2, 0.95, 20, {"spider": 19, "crab": 1}, 1, 1)]
    text = explorer_closing.cell_sentence(compared, NAMES)
    assert text.startswith("2 of 3 fixed queries fall into a PQ cell in which at most 10% of the photos are of their "
                           "class (sketch apple #0 into a cell of 7 photos, 0% its class and 100% spider, its first "
                           "correct photo at rank 30 against 39 by exact retrieval; sketch crab #1 into a cell of 20 "
                           "photos, 5% its class and 95% spider")
    assert explorer_closing.cell_sentence(compared[2:], NAMES) == (
        "0 of 1 fixed queries fall into a PQ cell in which at most 10% of the photos are of their class; their cells "
        "hold 95% of their class: each lands among photos of its own class, so the cell that opens its cluster list "
        "helps it.")
    mixed = [_comparison("sketch boat #0", 0, 0.22, 9, {"donut": 7, "boat": 2}, 7, 8)]
    assert "their cells hold 22% of their class: the cell that opens each cluster list is mixed" in \
        explorer_closing.cell_sentence(mixed, NAMES)
    assert explorer_closing.cell_sentence([], NAMES) is None


def test_explorer_sweep_sentence():
    sweep = pd.DataFrame({"cell share of the class": [0.16, 0.0, np.nan]}, index=pd.Index([2, 4, 8], name="K"))
    assert explorer_closing.sweep_sentence(sweep).startswith("At no K from 2 to 8 is the first query's cell mostly of "
                                                             "its class (at most 16%, at K = 2)")
    good = sweep.assign(**{"cell share of the class": [0.2, 0.6, 0.9]})
    assert explorer_closing.sweep_sentence(good).startswith("The first query's cell is mostly of its class at K = 4 and "
                                                            "8 (up to 90% at K = 8)")


def test_stripe_share_and_the_pair_sentences():
    stripe = np.full((4, 4), 0.02)
    stripe[:, 1] = 0.94
    diagonal = np.eye(4) * 0.9 + 0.025
    assert stripe_share({"sketch_to_photo": stripe}) == 1.0 and stripe_share({"sketch_to_photo": diagonal}) == 0.25
    pairs = [{"w": 1.3, "sketch_to_photo": diagonal}, {"w": 0.6, "sketch_to_photo": stripe}]
    frame = pd.DataFrame({"w": [0.6, 0.8, 1.0, 1.2, 1.4]})
    ink = pd.Series([0.06, 0.05, 0.04, 0.03, 0.02])
    text = explorer_closing.pair_sentences(frame, ink, pairs)
    assert text[0].startswith("Across the weight list, w and the sketch's ink (its share of dark pixels) have rank "
                              "correlation -1.00: the busier the sketch, the lower its weight; the 1 lowest-weighted "
                              "pairs' sketches carry 6.0% ink on average, the 1 highest-weighted 2.0%.")
    assert text[1].startswith("In the attention matrices shown, the share of sketch tokens that attend most to one and "
                              "the same photo token (a vertical stripe) is w 0.60: 100%; w 1.30: 25% (one token in 4, 25%")
    assert "the stripes mark the pairs the list weighs down" in text[1]


def test_explorer_conclusion_is_markdown_in_the_pages_order():
    compared = [_comparison("sketch apple #0", 0, 0.0, 7, {"spider": 7}, 30, 39)]
    sweep = pd.DataFrame({"AP cluster": [0.3, 0.2], "AP exact": 0.1, "cell size": [9, 2],
                          "cell share of the class": [0.2, 0.0]}, index=pd.Index([2, 4], name="K"))
    probe = SimpleNamespace(frame=pd.DataFrame({"w": [0.5, 1.0, 1.5], "a_loc": [0.1, 0.2, 0.3],
                                                "a_glob": [0.2, 0.1, 0.3], "paired": [True, False, True]}),
                            ink=lambda: pd.Series([0.05, 0.04, 0.03]))
    shown = explorer_closing.conclusion(compared, NAMES, sweep, probe, [{"w": 0.5, "sketch_to_photo": np.eye(3)}])
    lines = shown.data.split("\n")
    assert len(lines) == 7 and all(line.startswith("- ") for line in lines)
    assert lines[0].startswith("- Over the 1 fixed queries") and lines[1].startswith("- 1 of 1 fixed queries")
    assert lines[2].startswith("- For the first query") and lines[3].startswith("- At no K")
    assert lines[4].startswith("- In the DMWA weight list") and lines[5].startswith("- Across the weight list")
    assert lines[6].startswith("- In the attention matrices shown")
