"""The explorer of 06_explore without a browser: queries encoded like the data set's sketches, rankings that agree with
the study's metrics, cached indexes, refusals; its widgets driven from Python; the 2-D walkthrough of 07; the report
index's findings. Runs on an untrained model of the tiny benchmark (the logic does not need a trained one)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zssbir.data.datasets import load_split
from zssbir.data.tools import ensure_dataset
from zssbir.eval.cluster_retrieval import ClusterIndex
from zssbir.eval.exact_search import evaluate_features, search
from zssbir.eval.relevant_ranks import rank_positions, ranked_order
from zssbir.models.dmwa import cross_attention_score
from zssbir.models.factory import build_model
from zssbir.study import runs
from zssbir.study.explorer import EMPTY_DRAWING_HINT, Explorer, render_strokes
from zssbir.study.explorer_pairs import PairProbe
from zssbir.study.pipeline import findings_html, polish_html

TINY = {"dataset": "synthetic_tiny", "epochs": 1, "max_steps_per_epoch": 2, "batch_size": 12, "image_size": 48}


def _untrained(settings: str, overrides: dict) -> runs.TrainedRun:
    config = runs.run_config(settings, overrides, device="cpu")
    ensure_dataset(config.dataset)
    names = load_split(config.dataset, "train", "photo", check_files=False).class_names
    torch.manual_seed(0)
    return runs.TrainedRun("untrained", runs.default_run_dir(config), config, build_model(config, names).eval(), [], 0)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("explorer")
    with pytest.MonkeyPatch.context() as mp:
        for env, sub in [("ZSSBIR_DATA", "data"), ("ZSSBIR_REPORTS", "reports"), ("ZSSBIR_CACHE", "cache"),
                         ("ZSSBIR_RUNS", "runs")]:
            (root / sub).mkdir()
            mp.setenv(env, str(root / sub))
        yield root


@pytest.fixture(scope="module")
def explorer(dirs):
    return Explorer(_untrained("study/clusterretri.yaml", {**TINY, "lambda_da": 0.1}), device="cpu")


def test_drawing_becomes_an_image_like_the_data_set_sketches(explorer):
    sample = explorer.sketches.load_image(0)
    drawn = render_strokes([[(10, 10), (240, 240)], [(5, 250)]], explorer.sketch_size, (256, 256))
    assert drawn.mode == sample.mode == "RGB" and drawn.size == sample.size
    grey = np.asarray(drawn.convert("L"))
    assert grey[0, -1] == 255 and grey[-1, 0] < 200, "white paper, a dot where the single click was"
    assert grey.diagonal().min() < 100 and np.median(grey) == 255, "a dark stroke on the diagonal, white elsewhere"
    # the same path as the data set's sketches: transform + embed gives the cached feature of a sketch file
    for i in (0, 7):
        assert np.allclose(explorer.encode(explorer.sketches.load_image(i)), explorer.sketch_feats[i], atol=1e-5)
    query = explorer.drawing_query([[(10, 10), (240, 240)]], "boat", (256, 256))
    assert query.feature.shape == (explorer.dim,) and query.label == explorer.class_names.index("boat")


def test_bad_input_is_refused_with_a_hint(explorer, dirs):
    for empty in ([], [[]], None):
        with pytest.raises(ValueError, match="draw at least one stroke"):
            explorer.drawing_query(empty, 0, (256, 256))
    assert "draw at least one stroke" in EMPTY_DRAWING_HINT
    query = explorer.sketch_query(0, 0)
    n = explorer.gallery_size
    with pytest.raises(ValueError, match=f"the largest valid K is {n}$"):
        explorer.compare(query, M=2, K=n + 1)
    with pytest.raises(ValueError, match="valid M: 1, 2, 4"):
        explorer.compare(query, M=7, K=2)
    with pytest.raises(ValueError, match="index 0..11"):
        explorer.sketch_query(0, 99)
    with pytest.raises(ValueError, match="the unseen classes: boat, donut, radio"):
        explorer.sketch_query("cat", 0)
    missing = runs.run_config("study/clusterretri.yaml", {**TINY, "lambda_da": 0.1, "seed": 5})
    with pytest.raises(runs.RunNotFoundError) as err:
        Explorer.open("study/clusterretri.yaml", {**TINY, "lambda_da": 0.1, "seed": 5}, device="cpu")
    message = str(err.value)
    assert runs.run_name(missing) in message and "01_train" in message and "make reports" in message
    assert "`zssbir train --config configs/study/clusterretri.yaml --set dataset=synthetic_tiny epochs=1" in message
    # an incomplete run folder (a checkpoint but no selected model) gets the same message
    folder = runs.default_run_dir(missing)
    folder.mkdir(parents=True)
    torch.save({"epoch": 0, "history": [], "best": {"epoch": 0}, "code": runs.training_code()}, folder / "checkpoint.pt")
    with pytest.raises(runs.RunNotFoundError, match=f"cannot explore run {runs.run_name(missing)}.*no best.pt"):
        Explorer.open("study/clusterretri.yaml", {**TINY, "lambda_da": 0.1, "seed": 5}, device="cpu")
    with pytest.raises(runs.RunNotFoundError, match="04_dmwa"):
        PairProbe.open("study/dmwa.yaml", {**TINY, "seed": 5}, device="cpu")


@pytest.mark.parametrize("variant", ["adc", "fuse", "rerank"])
def test_rankings_agree_with_the_study_metrics(explorer, variant):
    q_feats, q_labels = explorer.sketch_feats, explorer.sketch_labels
    g, gl = explorer.photo_feats, explorer.photo_labels
    exact_ap = evaluate_features(q_feats, g, q_labels, gl, preset="clusterretri", metrics=["map@all"])["map@all"]
    index = ClusterIndex.fit(g, 2, 4)
    cluster_ap = index.evaluate(q_feats, q_labels, gl, variant=variant, preset="clusterretri",
                                metrics=["map@all"])["map@all"]
    sims, top = search(q_feats, g, k=6, backend="torch")
    for i in (0, 13, 30):
        cls = int(q_labels[i])
        query = explorer.sketch_query(cls, int(np.flatnonzero(np.flatnonzero(q_labels == cls) == i)[0]))
        shown = explorer.compare(query, M=2, K=4, variant=variant, k=6)
        assert np.array_equal(shown.exact.top, top[i])
        assert np.allclose(shown.exact.scores, sims[i], atol=1e-5) and shown.exact.score_kind == "cosine similarity"
        assert shown.cluster.score_kind == "distance" and np.all(np.diff(shown.cluster.scores) >= 0)
        assert np.array_equal(shown.exact.relevant, gl[top[i]] == cls)
        assert shown.exact.ap == pytest.approx(exact_ap.per_query[i])
        assert shown.cluster.ap == pytest.approx(cluster_ap.per_query[i])
        for r in (shown.exact, shown.cluster):
            hits = np.flatnonzero(r.relevant)
            if len(hits):
                assert r.first_correct == hits[0] + 1
        cell = shown.cell
        assert len(cell.members) and (index.codes[cell.members] == cell.code).all()
        assert cell.share == pytest.approx(np.mean(gl[cell.members] == cls))
    assert explorer.index(2, 4) is explorer.index(2, 4), "one index per (M, K), fitted once"



def test_static_views_have_readable_captions_and_the_cluster_examples_their_table(explorer):
    """06's comparison figure: every caption and label at 8 pt or more; 03's cluster examples: the figure's rows are
    the table's ``shown`` queries, each with its nearest cluster's share of its class."""
    import matplotlib.pyplot as plt

    from zssbir.study.examples import cluster_examples
    from zssbir.study.explorer import comparison_figure

    fig = comparison_figure(explorer, explorer.compare(explorer.sketch_query(0, 0), M=2, K=3, k=4))
    texts = [t for ax in fig.axes for t in [ax.title, *ax.texts] if t.get_text()]
    assert texts and min(t.get_fontsize() for t in texts) >= 8
    feats = {"sketch": (explorer.sketch_feats, explorer.sketch_labels), "photo": (explorer.photo_feats, explorer.photo_labels)}
    fig, table = cluster_examples(feats, explorer.sketches, explorer.photos, K=3, n=2, seed=0)
    assert len(table) == len(explorer.sketch_feats) and table["shown"].sum() == 2
    assert table["share of its class"].between(0, 1).all() and table["cluster size"].min() >= 1
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert [f"{v:.0%} same class" in label for v, label in zip(table.loc[table["shown"], "share of its class"], labels)]
    plt.close("all")

def test_ranked_order_is_the_order_the_metrics_rank_by():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, (5, 40)).astype(np.float32)  # many ties
    secondary = rng.normal(size=(5, 40)).astype(np.float32)
    ql, gl = rng.integers(0, 3, 5), rng.integers(0, 3, 40)
    for ties, kw in (("stable", {}), ("random", {"seed": 3}), ("secondary", {"secondary": secondary})):
        for hib in (True, False):
            order = ranked_order(scores, higher_is_better=hib, ties=ties, **kw)
            ranks = rank_positions(scores, ql, gl, higher_is_better=hib, ties=ties, **kw)
            for q in range(5):
                assert sorted(order[q]) == list(range(40))
                assert np.array_equal(np.flatnonzero(gl[order[q]] == ql[q]) + 1, ranks[q]), (ties, hib)


def test_widgets_update_from_python(explorer):
    from zssbir.study.explorer_widgets import ExplorerApp, explorer_app

    app = ExplorerApp(explorer, M=2, K=3, top_k=4)
    shown = lambda: (app.exact_text.value, app.cluster_text.value, app.cell_text.value, bytes(app.query_image.value),  # noqa: E731
                     bytes(app.exact_image.value), bytes(app.cluster_image.value), bytes(app.cell_image.value))
    first = shown()
    assert "updated in" in app.status.value and "K=3" in first[1]
    assert f"cosine similarity {app.shown.exact.scores[0]:.4f}" in first[0]
    assert f"distance {app.shown.cluster.scores[0]:.4f}" in first[1]
    app.K.value = 5
    assert "K=5" in app.cluster_text.value
    app.K.value = explorer.gallery_size + 1
    assert "refused" in app.status.value and f"largest valid K is {explorer.gallery_size}" in app.status.value
    app.K.value = 3
    app.cls.value = 2
    assert app.exact_text.value != first[0] and bytes(app.query_image.value) != first[3]
    before = shown()
    app._down(20, 20), app._move(120, 200), app._move(230, 40), app._up(230, 40)
    assert app.source.value == "my drawing" and "drawing meant as" in app.status.value
    assert shown() != before and bytes(app.query_image.value) != before[3]
    app._clear()
    assert "draw at least one stroke" in app.status.value
    assert "make explore" in explorer_app(explorer, interactive=False).data


def test_dmwa_pair_view_is_the_models_local_block(dirs):
    run = _untrained("study/dmwa.yaml", TINY)
    probe = PairProbe(run, n=8, device="cpu")
    assert probe.frame["w"].mean() == pytest.approx(1.0, abs=1e-5)
    row = probe.extremes(1)[-1]
    pair = probe.pair(row)
    assert pair["rank"] == 1 and pair["w"] == pytest.approx(probe.frame["w"].max())
    att = pair["sketch_to_photo"]
    assert np.allclose(att.sum(1), 1, atol=1e-5) and pair["grid"] ** 2 == att.shape[1]
    s, p = probe.quads.sketches[int(probe.frame.iloc[row]["sketch"])], probe.quads.photos[int(probe.frame.iloc[row]["photo"])]
    with torch.no_grad():
        tok = run.model.backbone(torch.stack([s["image"], p["image"]]), torch.tensor([0, 1])).tokens
    a_loc = cross_attention_score(tok[:1], tok[1:], run.model.params.attention_temperature)
    assert float(a_loc) == pytest.approx(pair["a_loc"], abs=1e-5)
    ink = probe.ink()
    assert len(ink) == len(probe) and ink.between(0, 1).all() and ink.max() > 0, "every sketch has some ink"
    from zssbir.study.explorer_pairs import stripe_share

    assert 1 / att.shape[1] <= stripe_share(pair) <= 1
    with pytest.raises(ValueError, match="needs a DMWA run"):
        PairProbe(_untrained("study/clusterretri.yaml", TINY), n=4)


def test_walkthrough_uses_the_real_mechanisms():
    from zssbir.study import walkthrough_2d as walk
    from zssbir.training.losses import quadruplet_hinges

    lda = walk.lda_training(steps=40, snapshots=(0,))
    assert lda["loss"][-5:].mean() < lda["loss"][:5].mean() and lda["loss"].min() > 0.5 * lda["floor"]
    points, labels = walk.toy_gallery(per_class=10)
    cells = walk.pq_cells(points, labels, [0.3, 0.9], K=3, grid=20)
    for M in (1, 2):
        recon = cells[M]["index"].reconstruct()
        assert np.allclose(cells[M]["adc"], ((recon - np.array([0.3, 0.9])) ** 2).sum(1), atol=1e-4)
    ties = walk.tie_study(points, labels, [0.3, 0.9], 0, K=2, seeds=3)
    assert set(ties["policy"]) == {"exact", "adc, ties stable (list order)", "adc, ties random",
                                   "rerank (ties by exact distance)"}
    assert ties["AP"].between(0, 1).all()
    pairs = walk.toy_pairs()
    weights = walk.weight_study(pairs, taus=(1.0, 0.1))
    hinge = quadruplet_hinges(pairs["sketch"], pairs["photo"], pairs["neg_photo"], pairs["neg_sketch"]).numpy()
    assert np.allclose(weights["hinge"], hinge)
    for tau in (1.0, 0.1):
        assert weights[f"w (tau {tau:g})"].mean() == pytest.approx(1.0)
        assert weights.attrs["losses"][f"tau {tau:g}"] == pytest.approx(weights[f"w*hinge (tau {tau:g})"].mean(), abs=1e-6)
    easy = weights[weights["kind"] == "easy"]["w (tau 0.1)"].mean()
    assert easy > weights[weights["kind"] == "hard"]["w (tau 0.1)"].mean(), "well-aligned pairs weigh more"


def test_report_index_opens_with_the_findings(tmp_path):
    """index.html's findings (study.report_index): a three-sentence verdict from the claims' verdicts, caveats read from
    the settings files, the reading path (links only to pages of this report), the claims, the metric primer with
    the Prec@K ceiling from the counts, and the headline table with the seeds said once; all in that order."""
    from zssbir.study import findings, report_index
    from zssbir.study.runs import run_config

    supported = (f'ClusterRetri, "L_DA improves retrieval": map@all 0.300 with L_DA against 0.290 without (baseline) '
                 f'over 3 paired seeds, a difference of +0.010 (95 % CI +0.002 to +0.018; paired t-test p = 0.01, '
                 f'Holm-corrected p = 0.02 over 2 claims): {findings.SUPPORTED}; the interval supports a gain of at '
                 f'least +0.002 and rules out one above +0.018.')
    fragile = (f'DMWA, "the quadruplet improves on the scale-matched triplet": map@all 0.25 quadruplet against 0.24 '
               f'balanced over 3 paired seeds, a difference of +0.010: {findings.UNRESOLVED}; the interval rules out a '
               f'gain above +0.05. Fragile, not a finding: leaving out seed 1 makes it {findings.SUPPORTED}.')
    headline = {"dataset": "synthetic", "metrics": ["map@all", "prec@200"], "commit": "abcdef123456",
                "generated": "2026-11-22T01", "figures": ["figures/study_synthetic.png"], "claims": [supported, fragile],
                "conventions": {"map@all": "ap=voc, average=class", "prec@200": "average=class, "
                                "prec_k_denominator=min_k_gallery"},
                "rows": [{"row": "DMWA, exact", "metrics": {"map@all": {"mean": 0.25, "std": 0.01, "seeds": 3},
                                                            "prec@200": {"mean": 0.12, "std": 0.01, "seeds": 3}}},
                         {"row": "chance (random ranking)", "metrics": {"map@all": {"mean": 0.1289, "std": 0.001,
                                                                                    "seeds": 5}}}]}
    text = findings_html(headline, available={"01_train", "05_map_tables"})
    verdict = text.split("<p class='verdict'>")[1].split("</p>")[0]
    assert verdict.count(". ") == 2 and verdict.startswith("Holds on this benchmark (1 of 2 claims): ClusterRetri: L_DA")
    assert "No claim is contradicted" in verdict and "scale-matched triplet (control)" in verdict.split(". ")[2]
    config = run_config("study/clusterretri.yaml")
    assert f"{config.image_size} px images" in text and f"{config.epochs} ClusterRetri" in text
    assert "rebuilt from its abstract" in text and "embedded miniature benchmark" in text
    assert "<a href='01_train.html'>" in text and "<code>00_data_tour</code> (not in this report)" in text
    assert "supports a gain of at least +0.002" in text and "Chance level" in text and "map@all 0.1289" in text
    assert "0.2500 ± 0.0100</td>" in text and "0.1289 ± 0.0010 (5 seeds)" in text and "over 3 seeds" in text
    assert "figures/study_synthetic.png" in text
    order = ["class='verdict'", "class='caveats'", "class='reading-path'", "class='claims'", "class='primer'",
             "class='headline'"]
    assert [text.index(k) for k in order] == sorted(text.index(k) for k in order)
    counts = {"photos": {c: 30 for c in range(10)}, "sketches": {c: 50 for c in range(10)}, "N": 300}
    assert report_index.precision_ceiling(counts, 200) == pytest.approx(0.15)
    assert report_index.precision_ceiling(counts, 100, average="query") == pytest.approx(0.3)
    assert report_index.precision_ceiling(counts, 200, "min_k_relevant") == 1.0
    assert "prec@200 &le; 30/200 = 0.150" in report_index.primer_html(headline, counts)
    assert "No findings yet" in findings_html(None) and "make reports" in findings_html(None)
    page = tmp_path / "p.html"
    page.write_text("<html><head><title>x</title></head><body></body></html>")
    polish_html(page), polish_html(page)
    assert page.read_text().count("zssbir-report-css") == 1 and "white-space:nowrap" in page.read_text()
