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
from ..viz import embedding_scatter


def per_class_subsample(labels, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of at most ``per_class`` items of every class, drawn at random."""
    labels = np.asarray(labels)
    return np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)])


def umap_panels(runs: dict[str, dict], class_names, *, per_class: int = 60, neighbors: int = 15, seed: int = 0):
    """One UMAP panel per run of the L2-normalised sketch (x) and photo (o) features, coloured by class."""
    import umap

    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 5), squeeze=False)
    for ax, (label, feats) in zip(axes[0], runs.items()):
        (s, sl), (p, pl) = feats["sketch"], feats["photo"]
        si, pi = per_class_subsample(sl, per_class, rng), per_class_subsample(pl, per_class, rng)
        x = np.concatenate([s[si], p[pi]])
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        # n_jobs=1 is what a seed implies anyway: UMAP would otherwise warn (a stderr box in the report)
        points = umap.UMAP(n_neighbors=neighbors, random_state=seed, n_jobs=1).fit_transform(x)
        names = [class_names[c] for c in np.concatenate([sl[si], pl[pi]])]
        embedding_scatter(points, names, ["sketch"] * len(si) + ["photo"] * len(pi), ax=ax, title=label)
    fig.tight_layout()
    return fig


def channel_profiles(runs: dict[str, dict], *, seed: int = 0):
    """(figure, table): per run, the channel softmax of each sample sorted in decreasing order (mean and
    10-90th percentile band) for sketches, photos and Gaussian draws; and the L_DA value
    (``losses.alignment_kl`` against fresh N(0, I) draws) of each run's features per domain."""
    gen = torch.Generator().manual_seed(seed)
    fig, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 3.6), sharey=True, squeeze=False)
    rows = []
    for ax, (label, feats) in zip(axes[0], runs.items()):
        for domain, colour in (("sketch", "C0"), ("photo", "C1")):
            f = feats[domain][0]
            profile = -np.sort(-channel_softmax(f), axis=1)
            ax.plot(profile.mean(0), color=colour, label=domain)
            ax.fill_between(np.arange(profile.shape[1]), *np.percentile(profile, [10, 90], axis=0), color=colour,
                            alpha=0.2)
            z = torch.randn(f.shape, generator=gen)
            rows.append({"run": label, "domain": domain,
                         "L_DA on test features": float(alignment_kl(torch.from_numpy(f), z))})
        z = torch.randn(f.shape, generator=gen).numpy()
        ax.plot(-np.sort(-channel_softmax(z), axis=1).mean(0), "k--", label="softmax of N(0, I)")
        ax.set(xscale="log", yscale="log", xlabel="channel rank", title=label)
    axes[0][0].set_ylabel("softmax probability")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    table = pd.DataFrame(rows).pivot(index="run", columns="domain", values="L_DA on test features")
    return fig, table


def domain_gaps(runs: dict[str, dict], class_names, *, seed: int = 0):
    """(table, figure): MMD and Frechet distance between sketch and photo features, overall and per
    class, side by side for the runs."""
    gap = pd.concat({label: gap_table(*feats["sketch"], *feats["photo"], class_names=class_names, seed=seed)
                     for label, feats in runs.items()}, axis=1)
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
    for ax, measure in zip(axes, ("mmd", "frechet")):
        gap.xs(measure, axis=1, level=1).plot.bar(ax=ax)
        ax.set_title(measure)
        ax.tick_params(axis="x", rotation=90, labelsize=7)
    fig.tight_layout()
    return gap, fig


def sentences(lda_values: pd.DataFrame, gap: pd.DataFrame, digits: int = 3) -> list[str]:
    """What the L_DA values and domain gaps of two or more runs show, as computed sentences."""
    out = []
    for run, row in lda_values.iterrows():
        out.append(f"{run}: L_DA on the test features is {row['sketch']:.{digits}f} for sketches and "
                   f"{row['photo']:.{digits}f} for photos.")
    overall = gap.loc["(all)"]
    for measure in ("mmd", "frechet"):
        values = {run: overall[(run, measure)] for run in lda_values.index if (run, measure) in overall.index}
        if len(values) >= 2:
            lowest = min(values, key=values.get)
            listed = ", ".join(f"{run} {v:.{digits}f}" for run, v in values.items())
            out.append(f"Sketch-photo {measure} over the whole split: {listed}; the smallest gap is {lowest}.")
    return out
