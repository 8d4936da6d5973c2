"""The methods' mechanisms on toy data small enough to see at once (notebook ``07_methods_in_2d``).

Every number is computed by the study's own code, not re-implemented: ClusterRetri's L_DA is
``training.losses.distribution_alignment``; k-means, PQ cells and ADC are ``eval.cluster_retrieval.ClusterIndex``;
AP under each tie policy is ``eval.metrics`` (through ``ClusterIndex.evaluate``); DMWA's weight list and hinge terms
are ``models.dmwa.global_score`` / ``weight_list`` and ``training.losses.quadruplet_hinges`` /
``weighted_quadruplet``. Each function returns data (dicts, frames) and a ``plot_*`` function draws it; the
``*_sentence(s)`` functions say what each figure shows and ``conclusions`` is the page's last word; the page's two
exercises are answered by ``walkthrough_2d_exercises``.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from ..eval.cluster_retrieval import ClusterIndex
from ..eval.pq_encode import encode
from ..eval.exact_search import evaluate_features
from ..models.dmwa import global_score, weight_list
from ..training.losses import alignment_kl, distribution_alignment, quadruplet_hinges, weighted_quadruplet
from ..viz import display_name, palette_colour


# ------------------------------------------------------------------------------------------------ 1. L_DA
def lda_training(*, dim: int = 8, n: int = 64, steps: int = 200, lr: float = 2.0, snapshots=(0, 10, 40),
                 seed: int = 0) -> dict:
    """Features that start peaked (one dominant channel each) trained by L_DA alone (SGD on the features themselves,
    a fresh Gaussian draw every step, as in training). Returns the loss per step, the features at ``snapshots``,
    a Gaussian draw of the same shape, and the loss floor: L_DA of features whose softmax is the AVERAGE target
    softmax (uniform over channels), the best any fixed feature can do against fresh draws."""
    gen = torch.Generator().manual_seed(seed)
    start = 4.0 * torch.nn.functional.one_hot(torch.randint(0, dim, (n,), generator=gen), dim).float()
    feats = torch.nn.Parameter(start + 0.3 * torch.randn(n, dim, generator=gen))
    opt = torch.optim.SGD([feats], lr=lr)
    losses, shots = [], {}
    for step in range(steps):
        if step in snapshots:
            shots[step] = feats.detach().clone().numpy()
        loss = distribution_alignment(feats, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    shots[steps] = feats.detach().clone().numpy()
    target = torch.randn(4096, dim, generator=gen)
    floor = float(alignment_kl(torch.zeros_like(target), target))
    return {"loss": np.array(losses), "snapshots": shots, "target": target[:n].numpy(), "floor": floor, "dim": dim}


def _sorted_softmax(x: np.ndarray) -> np.ndarray:
    p = torch.softmax(torch.as_tensor(x, dtype=torch.float32), dim=1).numpy()
    return np.sort(p, axis=1)[:, ::-1].mean(0)


def plot_lda(result: dict):
    """Left: the loss per step and its floor. Middle: each sample's channel softmax, sorted and averaged, at the
    snapshots against a Gaussian draw's and the uniform level. Right: two channels of the (per-sample centred)
    features at the first and last snapshot against the Gaussian draw."""
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    ax[0].plot(result["loss"], label="L_DA")
    ax[0].axhline(result["floor"], ls="--", color="grey", label=f"floor {result['floor']:.3f}")
    ax[0].set(xlabel="step", ylabel="loss", title="L_DA over training steps")
    ax[0].legend(fontsize=8)
    steps = sorted(result["snapshots"])
    for s in steps:
        ax[1].plot(_sorted_softmax(result["snapshots"][s]), marker="o", ms=3, label=f"step {s}")
    ax[1].plot(_sorted_softmax(result["target"]), "k--", label="softmax of N(0, I) draws")
    ax[1].axhline(1 / result["dim"], color="grey", lw=0.8, ls=":", label="uniform 1/D")
    ax[1].set(xlabel="channel (sorted per sample)", ylabel="mean softmax", title="channel distribution")
    ax[1].legend(fontsize=7)
    for s, style in ((steps[0], "o"), (steps[-1], "s")):
        f = result["snapshots"][s]
        f = f - f.mean(1, keepdims=True)
        ax[2].scatter(f[:, 0], f[:, 1], s=12, marker=style, alpha=0.7, label=f"features, step {s}")
    z = result["target"] - result["target"].mean(1, keepdims=True)
    ax[2].scatter(z[:, 0], z[:, 1], s=12, marker="x", color="k", alpha=0.5, label="N(0, I) draws")
    ax[2].set(xlabel="channel 0 (centred)", ylabel="channel 1 (centred)", title="two channels")
    ax[2].legend(fontsize=7)
    fig.tight_layout()
    return fig


def lda_sentence(result: dict) -> str:
    """What the three panels of ``plot_lda`` show, in numbers: the loss against its floor, and the largest channel of
    the softmax (sorted, averaged) at the first and last snapshot against a Gaussian draw's and the uniform level."""
    loss, steps = result["loss"], sorted(result["snapshots"])
    top = {s: _sorted_softmax(result["snapshots"][s])[0] for s in (steps[0], steps[-1])}
    gauss = _sorted_softmax(result["target"])[0]
    return (f"L_DA fell from {loss[0]:.3f} to {loss[-10:].mean():.3f} (mean of the last 10 steps) in {len(loss)} "
            f"steps; its floor against fresh draws is {result['floor']:.3f}: no fixed feature matches every draw, the "
            f"best one has the average target softmax, uniform over the {result['dim']} channels. In the middle "
            f"panel the largest channel of a feature's softmax holds {top[steps[0]]:.2f} of it at step {steps[0]} and "
            f"{top[steps[-1]]:.2f} at step {steps[-1]}, against {gauss:.2f} for a Gaussian draw and "
            f"{1 / result['dim']:.2f} for the uniform level: L_DA "
            + ("flattens the features past a single draw's profile, towards the average target."
               if top[steps[-1]] < gauss else "moves the features towards a Gaussian draw's profile.")
            + " The right panel: only the differences between channels matter (softmax ignores a shift shared by "
            "every channel), so the features are drawn centred.")


# ------------------------------------------------------------------------------------------------ 2. PQ cells
def toy_gallery(*, classes: int = 4, per_class: int = 30, spread: float = 0.35, seed: int = 0):
    """2-D points of ``classes`` Gaussian blobs on a circle, listed class by class (as benchmark lists are)."""
    rng = np.random.default_rng(seed)
    angles = 2 * np.pi * np.arange(classes) / classes + 0.4
    centres = np.stack([np.cos(angles), np.sin(angles)], 1) * 1.5
    points = np.concatenate([c + spread * rng.standard_normal((per_class, 2)) for c in centres]).astype(np.float32)
    return points, np.repeat(np.arange(classes), per_class)


def pq_cells(points: np.ndarray, labels: np.ndarray, query, *, K: int = 4, seed: int = 0, grid: int = 200) -> dict:
    """k-means (M = 1) and PQ (M = 2: one k-means per coordinate) of the toy gallery, on the raw plane
    (``normalize=False``, so the cells can be drawn): each index, the cell of every point of a grid over the plane,
    and the query's ADC (squared distance to each item's reconstruction) against its exact squared distance."""
    query = np.asarray(query, dtype=np.float32)[None]
    lo, hi = points.min(0) - 0.5, points.max(0) + 0.5
    xs, ys = np.meshgrid(np.linspace(lo[0], hi[0], grid), np.linspace(lo[1], hi[1], grid))
    mesh = torch.from_numpy(np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32))
    out = {"points": points, "labels": labels, "query": query[0], "extent": (lo[0], hi[0], lo[1], hi[1]), "K": K}
    exact = ((points - query) ** 2).sum(1)
    for M in (1, 2):
        index = ClusterIndex.fit(points, M, K, seed=seed, normalize=False)
        codes = encode(mesh, index.centroids)
        cell = codes[:, 0] if M == 1 else codes[:, 0] * K + codes[:, 1]
        out[M] = {"index": index, "cells": cell.reshape(grid, grid), "adc": index.adc(query)[0], "exact": exact}
    return out


def plot_pq(result: dict):
    """k-means cells, PQ cells (a K x K grid of products) with their centroids and the query, and each gallery
    item's ADC against its exact distance to the query for both."""
    fig, ax = plt.subplots(1, 3, figsize=(14, 4.2))
    pts, lab, q, K = result["points"], result["labels"], result["query"], result["K"]
    for a, M, title in ((ax[0], 1, f"k-means: M = 1, K = {K} cells"),
                        (ax[1], 2, f"PQ: M = 2 sub-spaces x K = {K}: {K * K} cells")):
        r = result[M]
        a.imshow(r["cells"], origin="lower", extent=result["extent"], cmap="tab20", alpha=0.35, aspect="auto")
        a.scatter(pts[:, 0], pts[:, 1], c=lab, cmap="tab10", s=12, vmin=0, vmax=9)
        recon = r["index"].reconstruct()
        a.scatter(recon[:, 0], recon[:, 1], marker="+", color="k", s=60, label="reconstructions (centroids)")
        a.scatter(*q, marker="*", s=250, color="gold", edgecolor="k", label="query")
        a.set(title=title, xticks=[], yticks=[])
        a.legend(fontsize=7, loc="lower right")
    for M, marker in ((1, "o"), (2, "s")):
        r = result[M]
        ax[2].scatter(r["exact"], r["adc"], s=14, marker=marker, alpha=0.6, color=palette_colour("subspaces", M),
                      label=display_name("subspaces", M))
    top = max(result[1]["exact"].max(), result[1]["adc"].max(), result[2]["adc"].max())
    ax[2].plot([0, top], [0, top], "k:", lw=0.8)
    ax[2].set(xlabel="exact squared distance to the query", ylabel="ADC (distance to the reconstruction)",
              title="ADC against the exact distance")
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    return fig


def pq_sentences(result: dict) -> list[str]:
    """Per M: distinct ADC values (the horizontal bands of the right panel) and the rank correlation with the exact
    distance (how close the points lie to a rising curve)."""
    out = []
    for M in (1, 2):
        r = result[M]
        distinct = len(np.unique(r["adc"]))
        rho = rank_correlation(r["adc"], r["exact"])
        out.append(f"M = {M}: {len(r['adc'])} photos get {distinct} distinct ADC values (items of one cell tie: the "
                   f"horizontal bands of the right panel); rank correlation of ADC with the exact distance {rho:.3f}.")
    return out


def rank_correlation(adc: np.ndarray, exact: np.ndarray) -> float:
    """Spearman's rank correlation of the ADC with the exact distance (1: ADC ranks the gallery as exactly)."""
    return float(pd.Series(adc).corr(pd.Series(exact), method="spearman"))


# ------------------------------------------------------------------------------------------------ 3. ties and AP
def tie_study(points: np.ndarray, labels: np.ndarray, query, query_label: int, *, K: int = 3, seeds: int = 20,
              seed: int = 0, preset: str = "clusterretri") -> pd.DataFrame:
    """The query's AP (mAP@all of one query) by exact retrieval and by cluster-then-retrieve (M = 1, K cells) under
    each tie policy for the photos that share a cell: stable (list order, here class by class), random (``seeds``
    orders) and rerank (exact distance). One row per (policy, seed)."""
    q = np.asarray(query, dtype=np.float32)[None]
    index = ClusterIndex.fit(points, 1, K, seed=seed, normalize=False)
    rows = [{"policy": "exact", "seed": None,
             "AP": evaluate_features(q, points, [query_label], labels, metric="euclidean", normalize=False,
                                     metrics=["map@all"], preset=preset)["map@all"].value}]

    def ap(variant, **kw):
        return index.evaluate(q, [query_label], labels, variant=variant, metrics=["map@all"], preset=preset,
                              **kw)["map@all"].value

    rows.append({"policy": "adc, ties stable (list order)", "seed": None, "AP": ap("adc", ties="stable")})
    rows += [{"policy": "adc, ties random", "seed": s, "AP": ap("adc", ties="random", tie_seed=s)} for s in range(seeds)]
    rows.append({"policy": "rerank (ties by exact distance)", "seed": None, "AP": ap("rerank")})
    frame = pd.DataFrame(rows)
    cell = index.codes[int(np.argmin(index.adc(q)[0])), 0]
    members = labels[index.codes[:, 0] == cell]
    frame.attrs.update(cell_size=int(len(members)), cell_share=float(np.mean(members == query_label)), K=K)
    return frame


# plot_ties: the procedure and line style of each tie policy of ``tie_study`` drawn as a line
_TIE_LINES = {"exact": ("exact", "-"), "adc, ties stable (list order)": ("cluster", "--"),
              "rerank (ties by exact distance)": ("cluster", ":")}


def plot_ties(frame: pd.DataFrame):
    """The AP of every random tie order (dots) against the stable order, rerank and exact retrieval (lines), in the
    palette's procedure colours (cluster-then-retrieve's tie policies told apart by line style)."""

    def named(procedure, policy):  # 'exact retrieval', 'cluster-then-retrieve, adc, ties random'
        name = display_name("procedure", procedure)
        return name if procedure == "exact" else f"{name}, {policy}"

    fig, ax = plt.subplots(figsize=(7, 3))
    rnd = frame[frame["policy"] == "adc, ties random"]
    ax.scatter(rnd["AP"], np.zeros(len(rnd)) + np.linspace(-0.15, 0.15, len(rnd)), s=20,
               color=palette_colour("procedure", "cluster"), label=named("cluster", "adc, ties random (seeds)"))
    for policy, value in frame[frame["seed"].isna()][["policy", "AP"]].itertuples(index=False):
        procedure, style = _TIE_LINES.get(policy, ("cluster", "-."))
        ax.axvline(value, color=palette_colour("procedure", procedure), ls=style,
                   label=f"{named(procedure, policy)}: {value:.3f}")
    ax.set(xlabel="AP of the query", yticks=[], ylim=(-0.5, 0.5),
           title=f"one query, M = 1, K = {frame.attrs.get('K')}: the same clusters, different tie orders")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def tie_sentence(frame: pd.DataFrame) -> str:
    """The AP of each tie policy (the dots and lines of ``plot_ties``), and what the list order is worth."""
    by = frame.groupby("policy", sort=False)["AP"]
    rnd = frame.loc[frame["policy"] == "adc, ties random", "AP"]
    stable = by.first()["adc, ties stable (list order)"]
    return (f"The query's cell holds {frame.attrs['cell_size']} photos, {frame.attrs['cell_share']:.0%} of its class. "
            f"Its AP: exact {by.first()['exact']:.3f}; with ties in list order {stable:.3f}; "
            f"with random tie orders {rnd.min():.3f} to {rnd.max():.3f} (mean {rnd.mean():.3f}, the dots); "
            f"reranked by the exact distance {by.first()['rerank (ties by exact distance)']:.3f}. The list order is "
            f"not neutral: it is the gallery's class order, worth {stable - rnd.mean():+.3f} AP against a random order "
            f"for this query.")


# ------------------------------------------------------------------------------------------------ 4. DMWA weights
def toy_pairs(*, easy: int = 4, hard: int = 4, seed: int = 0) -> dict:
    """Quadruplets of unit 2-D embeddings: an anchor sketch, its positive photo at a small angle (easy pairs) or a
    large one (hard pairs), a negative photo and a negative sketch at other angles."""
    rng = np.random.default_rng(seed)
    n = easy + hard
    base = rng.uniform(0, 2 * np.pi, n)
    offset = np.concatenate([rng.uniform(0.05, 0.3, easy), rng.uniform(1.0, 1.6, hard)])
    neg = base + rng.choice([-1, 1], n) * rng.uniform(0.6, 1.4, n)
    neg_s = base + rng.choice([-1, 1], n) * rng.uniform(0.8, 1.6, n)
    unit = lambda a: torch.tensor(np.stack([np.cos(a), np.sin(a)], 1), dtype=torch.float32)  # noqa: E731
    return {"sketch": unit(base), "photo": unit(base + offset), "neg_photo": unit(neg), "neg_sketch": unit(neg_s),
            "kind": np.array(["easy"] * easy + ["hard"] * hard), "angle": offset}


def weight_study(pairs: dict, taus=(1.0, 0.2, 0.05), margin: float = 0.2) -> pd.DataFrame:
    """Per pair: its global alignment a_glob (DMWA's "pair" score, (1 + cos(sketch, photo)) / 2), its quadruplet
    hinge term, and for each tau its weight w (``weight_list`` with beta 0: the global block alone) and weighted
    term w * hinge; ``attrs`` hold the unweighted and weighted losses (``weighted_quadruplet``) per tau."""
    hinge = quadruplet_hinges(pairs["sketch"], pairs["photo"], pairs["neg_photo"], pairs["neg_sketch"],
                              margin_cross=margin, margin_same=margin)
    a_glob = global_score(pairs["sketch"], pairs["photo"], pairs["sketch"], pairs["photo"], kind="pair")
    frame = pd.DataFrame({"pair": np.arange(len(hinge)), "kind": pairs["kind"], "angle": pairs["angle"],
                          "a_glob": a_glob.numpy(), "hinge": hinge.numpy()})
    losses = {"unweighted": float(weighted_quadruplet(pairs["sketch"], pairs["photo"], pairs["neg_photo"],
                                                      pairs["neg_sketch"], None, margin_cross=margin, margin_same=margin))}
    for tau in taus:
        w = weight_list(None, a_glob, 0.0, tau)
        frame[f"w (tau {tau:g})"] = w.numpy()
        frame[f"w*hinge (tau {tau:g})"] = (w * hinge).numpy()
        losses[f"tau {tau:g}"] = float(weighted_quadruplet(pairs["sketch"], pairs["photo"], pairs["neg_photo"],
                                                           pairs["neg_sketch"], w, margin_cross=margin,
                                                           margin_same=margin))
    frame.attrs.update(losses=losses, taus=list(taus))
    return frame


def plot_weights(pairs: dict, frame: pd.DataFrame):
    """Left: the pairs in the plane (anchor to positive; easy and hard). Right: each pair's hinge term unweighted
    and weighted at each tau."""
    fig, ax = plt.subplots(1, 2, figsize=(13, 4), gridspec_kw={"width_ratios": [1, 2]})
    circle = np.linspace(0, 2 * np.pi, 200)
    ax[0].plot(np.cos(circle), np.sin(circle), color="lightgrey", lw=0.8)
    for i, kind in enumerate(pairs["kind"]):
        s, p = pairs["sketch"][i].numpy(), pairs["photo"][i].numpy()
        colour = palette_colour("pair", kind)
        ax[0].annotate("", xy=p, xytext=s, arrowprops={"arrowstyle": "->", "color": colour})
        ax[0].text(*(s * 1.12), str(i), fontsize=8, color=colour, ha="center", va="center")
    for kind in dict.fromkeys(pairs["kind"]):  # legend entries for the arrows' colours
        ax[0].plot([], [], color=palette_colour("pair", kind), label=display_name("pair", kind))
    ax[0].legend(fontsize=8, loc="lower left")
    ax[0].set(aspect="equal", xticks=[], yticks=[], title="sketch -> its photo")
    taus = frame.attrs["taus"]
    width = 0.8 / (len(taus) + 1)
    x = frame["pair"].to_numpy()
    ax[1].bar(x - 0.4 + width / 2, frame["hinge"], width, color="grey", label="hinge (w = 1)")
    for j, tau in enumerate(taus, start=1):
        ax[1].bar(x - 0.4 + width * (j + 0.5), frame[f"w*hinge (tau {tau:g})"], width, label=f"w * hinge, tau {tau:g}")
    ax[1].set(xticks=x, xticklabels=[f"{i}\n{k}" for i, k in zip(x, frame["kind"])], ylabel="loss term",
              title="each pair's term in the quadruplet loss")
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def _by_kind(frame: pd.DataFrame, tau: float) -> tuple[float, float, float]:
    """Mean weight of the easy and of the hard pairs at ``tau``, and the hard pairs' share of the weighted loss."""
    w = frame.groupby("kind")[f"w (tau {tau:g})"].mean()
    share = frame.groupby("kind")[f"w*hinge (tau {tau:g})"].sum()
    return float(w.get("easy", np.nan)), float(w.get("hard", np.nan)), float(share.get("hard", 0) / share.sum())


def weight_sentences(frame: pd.DataFrame) -> list[str]:
    out = []
    for tau in frame.attrs["taus"]:
        easy, hard, share = _by_kind(frame, tau)
        out.append(f"tau {tau:g}: easy pairs weigh {easy:.2f} on average, hard pairs {hard:.2f}; hard pairs carry "
                   f"{share:.0%} of the weighted loss ({frame.attrs['losses'][f'tau {tau:g}']:.3f}; unweighted "
                   f"{frame.attrs['losses']['unweighted']:.3f}).")
    return out


# ------------------------------------------------------------------------------------------------------- conclusion
def conclusions(lda: dict, cells: dict, ties: pd.DataFrame, weights: pd.DataFrame) -> list[str]:
    """The page's conclusion, one sentence per toy, from the four results."""
    rnd = ties.loc[ties["policy"] == "adc, ties random", "AP"]
    ap = ties.groupby("policy", sort=False)["AP"].first()
    hi, lo = max(weights.attrs["taus"]), min(weights.attrs["taus"])
    d = {M: len(np.unique(cells[M]["adc"])) for M in (1, 2)}
    return [f"**L_DA** only reshapes each feature's channel distribution, towards a flat one: it fell to "
            f"{lda['loss'][-10:].mean():.3f} against a floor of {lda['floor']:.3f} (a flat softmax against fresh draws, "
            "the best any fixed feature does on average), and a shift shared by every channel does not change it.",
            f"**Cluster-then-retrieve** ranks by the distance to a photo's reconstruction: with K = {cells['K']} the "
            f"{len(cells[1]['adc'])} photos get {d[1]} distinct distances at M = 1 and {d[2]} at M = 2, so most of the "
            "list is ties.",
            f"**Ties** decide what such a list scores: the same clusters give this query AP {rnd.min():.3f} to "
            f"{rnd.max():.3f} over random tie orders, {ap['adc, ties stable (list order)']:.3f} in list order and "
            f"{ap['rerank (ties by exact distance)']:.3f} reranked (exact retrieval {ap['exact']:.3f}): a reported "
            "number has to name its tie rule.",
            f"**DMWA's weight list** moves the loss from hard to easy pairs as tau falls: the hard pairs carry "
            f"{_by_kind(weights, hi)[2]:.0%} of the weighted loss at tau {hi:g} and {_by_kind(weights, lo)[2]:.0%} at "
            f"tau {lo:g}."]
