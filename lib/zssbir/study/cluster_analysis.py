"""What notebook 03 computes on one run's unseen features beyond the grid: cluster quality against the
classes over K, the fuse-weight sweep, the cluster each query is nearest to, what 01 recorded for the run, its
figures (one colour scale for the heat maps), and the sentences that close the notebook."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .. import paths
from ..eval.cluster_grid import cluster_stats
from ..eval.cluster_retrieval import ClusterIndex, DEFAULT_SEED, evaluate_clustered
from ..viz import metric_name, palette_colour
from .closing import count_of, listed, signed


def cluster_quality(gallery, gallery_labels, Ks: Sequence[int]) -> pd.DataFrame:
    """Purity, NMI and ARI of k-means (M = 1) clusters of the gallery against its classes, per K
    (K above the gallery size is left out)."""
    rows = []
    for K in sorted(Ks):
        if K <= len(gallery):
            stats = cluster_stats(ClusterIndex.fit(gallery, 1, K).codes[:, 0], gallery_labels)
            rows.append({"K": K, **{m: stats[m] for m in ("purity", "nmi", "ari")}})
    return pd.DataFrame(rows).set_index("K")


def fuse_sweep(query, gallery, query_labels, gallery_labels, M: int, K: int, weights: Sequence[float],
               **evaluate_kwargs) -> pd.DataFrame:
    """Cluster-then-retrieve "fuse" scores for each fuse weight (one row per weight, a column per metric)."""
    return pd.DataFrame([{"fuse_weight": w, **{m: r.value for m, r in evaluate_clustered(
        query, gallery, query_labels, gallery_labels, M, K, variant="fuse", fuse_weight=w, **evaluate_kwargs).items()}}
        for w in weights]).set_index("fuse_weight")


def nearest_clusters(query, query_labels, gallery, gallery_labels, K: int, index: ClusterIndex | None = None
                     ) -> pd.DataFrame:
    """Per query: the k-means cluster (M = 1, K centroids, the default seed; or the given M = 1 ``index`` of the
    gallery) nearest to it (the cluster whose photos its ADC ranks first), that cluster's size, and the share of its
    photos in the query's class."""
    index = index or ClusterIndex.fit(gallery, 1, K)
    cells, gl = index.codes[:, 0], np.asarray(gallery_labels)
    nearest = cells[index.adc(query).argmin(axis=1)]
    sizes = np.bincount(cells, minlength=K)
    same = np.array([np.mean(gl[cells == c] == y) for c, y in zip(nearest, np.asarray(query_labels))])
    return pd.DataFrame({"class": np.asarray(query_labels), "cluster": nearest, "cluster size": sizes[nearest],
                         "share of its class": same})


def scored_in_01(run_name: str, results_dir: str | Path | None = None) -> dict | None:
    """What ``01_train`` recorded for this run's cluster-then-retrieve (``<run>__cluster.json``): M, K, variant,
    mAP@all (the mean over k-means seeds), its value per k-means seed and the seeds; None when it has no record."""
    path = Path(results_dir or paths.runs_dir() / "results") / f"{run_name}__cluster.json"
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    retrieval, metric = record["params"]["retrieval"], record["metrics"].get("map@all", {})
    return {"M": int(retrieval["M"]), "K": int(retrieval["K"]), "variant": retrieval["variant"],
            "map@all": metric.get("value"), "per_kmeans_seed": metric.get("per_kmeans_seed", []),
            "kmeans_seeds": metric.get("kmeans_seeds", [])}


def skipped_note(table: pd.DataFrame):
    """Markdown naming the grid points that could not be fitted (``grid``'s skipped rows) and why; None (nothing
    shown) when every point was scored."""
    from IPython.display import Markdown

    skipped = table[table["skipped"]].drop_duplicates(["M", "K"])
    if not len(skipped):
        return None
    return Markdown("Not scored (blank in the heat maps): " + "; ".join(
        f"M={int(r.M)} K={int(r.K)}: {r.reason}" for r in skipped.itertuples()) + ".")


def over_seeds(frame: pd.DataFrame, dataset: str, metrics: Sequence[str] = ("map@all", "prec@100"),
               digits: int = 3) -> pd.DataFrame:
    """The rows of a ``tables.study_frame`` (already narrowed to what the page compares) as 'mean ± std (n seeds)'
    of ``metrics``, in the study's row order (``tables.study_table`` has every metric and the conventions)."""
    from .results import mean_std_text, summary_table
    from .tables import for_dataset

    part = for_dataset(frame, dataset, list(metrics))
    text = mean_std_text(summary_table(part, ["row"]), digits=digits, unit="seed")
    return text.reindex(list(dict.fromkeys(part["row"])))[[m for m in metrics if m in text.columns]]


# ------------------------------------------------------------------------------------------------ figures
def quality_figure(quality: pd.DataFrame, n_classes: int, used_K: int | None = None):
    """Purity, NMI and ARI of the gallery's k-means clusters over K (integer ticks), with K = number of classes and
    the K that 01 uses marked."""
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for column, name in (("purity", "purity"), ("nmi", "NMI"), ("ari", "ARI")):
        ax.plot(quality.index, quality[column], marker="o", label=name)
    ax.axvline(n_classes, color="grey", ls=":", label=f"K = {n_classes} classes")
    if used_K is not None and used_K != n_classes:
        ax.axvline(used_K, color="black", ls="--", lw=1, label=f"K = {used_K} (01's setting)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(quality.index), [str(k) for k in quality.index])
    ax.minorticks_off()
    ax.set(xlabel="K (k-means clusters of the gallery, M = 1)", ylabel="against the unseen classes", ylim=(0, 1.02),
           title="Do the gallery's clusters match the classes?")
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def grid_heatmaps(grid: pd.DataFrame, exact_map: float, variants: Sequence[str] = ("adc", "rerank"),
                  metric: str = "map@all", used: dict | None = None):
    """One heat map of ``metric`` over M x K per variant (ties random for adc, by exact distance for rerank), on ONE
    colour scale with one colour bar (exact retrieval marked on it, named in its palette colour); 01's setting
    framed."""
    import seaborn as sns

    shown = grid[(grid["metric"] == metric) & (grid["ties"] != "stable") & grid["variant"].isin(variants)]
    heats = {v: shown[shown["variant"] == v].pivot(index="M", columns="K", values="value") for v in variants}
    values = np.concatenate([h.to_numpy(dtype=float).ravel() for h in heats.values()] + [[exact_map]])
    vmin, vmax = np.nanmin(values), np.nanmax(values)
    fig, axes = plt.subplots(1, len(variants) + 1, figsize=(6 * len(variants) + 0.8, 3.9),
                             gridspec_kw={"width_ratios": [1] * len(variants) + [0.05]})
    for ax, (variant, heat) in zip(axes, heats.items()):
        sns.heatmap(heat, annot=True, fmt=".3f", cmap="viridis", vmin=vmin, vmax=vmax, ax=ax, cbar=False,
                    annot_kws={"fontsize": 9})
        ax.set_title(f"{variant}: {metric_name(metric)}")
        if used and used["variant"] == variant and used["M"] in heat.index and used["K"] in heat.columns:
            r, c = list(heat.index).index(used["M"]), list(heat.columns).index(used["K"])
            ax.add_patch(plt.Rectangle((c, r), 1, 1, fill=False, edgecolor="white", lw=2.5))
    bar = fig.colorbar(axes[0].collections[0], cax=axes[-1])
    bar.set_label(f"{metric_name(metric)} (one scale for both)")
    bar.ax.axhline(exact_map, color="white", lw=2)
    bar.ax.text(-0.3, exact_map, "exact", ha="right", va="center", fontsize=9, transform=bar.ax.get_yaxis_transform(),
                color=palette_colour("procedure", "exact"))
    fig.suptitle(f"cluster-then-retrieve over M x K on the unseen classes (exact retrieval {exact_map:.3f}"
                 + (f"; framed: 01's setting" if used else "") + ")", fontsize=10)
    fig.tight_layout()
    return fig


def sweep_figure(sweep: pd.DataFrame, M: int, K: int):
    """The fuse sweep: each metric over the fuse weight lambda_f, metric names as the tables write them."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for column in sweep.columns:
        ax.plot(sweep.index, sweep[column], marker="o", label=metric_name(column))
    ax.set(xlabel="fuse weight λ_f (0: cluster-then-retrieve alone, 1: exact retrieval)", ylabel="score",
           title=f"fuse weight sweep (M = {M}, K = {K})")
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------ closing prose
def cluster_sentences(exact_map: float, quality: pd.DataFrame, grid: pd.DataFrame, sweep: pd.DataFrame,
                      ties: pd.DataFrame, n_classes: int, *, used: dict | None = None,
                      nearest: pd.DataFrame | None = None, few: float = 0.1, digits: int = 3) -> list[str]:
    """03's closing sentences, computed from its tables: the gallery's cluster quality at the K used (the
    transductive part), the grid's best point (picked on the test split: an oracle choice) and 01's setting in it,
    01's number over k-means seeds against the heat map's one seed, the fuse sweep, the tie rules, and where the
    queries land (``nearest``: ``nearest_clusters``, with a ``shown`` column for the examples of section 5)."""
    out = [_transductive(exact_map, quality, n_classes, used, digits)]
    out += _grid_sentences(exact_map, grid, used, digits)
    if "map@all" in sweep and len(sweep) > 1:
        values = sweep["map@all"]
        w, lo, hi = values.idxmax(), values.index.min(), values.index.max()
        where = ("at λ_f = 0, cluster-then-retrieve alone: on this run mixing in the exact distance only dilutes the "
                 "cluster ranking" if w == lo else
                 f"at λ_f = {hi:g}, exact retrieval alone: the cluster ranking does not help this run" if w == hi else
                 f"at λ_f = {w:g}, between the ends: some exact distance helps order the photos inside a cell")
        out.append(f"The fuse sweep (section 3) runs from {values[lo]:.{digits}f} at λ_f = {lo:g} to "
                   f"{values[hi]:.{digits}f} at λ_f = {hi:g} and peaks {where} (mAP@all {values[w]:.{digits}f}).")
    out += _tie_sentences(ties, digits)
    if nearest is not None and len(nearest):
        gains = grid[(grid["metric"] == "map@all") & (grid["ties"] != "stable")]["value"].max() > exact_map
        out.append(_nearest_sentence(nearest, quality, n_classes, few, gains))
    return out


def _transductive(exact_map, quality, n_classes, used, digits) -> str:
    text = (f"Cluster-then-retrieve is transductive: its k-means is fitted on the test gallery, so it uses the photos' "
            f"structure among themselves, which exact retrieval (mAP@all {exact_map:.{digits}f}) does not")
    why = {}
    for K, reason in ((used["K"] if used else None, "the K 01 uses"), (n_classes, "the number of classes")):
        if K is not None and K in quality.index:
            why.setdefault(K, []).append(reason)
    parts = [f"purity {quality.loc[K, 'purity']:.{digits}f} and NMI {quality.loc[K, 'nmi']:.{digits}f} at K = {K} "
             f"({', '.join(reasons)})" for K, reasons in why.items()]
    if parts:
        text += ("; the gallery's k-means clusters (M = 1, section 1) match the unseen classes with "
                 + " and ".join(parts) + ": the purer the clusters, the more a sketch that lands near its class's centroid gains over exact "
                 "search, and the more that gain measures this gallery rather than the method")
    return text + "."


def _grid_sentences(exact_map, grid, used, digits) -> list[str]:
    maps = grid[(grid["metric"] == "map@all") & (grid["ties"] != "stable")].dropna(subset=["value"])
    if not len(maps):
        return []
    best = maps.loc[maps["value"].idxmax()]
    above = int((maps["value"] > exact_map).sum())
    out = [f"The best of the {len(maps)} grid points (section 2) is {best['variant']} M={int(best['M'])} "
           f"K={int(best['K'])} at mAP@all {best['value']:.{digits}f}, {signed(best['value'] - exact_map, digits)} "
           f"against exact retrieval, and {count_of(above, len(maps), 'points')} beat exact retrieval. That best point "
           "is picked on the test split itself, as the released logs pick theirs: an optimistic, oracle choice, not "
           "an estimate for a new gallery; the study's claims (05) use 01's setting, fixed before any test number."]
    if not used:
        return out
    setting = f"{used['variant']} M={used['M']} K={used['K']}"
    cell = maps[(maps["variant"] == used["variant"]) & (maps["M"] == used["M"]) & (maps["K"] == used["K"])]
    if not len(cell):
        return out + [f"01's setting ({setting}) is not on this grid."]
    value, mean = float(cell["value"].iloc[0]), used.get("map@all")
    rank = int((maps["value"] > value).sum()) + 1
    text = (f"01's setting, {setting}, gives {value:.{digits}f} in the heat map (framed; rank {rank} of {len(maps)} "
            f"points)")
    seeds, per_seed = used.get("kmeans_seeds") or [], used.get("per_kmeans_seed") or []
    if mean is not None and len(seeds) > 1:
        spread = f"; {min(per_seed):.{digits}f} to {max(per_seed):.{digits}f}" if per_seed else ""
        agree = round(mean, digits) == round(value, digits)
        text += (f". 01 reports {mean:.4f} for this run: the mean over {len(seeds)} k-means seeds ({seeds[0]} to "
                 f"{seeds[-1]}{spread}), while the heat map fits k-means once, with seed {DEFAULT_SEED}"
                 + ("; here the two agree" if agree else
                    f", so the two numbers differ by {abs(mean - value):.{digits}f}: the k-means seed, not an error"))
    elif mean is not None:
        text += f"; 01 reports {mean:.4f} for it"
    return out + [text + "."]


def _tie_sentences(ties: pd.DataFrame, digits: int) -> list[str]:
    out = []
    for scores, rows in ties.groupby("scores", sort=False):
        random = rows[rows["tie rule"].str.startswith("random")]["map@all"]
        stable = rows[rows["tie rule"].str.startswith("stable")]["map@all"]
        rerank = rows[rows["tie rule"].str.startswith("rerank")]["map@all"]
        if not (len(random) and len(stable)):
            continue
        text = (f"With {scores} (section 4), random tie orders spread mAP@all by "
                f"{random.max() - random.min():.{digits}f} (max - min over {len(random)} orders); the stable order (gallery index) gives "
                f"{signed(stable.iloc[0] - random.mean(), digits)} against their mean"
                + (f" and ordering the ties by exact distance {signed(rerank.iloc[0] - random.mean(), digits)}"
                   if len(rerank) else ""))
        if abs(stable.iloc[0] - random.mean()) > 2 * max(random.max() - random.min(), 10 ** -digits):
            text += (": the list order alone moves the number by more than chance does, which is why the study draws "
                     "ties at random and says so")
        out.append(text + ".")
    return out


def _nearest_sentence(nearest: pd.DataFrame, quality: pd.DataFrame, n_classes: int, few: float, gains: bool) -> str:
    shown = nearest[nearest["shown"]] if "shown" in nearest else nearest.iloc[:0]
    text = ""
    if len(shown):
        low = shown[shown["share of its class"] <= few]
        text = (f"In section 5, {count_of(len(low), len(shown), 'example sketches')} are nearest to a cluster in "
                f"which at most {few:.0%} of the photos are of their class"
                + (f" ({listed(f'{v:.0%}' for v in low['share of its class'])})" if len(low) else "") + "; ")
    wrong = float((nearest["share of its class"] <= 0.5).mean())
    text += (f"over all {len(nearest)} unseen sketches, {wrong:.0%} are nearest to a cluster where their class holds "
             "at most half of the photos")
    if n_classes in quality.index:
        text += (f", although at this K the clusters are {quality.loc[n_classes, 'purity']:.0%} pure: the photos "
                 "cluster by class better than the sketches find their class's cluster, so the misses come from where "
                 "the sketches land (the domain gap of 02), not from how the photos cluster")
    if gains and wrong > 0.5:
        text += (". That cluster-then-retrieve still beats exact retrieval is the rest of the list: AP counts every "
                 "rank, and past the first cell pure clusters bring a class's photos as one block")
    return text[0].upper() + text[1:] + "."
