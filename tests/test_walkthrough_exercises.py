"""The exercises of 07_methods_in_2d: their answers (``zssbir.study.walkthrough_2d_exercises``) against naive computations, and
the conclusions the page ends with."""
import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

from zssbir.eval.cluster_retrieval import ClusterIndex
from zssbir.study import walkthrough_2d as walk
from zssbir.study import walkthrough_2d_exercises as exercises

QUERY = [0.3, 0.9]


@pytest.fixture(scope="module")
def gallery():
    return walk.toy_gallery(classes=4, per_class=30, seed=0)


def test_adc_k_sweep_is_the_rank_correlation_of_the_reconstruction_distance(gallery):
    points, _ = gallery
    sweep = exercises.adc_k_sweep(points, QUERY, [2, 4, 8], seed=0)
    assert list(sweep.columns) == ["M", "K", "distinct ADC values", "rank correlation"]
    assert sweep[["M", "K"]].values.tolist() == [[1, 2], [1, 4], [1, 8], [2, 2], [2, 4], [2, 8]]
    exact = ((points - np.array(QUERY, dtype=np.float32)) ** 2).sum(1)
    for row in sweep.itertuples(index=False):
        index = ClusterIndex.fit(points, row.M, row.K, seed=0, normalize=False)
        naive = ((index.reconstruct() - np.array(QUERY)) ** 2).sum(1)  # distance to each photo's reconstruction
        assert row[3] == pytest.approx(spearmanr(naive, exact).statistic, abs=1e-9)
        assert row[2] == len(np.unique(np.round(naive, 5))) <= row.K ** row.M


def test_adc_k_answer_names_the_first_K_that_reaches_the_target():
    frame = pd.DataFrame({"M": [1, 1, 1, 2, 2], "K": [2, 4, 8, 2, 4], "distinct ADC values": [2, 4, 8, 4, 15],
                          "rank correlation": [0.5, 0.96, 0.9, 0.7, 0.8]})
    answer = exercises.adc_k_answer(frame, 0.95)
    assert "with M = 1 first at K = 4 (4 distinct values)" in answer
    assert "with M = 2 at no K up to 4 (best 0.800)" in answer


def test_on_the_page_s_toy_M2_needs_fewer_centroids_than_M1(gallery):
    """The teaching point of exercise 1 holds on the notebook's default toy and K values."""
    sweep = exercises.adc_k_sweep(gallery[0], QUERY, [2, 4, 8, 16, 32], seed=0)
    first = {M: rows.loc[rows["rank correlation"] >= 0.95, "K"].min() for M, rows in sweep.groupby("M")}
    assert first[2] < first[1]


def test_lda_views_are_l_da_of_the_changed_features_against_the_same_draws():
    lda = walk.lda_training(steps=30, snapshots=(0,))
    views = exercises.lda_views(lda, shift=3.0, scales=(2.0, 0.5))
    assert list(views["features"]) == ["trained features", "plus 3 on every channel", "times 2", "times 0.5",
                                       "all zero (a flat softmax)"]
    f, z = torch.as_tensor(lda["snapshots"][30]), torch.as_tensor(lda["target"])
    p = torch.softmax(z, 1)  # KL(softmax(z) || softmax(f)) per sample, averaged: the naive form of L_DA
    naive = [float((p * (torch.log(p) - torch.log_softmax(v, 1))).sum(1).mean())
             for v in (f, f + 3, 2 * f, 0.5 * f, torch.zeros_like(f))]
    assert views["L_DA"].tolist() == pytest.approx(naive, abs=1e-5)
    assert views["L_DA"][1] == pytest.approx(views["L_DA"][0], abs=1e-5)  # softmax ignores a shared shift
    answer = exercises.lda_views_answer(views)
    assert answer.startswith("A shift shared by every channel leaves L_DA unchanged")
    assert f"times 2: {views['L_DA'][2]:.3f}" in answer and "Lowest of all: all zero (a flat softmax)" in answer


def test_lda_views_answer_names_a_changed_shift_and_another_minimum():
    frame = pd.DataFrame({"features": ["trained features", "plus 1 on every channel", "times 2",
                                       "all zero (a flat softmax)"], "L_DA": [0.2, 0.3, 0.5, 0.4]})
    frame.attrs["floor"] = 0.35
    answer = exercises.lda_views_answer(frame)
    assert "leaves L_DA changed (0.200, then 0.300)" in answer
    assert answer.endswith("Lowest of all: trained features, at 0.200 against these draws (a flat softmax averages 0.350 over "
                          "many draws: the floor of section 1).")


def test_the_conclusions_quote_the_four_results(gallery):
    points, labels = gallery
    lda = walk.lda_training(steps=30, snapshots=(0,))
    cells = walk.pq_cells(points, labels, QUERY, K=4, grid=20)
    ties = walk.tie_study(points, labels, QUERY, 0, K=2, seeds=4)
    weights = walk.weight_study(walk.toy_pairs(), taus=(1.0, 0.05))
    text = walk.conclusions(lda, cells, ties, weights)
    assert len(text) == 4 and [t.split("**")[1] for t in text] == [
        "L_DA", "Cluster-then-retrieve", "Ties", "DMWA's weight list"]
    assert f"fell to {lda['loss'][-10:].mean():.3f} against a floor of {lda['floor']:.3f}" in text[0]
    assert f"{len(np.unique(cells[1]['adc']))} distinct distances at M = 1" in text[1]
    rnd = ties.loc[ties["policy"] == "adc, ties random", "AP"]
    assert f"AP {rnd.min():.3f} to {rnd.max():.3f} over random tie orders" in text[2]
    assert "at tau 1 and" in text[3] and text[3].endswith("at tau 0.05.")
