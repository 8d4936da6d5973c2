"""The exercises of notebooks 02, 03 and 04 (``zssbir.study.exercises``): each answer the notebooks state is checked
here on small data: the L_DA floor and gap, K at its two ends, the worked AP against the hand values, the ends of
the fuse weight, the weight list's temperature, the quadruplet against the balanced hinge, the weighting identity."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zssbir.eval.cluster_retrieval import DEFAULT_SEED
from zssbir.eval.exact_search import evaluate_features
from zssbir.eval.metrics import evaluate
from zssbir.models import losses
from zssbir.models.dmwa import DMWA, DMWAParams, weight_list
from zssbir.models.small import build_small
from zssbir.study import exercises


# ------------------------------------------------------------------------------------------------ 02
def test_lda_floor_rises_towards_one_half_as_stated():
    """02, exercise 1: about 0.15 at D = 2, 0.36 at 8, 0.47 at 64, 0.50 at 2048; it is L_DA of any flat feature."""
    floors = {d: exercises.lda_floor(d) for d in (2, 8, 64, 512, 2048)}
    for d, stated in ((2, 0.15), (8, 0.36), (64, 0.47), (2048, 0.50)):
        assert floors[d] == pytest.approx(stated, abs=0.006), (d, floors[d])
    assert list(floors.values()) == sorted(floors.values()) and floors[2048] < 0.5
    z = torch.randn(4000, 16, generator=torch.Generator().manual_seed(0))
    flat = float(losses.alignment_kl(torch.full_like(z, 3.0), z))  # softmax of a constant feature is uniform
    assert flat == pytest.approx(exercises.lda_floor(16, draws=4000), abs=1e-5)


def test_gap_above_the_floor_is_the_kl_to_uniform_and_grows_with_scale():
    """02, the card and exercise 2: E_z L_DA(f) - F_D = KL(u || softmax f); scaling f up raises it, down lowers it."""
    gen = torch.Generator().manual_seed(1)
    f = 1.5 * torch.randn(64, 16, generator=gen)
    measured = np.mean([float(losses.distribution_alignment(f, generator=gen)) for _ in range(400)])
    assert measured - exercises.lda_floor(16) == pytest.approx(exercises.flatness_gap(f).mean(), abs=0.01)
    feats = {"run": {"sketch": (f.numpy(), np.zeros(64)), "photo": (0.2 * f.numpy(), np.zeros(64))}}
    table = exercises.lda_gap_table(feats, repeats=200)
    assert np.allclose(table["L_DA - F_D"], table["KL(u || softmax f)"], atol=0.01)
    assert (table["gap at f/2"] < table["KL(u || softmax f)"]).all()
    assert (table["KL(u || softmax f)"] < table["gap at 2f"]).all()
    assert table.loc[("run", "photo"), "L_DA - F_D"] < table.loc[("run", "sketch"), "L_DA - F_D"]


# ------------------------------------------------------------------------------------------------ 03
def blobs(classes=4, per_class=12, queries=5, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = 3 * rng.standard_normal((classes, dim))
    g = np.concatenate([c + rng.standard_normal((per_class, dim)) for c in centres]).astype(np.float32)
    q = np.concatenate([c + rng.standard_normal((queries, dim)) for c in centres]).astype(np.float32)
    return q, g, np.repeat(np.arange(classes), queries), np.repeat(np.arange(classes), per_class)


def test_k_sweep_ends_are_chance_and_exact_retrieval():
    """03, exercise 1: K = 1 is the random tie order (chance) with the largest class's share as purity; K = N is
    exact retrieval with purity 1."""
    q, g, ql, gl = blobs()
    sweep = exercises.k_sweep(q, g, ql, gl, [4, 8])
    assert list(sweep.index) == [1, 4, 8, len(g)]
    random_order = evaluate(np.zeros((len(q), len(g))), ql, gl, metrics=["map@all"], preset="clusterretri",
                            ties="random", seed=DEFAULT_SEED, higher_is_better=False)["map@all"].value
    assert sweep.loc[1, "map@all"] == random_order and sweep.loc[1, "purity"] == pytest.approx(0.25)
    exact = evaluate_features(q, g, ql, gl, metrics=["map@all"], preset="clusterretri")["map@all"].value
    assert sweep.attrs["exact"] == exact and sweep.loc[len(g), "map@all"] == pytest.approx(exact, abs=1e-9)
    assert sweep.loc[len(g), "purity"] == 1.0 and sweep.loc[4, "purity"] > sweep.loc[1, "purity"]


def test_worked_ap_equals_the_hand_values():
    """03, exercise 2: the AP of the 6-item ranking as the answer computes it by hand."""
    table = exercises.worked_ap()
    hand = {"stable (list order)": (0.7, 0.7 + 0.1 / 3, "1, 4, 5"),
            "relevant first in a tie": ((1 + 2 / 3 + 3 / 4) / 3, (1 + 0.75 + 0.75) / 3, "1, 3, 4"),
            "relevant last in a tie": (0.7, (1 + 0.6 + 0.6) / 3, "1, 4, 5")}
    for rule, (exact, voc, ranks) in hand.items():
        assert table.loc[rule, "exact AP"] == pytest.approx(exact, abs=1e-12)
        assert table.loc[rule, "VOC AP"] == pytest.approx(voc, abs=1e-12)
        assert table.loc[rule, "ranks of the relevant"] == ranks
    middle = (1 + 2 / 3 + 3 / 5) / 3  # the irrelevant photo in the middle of the tie (ranks 1, 3, 5)
    random = table.loc[[r for r in table.index if r.startswith("random")][0]]
    assert random["exact AP"] == pytest.approx(((1 + 2 / 3 + 3 / 4) / 3 + middle + 0.7) / 3, abs=1e-12)
    assert random["VOC AP"] == pytest.approx(((1 + 0.75 + 0.75) / 3 + middle + (1 + 0.6 + 0.6) / 3) / 3, abs=1e-12)
    assert round(random["exact AP"], 3) == 0.754 and round(random["VOC AP"], 3) == 0.774
    merged = table.loc[[r for r in table.index if r.startswith("tie-merged")][0], "exact AP"]
    assert merged == pytest.approx((1 + 0.6 + 0.6) / 3, abs=1e-12)


def test_fuse_ends_are_adc_and_exact_retrieval():
    """03, exercise 3: lambda_f = 0 is the adc variant exactly; lambda_f = 1 is exact retrieval."""
    q, g, ql, gl = blobs(seed=3)
    ends = exercises.fuse_ends(q, g, ql, gl, 2, 3)
    assert ends["fuse, lambda_f = 0"] == ends["adc (random ties)"]
    assert ends["fuse, lambda_f = 1"] == pytest.approx(ends["exact retrieval"], abs=1e-9)


# ------------------------------------------------------------------------------------------------ 04
def test_tau_sweep_mean_one_flat_at_large_tau_one_pair_at_small():
    """04, exercise 1: mean 1 at every tau; tau -> infinity gives w -> 1, tau -> 0 gives all the weight B to the
    best-aligned pair; at a given tau the sweep is the weight list itself."""
    rng = np.random.default_rng(0)
    import pandas as pd

    probe = pd.DataFrame({"a_loc": rng.uniform(0.4, 0.9, 20), "a_glob": rng.uniform(0.3, 0.8, 20)})
    sweep = exercises.tau_sweep(probe, 0.5, [100.0, 0.2, 1e-4])
    assert np.allclose(sweep["mean w"], 1.0, atol=1e-5)
    assert sweep.loc[100.0, "max w"] == pytest.approx(1.0, abs=0.01) and sweep.loc[100.0, "min w"] > 0.99
    assert sweep.loc[1e-4, "max w"] == pytest.approx(20.0, abs=1e-3) and sweep.loc[1e-4, "top tenth's share"] > 0.999
    w = weight_list(torch.tensor(probe["a_loc"].to_numpy(), dtype=torch.float32),
                    torch.tensor(probe["a_glob"].to_numpy(), dtype=torch.float32), 0.5, 0.2)
    assert sweep.loc[0.2, "max w"] == pytest.approx(float(w.max()), abs=1e-6)
    assert (exercises.tau_sweep(probe, None, [0.2])["std w"] == 0).all()  # weighting none


def test_quadruplet_is_at_least_twice_the_balanced_hinge_and_above_the_triplet():
    """04, exercise 2: with equal margins and balance 1/2, h >= 2 h_bal and h >= h_tri on every pair."""
    gen = torch.Generator().manual_seed(0)
    a, p, n_cross, n_same = (torch.randn(500, 8, generator=gen) for _ in range(4))
    p = a + 0.7 * p  # some pairs close, some hinges zero
    h = {form: losses.quadruplet_hinges(a, p, n_cross, n_same, form=form) for form in losses.QUADRUPLET_FORMS}
    assert (h["quadruplet"] >= 2 * h["balanced"] - 1e-6).all() and (h["quadruplet"] >= h["triplet"] - 1e-6).all()
    assert (h["quadruplet"] > 2 * h["balanced"] + 1e-3).any() and (h["balanced"] > 0).any()


def test_probe_hinges_are_the_loss_terms_and_the_weighting_identity_holds():
    """04, exercises 2 and 3: the probed hinge terms weighted by the probed w give the model's own quadruplet loss;
    mean(w h) = mean(h) + cov(w, h) since mean(w) = 1."""
    backbone = build_small(embed_dim=16, image_size=32, width=16, depth=1, heads=2, stem_channels=(8, 16))
    torch.manual_seed(0)
    model = DMWA(backbone, torch.randn(3, 12), torch.randn(3, 12), DMWAParams(weighting="both", tau=0.05)).eval()
    gen = torch.Generator().manual_seed(2)
    labels = [0, 1, 2, 0, 1]

    def image(domain, label, k):
        return {"image": torch.randn(3, 32, 32, generator=gen), "label": label, "domain": domain,
                "pair_id": f"{label}-{k}"}

    quads = [{"sketch": image(0, y, k), "photo": image(1, y, k), "neg_photo": image(1, (y + 1) % 3, k),
              "neg_sketch": image(0, (y + 2) % 3, k)} for k, y in enumerate(labels)]
    hinges = exercises.probe_hinges(model, quads)
    assert list(hinges.columns) == ["quadruplet", "balanced", "triplet", "w"] and len(hinges) == len(labels)
    from zssbir.data.quadruplets import stack_quadruplets

    batch = stack_quadruplets(torch.utils.data.default_collate(quads))
    with torch.no_grad():
        loss = float(model(batch)["quad"])
    assert float(np.mean(hinges["w"] * hinges["quadruplet"])) == pytest.approx(loss, abs=1e-6)
    effect = exercises.weighting_effect(hinges)
    assert effect["mean w"] == pytest.approx(1.0, abs=1e-5)
    assert effect["weighted mean w h"] == pytest.approx(effect["mean w * mean h + cov(w, h)"], abs=1e-9)
    assert effect["weighted mean w h"] == pytest.approx(effect["unweighted mean h"] + effect["cov(w, h)"], abs=1e-5)


def test_weighting_below_the_plain_loss_when_heavy_pairs_have_small_hinges():
    """04, exercise 3: a negative covariance of w and h puts the weighted loss below the unweighted one."""
    import pandas as pd

    h = np.array([0.0, 0.1, 0.4, 0.8])
    w = weight_list(None, torch.tensor([0.9, 0.8, 0.4, 0.2]), 0.0, 0.2).numpy()  # well-aligned pairs: small hinges
    effect = exercises.weighting_effect(pd.DataFrame({"quadruplet": h, "w": w}))
    assert effect["cov(w, h)"] < 0 and effect["weighted mean w h"] < effect["unweighted mean h"]
