"""What notebook 02 shows of distribution alignment (L_DA), for runs given as {label: split features}:
UMAP panels of sketch and photo features, the channel-softmax profile against the Gaussian target,
the L_DA value on the features, and the domain gap. Features are ``{"sketch": (f, labels), "photo": ...}``."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from ..eval.domain_gap import channel_softmax, gap_table
from ..training.losses import alignment_kl
from ..viz import display_name, embedding_scatter, lda_key, lda_label, palette_colour


def per_class_subsample(labels, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of at most ``per_class`` items of every class, drawn at random."""
    labels = np.asarray(labels)
    return np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)])


def umap_points(runs: dict[str, dict], *, per_class: int = 60, seed: int = 0):
    """Per run: (label, L2-normalised features, class ids, domains) of at most ``per_class`` sketches and photos of
    every class, drawn at random with ``seed`` (the points of ``umap_panels`` and ``domain_mixing``)."""
    rng = np.random.default_rng(seed)
    for label, feats in runs.items():
        (s, sl), (p, pl) = feats["sketch"], feats["photo"]
        si, pi = per_class_subsample(sl, per_class, rng), per_class_subsample(pl, per_class, rng)
        x = np.concatenate([s[si], p[pi]])
        yield (label, x / np.linalg.norm(x, axis=1, keepdims=True), np.concatenate([np.asarray(sl)[si],
               np.asarray(pl)[pi]]), np.array(["sketch"] * len(si) + ["photo"] * len(pi)))


def run_title(label: str, lambda_da: dict | None = None) -> str:
    """How a figure names a run: 'with L_DA (weight 0.1)' when ``lambda_da`` ({run label: L_DA weight}) has its
    weight, else its label."""
    return lda_label(lambda_da[label]) if lambda_da and label in lambda_da else label


def umap_panels(runs: dict[str, dict], class_names, *, per_class: int = 60, neighbors: int = 15, seed: int = 0,
                lambda_da: dict | None = None):
    """One UMAP panel per run of the L2-normalised sketch (crosses) and photo (dots) features, coloured by class,
    titled by ``run_title``; one legend, right of the last panel."""
    import umap

    fig, axes = plt.subplots(1, len(runs), figsize=(5.5 * len(runs) + 1.8, 5), squeeze=False)
    for i, (ax, (label, x, classes, domains)) in enumerate(zip(axes[0], umap_points(runs, per_class=per_class,
                                                                                       seed=seed))):
        # n_jobs=1 is what a seed implies anyway: UMAP would otherwise warn (a stderr box in the report)
        points = umap.UMAP(n_neighbors=neighbors, random_state=seed, n_jobs=1).fit_transform(x)
        embedding_scatter(points, [class_names[c] for c in classes], domains, ax=ax, title=run_title(label, lambda_da),
                          legend=i == len(runs) - 1)
    fig.tight_layout()
    return fig


PLURAL = {"sketch": "sketches", "photo": "photos"}


def domain_mixing(runs: dict[str, dict], *, per_class: int = 60, k: int = 10, seed: int = 0) -> pd.DataFrame:
    """How mixed the two domains are, on the points of ``umap_panels`` (the same draw) but in the full feature space:
    per run, the share of each sketch's ``k`` nearest neighbours (cosine, among the drawn sketches and photos) that
    are photos, the same for photos (sketch neighbours), and both shares if the domains were mixed at random
    (the other domain's share of the remaining points)."""
    rows = []
    for label, x, _, domains in umap_points(runs, per_class=per_class, seed=seed):
        n = len(x)
        kk = max(1, min(k, n - 1))
        sim = x @ x.T
        np.fill_diagonal(sim, -np.inf)
        neighbours = np.argsort(-sim, axis=1, kind="stable")[:, :kk]
        other = domains[neighbours] != domains[:, None]
        row = {"run": label, "k": kk}
        for domain, other_name in (("sketch", "photo"), ("photo", "sketch")):
            mine = domains == domain
            row[f"{PLURAL[other_name]} among a {domain}'s neighbours"] = float(other[mine].mean())
            row[f"{PLURAL[other_name]} if mixed ({domain})"] = float((domains == other_name).sum() / (n - 1))
        rows.append(row)
    return pd.DataFrame(rows).set_index("run")


def channel_profiles(runs: dict[str, dict], *, seed: int = 0, lambda_da: dict | None = None):
    """(figure, table): per run (titled by ``run_title``), the channel softmax of each sample sorted in decreasing
    order (mean and 10-90th percentile band) for sketches and photos in the palette's domain colours and for Gaussian
    draws; and the L_DA value (``losses.alignment_kl`` against fresh N(0, I) draws) of each run's features per
    domain."""
    gen = torch.Generator().manual_seed(seed)
    fig, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 3.6), sharey=True, squeeze=False)
    rows = []
    for ax, (label, feats) in zip(axes[0], runs.items()):
        for domain in ("sketch", "photo"):
            f, colour = feats[domain][0], palette_colour("domain", domain)
            profile = -np.sort(-channel_softmax(f), axis=1)
            rank = np.arange(1, profile.shape[1] + 1)  # channel rank counted from 1 (a log axis drops 0)
            ax.plot(rank, profile.mean(0), color=colour, label=display_name("domain", domain))
            ax.fill_between(rank, *np.percentile(profile, [10, 90], axis=0), color=colour,
                            alpha=0.2)
            z = torch.randn(f.shape, generator=gen)
            rows.append({"run": label, "domain": domain,
                         "L_DA on test features": float(alignment_kl(torch.from_numpy(f), z))})
        z = torch.randn(f.shape, generator=gen).numpy()
        ax.plot(rank, -np.sort(-channel_softmax(z), axis=1).mean(0), "k--", label="softmax of N(0, I)")
        ax.set(xscale="log", yscale="log", xlabel="channel rank", title=run_title(label, lambda_da))
    axes[0][0].set_ylabel("softmax probability")
    axes[0][0].legend(fontsize=9)
    fig.tight_layout()
    table = pd.DataFrame(rows).pivot(index="run", columns="domain", values="L_DA on test features")
    return fig, table


GAP_MEASURES = {"mmd": "squared MMD", "frechet": "Fréchet distance"}


def domain_gaps(runs: dict[str, dict], class_names, *, seed: int = 0, lambda_da: dict | None = None):
    """(table, figure): MMD and Frechet distance between sketch and photo features, overall and per
    class, side by side for the runs (one legend above the panels, runs named by ``run_title``; with ``lambda_da``,
    the bars in the palette's colours of L_DA on and off)."""
    gap = pd.concat({label: gap_table(*feats["sketch"], *feats["photo"], class_names=class_names, seed=seed)
                     for label, feats in runs.items()}, axis=1)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, (measure, name) in zip(axes, GAP_MEASURES.items()):
        shown = gap.xs(measure, axis=1, level=1).rename(index={"(all)": "whole split"})
        colours = ([palette_colour("lda", lda_key(lambda_da[r])) for r in shown.columns]
                   if lambda_da and all(r in lambda_da for r in shown.columns) else None)
        shown.rename(columns=lambda r: run_title(r, lambda_da)).plot.bar(ax=ax, width=0.75, legend=False,
                                                                         color=colours)
        ax.set(title=f"sketch-photo {name} (smaller: closer)", xlabel="", ylabel=name)
        ax.tick_params(axis="x", rotation=90, labelsize=9)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="upper center", ncol=len(runs), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return gap, fig


def _closer(new: float, old: float, tolerance: float = 0.02) -> str:
    """'smaller', 'larger' or 'about the same' (within ``tolerance``, relative)."""
    if abs(new - old) <= tolerance * abs(old):
        return "about the same"
    return "smaller" if new < old else "larger"


def sentences(lda_values: pd.DataFrame, gap: pd.DataFrame, mixing: pd.DataFrame | None = None, *,
              baseline: str | None = None, aligned: str | None = None, floor: float | None = None,
              dim: int | None = None, history: list[dict] | None = None, weight: float | None = None,
              digits: int = 3) -> list[str]:
    """02's closing sentences, computed from its tables: what the domain gap (``domain_gaps``) does with L_DA over the
    whole split and per class, how mixed the domains are (``domain_mixing``, the UMAP's points), and where the L_DA
    term of the test features (``channel_profiles``) lies against its floor ``floor`` (F_D at width ``dim``) and, with
    the aligned run's training ``history`` and L_DA ``weight``, what the term did on its training batches.
    ``baseline`` and ``aligned`` name the runs without and with L_DA; without them, each run's values are listed."""
    from .closing import count_of, listed, percent_change, signed

    runs = list(lda_values.index)
    if baseline not in runs or aligned not in runs:
        return _listed_sentences(lda_values, gap, digits)
    out = []
    overall = gap.loc["(all)"]
    mmd = overall[(baseline, "mmd")], overall[(aligned, "mmd")]
    fr = overall[(baseline, "frechet")], overall[(aligned, "frechet")]
    moves = {_closer(mmd[1], mmd[0]), _closer(fr[1], fr[0])}
    verdict = ("the two domains are closer with L_DA" if moves == {"smaller"} else
               "the two domains are further apart with L_DA" if moves == {"larger"} else
               "L_DA leaves the gap about where it was" if moves == {"about the same"} else
               "the two measures disagree on the direction")
    out.append(f"Sketch-photo mmd over the whole split (squared MMD, section 3): {mmd[0]:.{digits}f} without L_DA "
               f"({baseline}) and {mmd[1]:.{digits}f} with it ({aligned}), {percent_change(mmd[1], mmd[0])}; the "
               f"Fréchet distance {fr[0]:.{digits}f} against {fr[1]:.{digits}f}, {percent_change(fr[1], fr[0])}: over "
               f"the whole split {verdict} (one training seed; 05 tests over seeds what it does to retrieval).")
    per_class = gap.drop(index="(all)")
    if len(per_class):
        wider = {m: list(per_class.index[per_class[(aligned, m)] > per_class[(baseline, m)]])
                 for m in ("mmd", "frechet")}
        both = [c for c in wider["mmd"] if c in wider["frechet"]]
        n, k, f = len(per_class), len(wider["mmd"]), len(wider["frechet"])
        mixed = 0 < k < n or 0 < f < n
        out.append(("Per class the picture is mixed: " if mixed else "Per class: ")
                   + f"{count_of(k, n, 'classes')} get a larger squared MMD with L_DA"
                   + (f" ({listed(wider['mmd'])})" if 0 < k < n else "")
                   + f" and {f} of {n} a larger Fréchet distance" + (f" ({listed(wider['frechet'])})" if 0 < f < n else "")
                   + (f"; {listed(both)} by both" if both and mixed else "")
                   + ". L_DA never compares a sketch with a photo (each feature is pulled towards its own random "
                     "draw), so nothing in it aims at a class's gap.")
    if mixing is not None and {baseline, aligned} <= set(mixing.index):
        key, ref = "photos among a sketch's neighbours", "photos if mixed (sketch)"
        a, b = mixing.loc[baseline], mixing.loc[aligned]
        chance = b[ref]
        ratio = max(a[key], b[key]) / chance if chance else 0.0
        shape = ("the sketches form islands apart from the photos in both runs" if ratio < 0.5 else
                 "the two domains are mixed in both runs" if min(a[key], b[key]) >= 0.8 * chance else
                 "the two domains are partly mixed")
        out.append(f"The UMAP panels in numbers (section 1, on the same points but in the full feature space): of each "
                   f"sketch's {int(b['k'])} nearest neighbours, {a[key]:.0%} are photos without L_DA and {b[key]:.0%} "
                   f"with it, where {chance:.0%} would mean the domains are mixed at random: {shape}.")
    if {"sketch", "photo"} <= set(lda_values.columns):
        out.append(_lda_sentence(lda_values, baseline, aligned, floor, dim, history, weight, digits))
    return out


def _lda_sentence(lda_values: pd.DataFrame, baseline: str, aligned: str, floor, dim, history, weight,
                  digits: int) -> str:
    from .closing import signed

    v = lda_values
    d = {dom: v.loc[aligned, dom] - v.loc[baseline, dom] for dom in ("sketch", "photo")}
    text = (f"The L_DA term on the test features (section 2), without and with L_DA training: sketches "
            f"{v.loc[baseline, 'sketch']:.{digits}f} and {v.loc[aligned, 'sketch']:.{digits}f} "
            f"({signed(d['sketch'], digits)}), photos {v.loc[baseline, 'photo']:.{digits}f} and "
            f"{v.loc[aligned, 'photo']:.{digits}f} ({signed(d['photo'], digits)})")
    rising = [PLURAL[dom] for dom in ("sketch", "photo") if round(d[dom], digits) > 0]
    if rising:
        text += f": for {' and '.join(rising)} it is higher in the run trained to lower it"
    trained = [h for h in (history or []) if h.get("loss_da") == h.get("loss_da") and "loss_da" in h]
    if len(trained) >= 2:
        lda = [h["loss_da"] for h in trained]
        low = int(np.argmin(lda))
        text += (f". On its training batches (the run's history) L_DA went from {lda[0]:.{digits}f} in epoch 1 to "
                 + (f"{lda[low]:.{digits}f} in epoch {low + 1} and back up to " if 0 < low < len(lda) - 1 else "")
                 + f"{lda[-1]:.{digits}f} in epoch {len(lda)}")
        last = trained[-1]
        if weight and last.get("loss_total"):
            share = weight * last["loss_da"] / last["loss_total"]
            text += (f"; weighted by {weight:g} it made {share:.0%} of the last epoch's total loss"
                     + (", so the other terms (class, distillation) decide where the features go"
                        if share < 0.1 else ""))
    if floor is not None:
        above = {run: float(np.mean(v.loc[run, ["sketch", "photo"]].to_numpy(dtype=float) - floor))
                 for run in (baseline, aligned)}
        lo, hi = float((v.to_numpy(dtype=float) - floor).min()), float((v.to_numpy(dtype=float) - floor).max())
        same = abs(above[aligned] - above[baseline]) <= 0.1 * max(abs(above[baseline]), 1e-12)
        text += (f". Every value lies {lo:.2f} to {hi:.2f} above the floor F_D = {floor:.{digits}f}"
                 + (f" of D = {dim} channels" if dim else "") + " that no feature can go below (the method card), "
                 f"{above[baseline]:.2f} on average without L_DA and {above[aligned]:.2f} with it: "
                 + ("training with L_DA leaves the channel profiles about as far from flat as training without it"
                    if same else "L_DA training " + ("flattens" if above[aligned] < above[baseline] else "sharpens")
                    + " the channel profiles of unseen classes"))
    return text + "."


def _listed_sentences(lda_values: pd.DataFrame, gap: pd.DataFrame, digits: int) -> list[str]:
    """Each run's L_DA values and whole-split gaps, for runs not given as a with/without pair."""
    out = [f"{run}: L_DA on the test features is {row['sketch']:.{digits}f} for sketches and "
           f"{row['photo']:.{digits}f} for photos." for run, row in lda_values.iterrows()]
    overall = gap.loc["(all)"]
    for measure in ("mmd", "frechet"):
        values = {run: overall[(run, measure)] for run in lda_values.index if (run, measure) in overall.index}
        if len(values) >= 2:
            listed = ", ".join(f"{run} {v:.{digits}f}" for run, v in values.items())
            out.append(f"Sketch-photo {measure} over the whole split: {listed}; the smallest gap is "
                       f"{min(values, key=values.get)}.")
    return out
