"""The exercises of the method notebooks (02, 03, 04): each changes one parameter, the reader predicts, and one of
these functions computes the check on the notebook's own objects. Every number comes from the study's own code
(``models.losses``, ``models.dmwa``, ``eval.cluster_retrieval``, ``eval.metrics``); ``tests/test_exercises.py``
checks on small data that each stated answer holds.

02  ``lda_floor``, ``lda_gap_table``: L_DA's floor at the embedding width and the channel-softmax gap.
03  ``k_sweep``, ``worked_ap``, ``fuse_ends``: K against purity and mAP; AP of a 6-item ranking under each tie
    rule and AP flavour; the two ends of the fuse weight.
04  ``tau_sweep``, ``probe_hinges``, ``weighting_effect``: the weight list's temperature; the quadruplet's two
    hinges against the balanced single hinge; what the weights do to the loss.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from ..eval.cluster_grid import cluster_stats
from ..eval.cluster_retrieval import DEFAULT_SEED, ClusterIndex
from ..eval.exact_search import evaluate_features
from ..eval.metrics import evaluate
from ..models.dmwa import weight_list
from ..models.losses import alignment_kl, quadruplet_hinges


# ------------------------------------------------------------------------------------------------ 02: L_DA
def lda_floor(dim: int, draws: int | None = None, seed: int = 0) -> float:
    """F_D, the least value of L_DA in expectation over its fresh draws at embedding width ``dim``: L_DA of a flat
    feature (all channels equal, softmax uniform), = log D - E[H(softmax z)], z ~ N(0, I_D); tends to 1/2.
    Estimated on ``draws`` draws (default: 20000, fewer for wide D, at most 4 M numbers)."""
    draws = draws or min(20000, max(512, 4_000_000 // dim))
    z = torch.randn(draws, dim, generator=torch.Generator().manual_seed(seed))
    return float(alignment_kl(torch.zeros_like(z), z))


def flatness_gap(features) -> np.ndarray:
    """Per row, KL(u || softmax f_i) = logsumexp(f_i) - mean_c f_ic - log D: exactly E_z[L_DA(f_i)] - F_D."""
    f = (features.detach().double() if torch.is_tensor(features)
         else torch.from_numpy(np.array(features, dtype=np.float64)))
    return (torch.logsumexp(f, 1) - f.mean(1) - np.log(f.shape[1])).numpy()


def lda_gap_table(runs: dict[str, dict], *, repeats: int = 8, seed: int = 0) -> pd.DataFrame:
    """Per run and domain (``runs``: {label: split features}, as 02 holds them): L_DA on the test features averaged
    over ``repeats`` fresh draws per sample, the floor F_D, their difference, the mean KL(u || softmax f) it should
    equal, and that gap for the features scaled by 1/2 and by 2 (the un-normalised scale L_DA sees)."""
    gen, rows = torch.Generator().manual_seed(seed), []
    for label, feats in runs.items():
        for domain in ("sketch", "photo"):
            f = torch.from_numpy(np.array(feats[domain][0], dtype=np.float32))
            lda = np.mean([float(alignment_kl(f, torch.randn(f.shape, generator=gen))) for _ in range(repeats)])
            floor = lda_floor(f.shape[1], seed=seed)
            rows.append({"run": label, "domain": domain, "D": f.shape[1], "L_DA": lda, "floor F_D": floor,
                         "L_DA - F_D": lda - floor, "KL(u || softmax f)": float(flatness_gap(f).mean()),
                         "gap at f/2": float(flatness_gap(f / 2).mean()),
                         "gap at 2f": float(flatness_gap(2 * f).mean()),
                         "mean ||f||": float(f.norm(dim=1).mean())})
    return pd.DataFrame(rows).set_index(["run", "domain"])


# ------------------------------------------------------------------------------------------------ 03: clusters
def k_sweep(query, gallery, query_labels, gallery_labels, Ks: Sequence[int], *, preset: str = "clusterretri",
            seed: int = DEFAULT_SEED) -> pd.DataFrame:
    """Per K (M = 1: k-means, variant adc, random ties), the purity of the gallery's cells against its classes and
    cluster-then-retrieve's mAP@all; K = 1 and K = N (the gallery size) are always included. ``attrs["exact"]``:
    exact retrieval's mAP@all under the same convention."""
    n = len(gallery)
    rows = []
    for K in sorted({1, n, *(int(k) for k in Ks if 1 <= int(k) <= n)}):
        index = ClusterIndex.fit(gallery, 1, K, seed)
        value = index.evaluate(query, query_labels, gallery_labels, variant="adc", metrics=["map@all"],
                               preset=preset)["map@all"].value
        rows.append({"K": K, "purity": cluster_stats(index.codes[:, 0], gallery_labels)["purity"], "map@all": value})
    frame = pd.DataFrame(rows).set_index("K")
    frame.attrs["exact"] = evaluate_features(query, gallery, query_labels, gallery_labels, metrics=["map@all"],
                                             preset=preset)["map@all"].value
    return frame


# six photos ranked for one sketch by distance; photos 0, 3 and 4 are of its class; photos 2-4 tie at 0.5
WORKED_DISTANCES = (0.1, 0.3, 0.5, 0.5, 0.5, 0.9)
WORKED_RELEVANT = (1, 0, 0, 1, 1, 0)


def worked_ap(distances: Sequence[float] = WORKED_DISTANCES, relevant: Sequence[int] = WORKED_RELEVANT) -> pd.DataFrame:
    """AP of one query (exact and VOC-interpolated) under each order of its tied items: list order ("stable"),
    relevant items first and last inside each tie (``ties="secondary"`` on relevance), the mean over every distinct
    order of the tied items (each as likely under a random tie order), and sklearn's tie-merged AP."""
    from itertools import permutations, product

    d, rel = np.asarray(distances, dtype=np.float64)[None], np.asarray(relevant, dtype=int)

    def ap(scores, rel_, flavour: str, **order) -> float:
        return evaluate(scores, [0], np.where(rel_ == 1, 0, 1), metrics=["map@all"], ap=flavour,  # class 0: the query's
                        higher_is_better=False, **order)["map@all"].value

    rows = []
    for name, sec in {"stable (list order)": np.zeros(len(rel)), "relevant first in a tie": rel.astype(float),
                      "relevant last in a tie": -rel.astype(float)}.items():
        order = {"ties": "secondary", "secondary": sec[None], "secondary_higher_is_better": True}
        ranked = np.lexsort((np.arange(len(rel)), -sec, d[0]))  # distance, then secondary (higher first), then index
        hits = ", ".join(str(r + 1) for r in np.flatnonzero(rel[ranked]))
        rows.append({"tie rule": name, "ranks of the relevant": hits,
                     "exact AP": ap(d, rel, "exact", **order), "VOC AP": ap(d, rel, "voc", **order)})
    # every distinct order of the tied items: per tie group, each arrangement of its relevance values
    ranked = rel[np.argsort(d[0], kind="stable")]
    groups = [np.flatnonzero(np.sort(d[0]) == v) for v in np.unique(d[0])]
    patterns = [np.concatenate(p) for p in product(*[sorted(set(permutations(ranked[g]))) for g in groups])]
    strict = np.arange(len(rel), dtype=np.float64)[None]  # the pattern is already the ranking
    rows.append({"tie rule": f"random (mean over the {len(patterns)} distinct orders)", "ranks of the relevant": "",
                 **{f"{flavour} AP": float(np.mean([ap(strict, p, flavour.lower()) for p in patterns]))
                    for flavour in ("exact", "VOC")}})
    rows.append({"tie rule": "tie-merged (sklearn: a tie is one threshold)", "ranks of the relevant": "",
                 "exact AP": ap(d, rel, "tie_merged"), "VOC AP": np.nan})
    return pd.DataFrame(rows).set_index("tie rule")


def fuse_ends(query, gallery, query_labels, gallery_labels, M: int, K: int, *, preset: str = "clusterretri",
              seed: int = DEFAULT_SEED) -> pd.Series:
    """mAP@all of the fuse variant at lambda_f = 0 and 1, of the adc variant (random ties) and of exact retrieval:
    lambda_f = 0 is the ADC alone, lambda_f = 1 the exact distance alone."""
    index = ClusterIndex.fit(gallery, M, K, seed)

    def value(variant: str, w: float = 0.0) -> float:
        return index.evaluate(query, query_labels, gallery_labels, variant=variant, fuse_weight=w, metrics=["map@all"],
                              preset=preset)["map@all"].value

    return pd.Series({"fuse, lambda_f = 0": value("fuse", 0.0), "adc (random ties)": value("adc"),
                      "fuse, lambda_f = 1": value("fuse", 1.0),
                      "exact retrieval": evaluate_features(query, gallery, query_labels, gallery_labels,
                                                           metrics=["map@all"], preset=preset)["map@all"].value},
                     name=f"mAP@all (M={M}, K={K})")


# ------------------------------------------------------------------------------------------------ 04: DMWA
def tau_sweep(probe: pd.DataFrame, beta: float | None, taus: Sequence[float],
              emphasis: str = "aligned") -> pd.DataFrame:
    """The weight list w = B softmax(s (beta a_loc + (1 - beta) a_glob) / tau) of the probed pairs (``probe``: a_loc,
    a_glob per pair, from ``dmwa_analysis.probe_weights``) recomputed at each tau: its mean (always 1), min, max,
    spread, and the share of the whole weight on the best-weighted tenth of the pairs."""
    a_loc, a_glob = (torch.from_numpy(np.array(probe[c], dtype=np.float32)) for c in ("a_loc", "a_glob"))
    rows = []
    for tau in taus:
        w = np.sort(weight_list(a_loc, a_glob, beta, float(tau), emphasis).numpy())[::-1]
        top = max(1, len(w) // 10)
        rows.append({"tau": tau, "mean w": w.mean(), "min w": w.min(), "max w": w.max(), "std w": w.std(),
                     "top tenth's share": w[:top].sum() / w.sum()})
    return pd.DataFrame(rows).set_index("tau")


def probe_hinges(model, quads, device: str | torch.device = "cpu") -> pd.DataFrame:
    """Per probed quadruplet (``quads``: the dataset ``probe_weights`` returns, one batch as training sees it), the
    hinge terms of the three loss forms with the model's margins, balance and distance, and its weight w."""
    from ..data.quadruplets import ROLES, stack_quadruplets

    batch = stack_quadruplets(torch.utils.data.default_collate([quads[k] for k in range(len(quads))]))
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    model = model.eval().to(device)
    with torch.no_grad():
        emb = dict(zip(ROLES, model.embed(batch["image"], batch["domain"]).float().split(len(quads))))
        w = model.weigh(batch)["w"]
    p = model.params
    margins = {"margin_cross": p.margin_cross, "margin_same": p.margin_same, "margin": p.margin, "balance": p.balance,
               "distance": p.distance}
    out = {form: quadruplet_hinges(emb["sketch"], emb["photo"], emb["neg_photo"], emb["neg_sketch"], form=form,
                                   **margins).cpu().numpy() for form in ("quadruplet", "balanced", "triplet")}
    return pd.DataFrame({**out, "w": w.cpu().numpy()})


def weighting_effect(hinges: pd.DataFrame, form: str = "quadruplet") -> pd.Series:
    """The loss of the probed batch unweighted (mean h) and weighted (mean w h), and the identity behind their
    difference: mean(w h) = mean(h) + cov(w, h) because mean(w) = 1 (population covariance)."""
    h, w = hinges[form].to_numpy(float), hinges["w"].to_numpy(float)
    cov = float(np.mean((w - w.mean()) * (h - h.mean())))
    corr = float(np.corrcoef(w, h)[0, 1]) if w.std() > 0 and h.std() > 0 else float("nan")
    return pd.Series({"unweighted mean h": h.mean(), "weighted mean w h": float(np.mean(w * h)), "mean w": w.mean(),
                      "cov(w, h)": cov, "mean w * mean h + cov(w, h)": w.mean() * h.mean() + cov,
                      "corr(w, h)": corr}, name=form)
