"""Scoring a trained run: its cached features of a split, exact and cluster-then-retrieve scores, results files.

A run's results are one JSON per retrieval procedure (exact, or cluster-then-retrieve with its
M, K and variant), named ``<run name>__<retrieval>``, so tables can group them freely.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..training.config import TrainConfig
from ..data.datasets import load_split
from ..training.features import cached_features
from ..models.factory import transforms_for
from .results import write_results


def split_features(model, config: TrainConfig, split: str = "zero", device: str = "auto",
                   progress: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"sketch": (features, labels), "photo": (features, labels)} of a split, through the feature cache."""
    tf = transforms_for(model, config, train=False)
    model = model.eval()
    out = {}
    for domain in ("sketch", "photo"):
        ds = load_split(config.dataset, split, domain, data_root=config.data_root, transform=tf[domain],
                        duplicates=config.list_duplicates)
        out[domain] = cached_features(model.embed, model, ds, device=device, progress=progress)
    return out


def unseen_map_all(model, config: TrainConfig, device: str = "auto") -> tuple[float, dict]:
    """Exact-retrieval mAP@all (clusterretri preset) of ``model`` on the unseen split, and the features it ranked."""
    from ..eval.exact_search import evaluate_features

    feats = split_features(model, config, "zero", device=device)
    (q, ql), (g, gl) = feats["sketch"], feats["photo"]
    return float(evaluate_features(q, g, ql, gl, preset="clusterretri")["map@all"].value), feats


def record(name: str, config: TrainConfig, metrics: dict, *, retrieval: dict, extra: dict | None = None,
           label: str | None = None) -> Path:
    """One results JSON: training parameters + the retrieval procedure (+ a readable row label for the
    tables); metrics carry their conventions."""
    params = {"train": config.to_dict(), "retrieval": retrieval, "method": config.method, "dataset": config.dataset,
              "protocol": config.protocol}
    if label:
        params["label"] = label
    return write_results(name, params=params, metrics=metrics, seed=config.seed, extra=extra)


KMEANS_SEEDS = 5  # k-means seeds cluster-then-retrieve is scored over (the authors' seed 123 and the next four)


def cluster_over_seeds(query, gallery, query_labels, gallery_labels, M: int, K: int, variant: str, *,
                       preset: str = "clusterretri", kmeans_seeds: int = KMEANS_SEEDS, ties: str | None = None) -> dict:
    """Cluster-then-retrieve scored with ``kmeans_seeds`` k-means seeds (``DEFAULT_SEED`` + 0, 1, ...): per metric
    the mean as ``value`` (what tables show), the value of every seed, their standard deviation and the seeds."""
    from ..eval.cluster_retrieval import DEFAULT_SEED, evaluate_clustered

    if kmeans_seeds < 1:
        raise ValueError(f"kmeans_seeds must be at least 1, got {kmeans_seeds}")
    seeds = [DEFAULT_SEED + i for i in range(kmeans_seeds)]
    runs = [evaluate_clustered(query, gallery, query_labels, gallery_labels, M, K, variant=variant, preset=preset,
                               seed=s, ties=ties) for s in seeds]
    out = {}
    for metric in runs[0]:
        values = [r[metric].value for r in runs]
        out[metric] = {"value": float(np.mean(values)), "convention": runs[0][metric].convention,
                       "kmeans_seeds": seeds, "per_kmeans_seed": values,
                       "std_over_kmeans_seeds": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}
    return out


def score_and_record(model, config: TrainConfig, name: str, *, preset: str = "clusterretri",
                     cluster: tuple[int, int, str] | None = None, label: str | None = None,
                     extra: dict | None = None, device: str = "auto", kmeans_seeds: int = KMEANS_SEEDS,
                     transductive: bool = False) -> dict[str, Path]:
    """Score a trained run on the unseen split by exact retrieval and, with ``cluster=(M, K, variant)``,
    cluster-then-retrieve over ``kmeans_seeds`` k-means seeds (``cluster_over_seeds``); write one results JSON
    per procedure (``<name>__exact``, ``<name>__cluster``) and return their paths by procedure. At M = 1,
    where every photo of a cluster ties, "adc" and "fuse" are also scored with stable ties
    (``<name>__cluster_stable``), beside the default random order. With a cluster setting and ``transductive``,
    the generic transductive re-ranker (``eval.transductive``: gallery augmentation and query expansion, no
    clustering) is scored too (``<name>__transductive``): the control that tells clustering from transduction."""
    from ..eval.exact_search import evaluate_features
    from ..eval.transductive import DEFAULT_ALPHA, DEFAULT_K, evaluate_transductive

    feats = split_features(model, config, "zero", device=device)
    (q, ql), (g, gl) = feats["sketch"], feats["photo"]
    out = {"exact": record(f"{name}__exact", config, evaluate_features(q, g, ql, gl, preset=preset),
                           retrieval={"kind": "exact", "metric": "cosine"}, extra=extra,
                           label=label and f"{label}, exact")}
    if cluster is not None:
        M, K, variant = cluster
        tie_orders = [("cluster", None)] + ([("cluster_stable", "stable")] if M == 1 and variant != "rerank" else [])
        for key, ties in tie_orders:
            suffix = ", stable ties" if ties else ""
            out[key] = record(f"{name}__{key}", config,
                              cluster_over_seeds(q, g, ql, gl, M, K, variant, preset=preset, kmeans_seeds=kmeans_seeds,
                                                 ties=ties), extra=extra,
                              retrieval={"kind": "cluster", "M": M, "K": K, "variant": variant,
                                         "kmeans_seeds": kmeans_seeds, **({"ties": ties} if ties else {})},
                              label=label and f"{label}, cluster M={M} K={K} {variant}{suffix}")
        if transductive:
            out["transductive"] = record(
                f"{name}__transductive", config,
                evaluate_transductive(q, g, ql, gl, k=DEFAULT_K, alpha=DEFAULT_ALPHA, preset=preset), extra=extra,
                retrieval={"kind": "transductive", "k": DEFAULT_K, "alpha": DEFAULT_ALPHA},
                label=label and f"{label}, query expansion + gallery augmentation")
    return out


CHANCE_LABEL = "chance (random ranking)"


def chance_metrics(dataset: str, seed: int, *, preset: str = "clusterretri", data_root: str | None = None,
                   duplicates: str = "drop") -> dict:
    """The metrics of a uniformly random ranking of the unseen split (its lists read with ``duplicates``):
    every photo gets the same score and ties are ordered randomly (``seed``), scored under ``preset``."""
    from ..eval.metrics import evaluate

    sketches = load_split(dataset, "zero", "sketch", data_root=data_root, check_files=False)
    photos = load_split(dataset, "zero", "photo", data_root=data_root, check_files=False, duplicates=duplicates)

    def tied(start: int, end: int) -> np.ndarray:
        return np.zeros((end - start, len(photos)), dtype=np.float32)

    return evaluate(tied, sketches.labels, photos.labels, preset=preset, ties="random", seed=seed)


def chance_level(dataset: str, *, seeds: int = 5, preset: str = "clusterretri", data_root: str | None = None,
                 duplicates: str = "drop") -> dict:
    """{metric: mean over ``seeds`` random rankings} of the unseen split (see ``chance_metrics``)."""
    values = [chance_metrics(dataset, s, preset=preset, data_root=data_root, duplicates=duplicates)
              for s in range(seeds)]
    return {m: float(np.mean([v[m].value for v in values])) for m in values[0]}


def record_chance(dataset: str, *, seeds: int = 5, preset: str = "clusterretri", data_root: str | None = None,
                  out_dir: str | Path | None = None) -> list[Path]:
    """The chance level as results files, one per seed (``chance_<dataset>_seed<s>``, row label
    ``CHANCE_LABEL``), so the tables show its mean ± std beside the runs."""
    params = {"method": "chance", "dataset": dataset, "label": CHANCE_LABEL, "retrieval": {"kind": "random"}}
    return [write_results(f"chance_{dataset}_seed{s}", params=params, seed=s, out_dir=out_dir,
                          metrics=chance_metrics(dataset, s, preset=preset, data_root=data_root))
            for s in range(seeds)]


def run_sentences(scores, chance: dict | None = None, digits: int = 3) -> list[str]:
    """One sentence per results file of a run (a ``results_frame``): its metrics, against chance when given; then,
    when the run has an exact row, what each other procedure changes in mAP@all against it."""
    from .tables import procedure_text

    out, map_all = [], {}
    for name, rows in scores.groupby("name", sort=False):
        values = dict(zip(rows["metric"], rows["value"]))
        parts = [f"{m} {v:.{digits}f}" + (f" (chance {chance[m]:.{digits}f})" if chance and m in chance else "")
                 for m, v in values.items()]
        first = rows.iloc[0]
        procedure = procedure_text(first["retrieval"], first["M"], first["K"], first["variant"], first["tie_order"])
        map_all[procedure] = values.get("map@all")
        out.append(f"{procedure}: " + ", ".join(parts) + ".")
    exact = map_all.pop("exact", None)
    moves = [f"{p} {signed(v - exact, digits)}" for p, v in map_all.items() if v is not None]
    if exact is not None and moves:
        out.append("Against exact retrieval, mAP@all moves by " + ", ".join(moves) + " on this run (one seed: the "
                   "grid below repeats it over seeds).")
    return out


def grid_sentences(frame, chance: dict | None = None, metric: str = "map@all", digits: int = 3) -> list[str]:
    """The closing sentences of a grid of runs (a ``tables.row_labels`` frame): the best and worst row by the mean of
    ``metric`` over seeds, how many rows clear chance, and the spread over seeds that a difference must exceed."""
    part = frame[frame["metric"] == metric]
    if part.empty:
        return [f"No results file of this grid has {metric}."]
    stats = part.groupby("row", sort=False)["value"].agg(["mean", "std", "count"]).sort_values("mean", ascending=False)

    def shown(row) -> str:
        s = stats.loc[row]
        spread = f" ± {s['std']:.{digits}f}" if s["count"] > 1 else ""
        return f"{row} ({s['mean']:.{digits}f}{spread}, {int(s['count'])} seed{'s' if s['count'] != 1 else ''})"

    out = [f"Of {len(stats)} rows, {metric} is highest for {shown(stats.index[0])} and lowest for "
           f"{shown(stats.index[-1])}."]
    if chance and metric in chance:
        clear = int((stats["mean"] - 2 * stats["std"].fillna(0) > chance[metric]).sum())
        out.append(f"Chance is {chance[metric]:.{digits}f}: {clear} of {len(stats)} rows lie more than two standard "
                   "deviations over seeds above it.")
    if stats["count"].max() > 1:
        widest = stats["std"].idxmax()
        out.append(f"The spread over seeds reaches {stats.loc[widest, 'std']:.{digits}f} ({widest}): differences "
                   "between rows smaller than that are not resolved by these seeds; 05_map_tables tests the papers' "
                   "claims paired over seeds.")
    else:
        out.append("With one seed per row no spread is measured, so no difference between rows is resolved here; "
                   "05_map_tables tests the papers' claims paired over seeds.")
    return out


def study_sentences(claims, conventions, spread, round_trip, digits: int = 3) -> list[str]:
    """The closing sentences of the study's tables (05_map_tables), from its frames: the verdicts of the claims
    (``findings.claim_table``), how far one convention moves a number (``conventions.convention_study``) and random
    tie orders (``conventions.tie_spread``), and whether the exported features score as the run (``round_trip``)."""
    out = []
    if len(claims):
        counts = claims["verdict"].value_counts()
        parts = [f"{n} {verdict}" for verdict, n in counts.items()]
        supported = claims[claims["verdict"].str.startswith("supported") & ~claims["fragile"]]
        out.append(f"Of {len(claims)} claims compared paired over seeds (Holm-corrected together): " + "; ".join(parts)
                   + (f"; {int(claims['fragile'].sum())} of the verdicts are fragile" if claims["fragile"].any() else "")
                   + ". " + ("Supported and not fragile: " + "; ".join(f"{r['paper']}, \"{r['claim']}\""
                                                                      for r in supported.to_dict("records"))
                             + "." if len(supported) else "None is supported without being fragile."))
    else:
        out.append("No claim has results on both of its sides yet.")
    moved = conventions[~conventions["axis"].isin(["reference", "preset"])].dropna(subset=["delta"])
    presets = conventions[conventions["axis"] == "preset"].dropna(subset=["delta"])
    if len(moved):
        top = moved.loc[moved["delta"].abs().idxmax()]
        text = (f"One convention choice alone moves a number by up to {abs(top['delta']):.{digits}f} ({top['axis']} = "
                f"{top['setting']}, {top['metric']} of the {top['scores']} scores)")
        if len(presets):
            p = presets.loc[presets["delta"].abs().idxmax()]
            text += (f", and a published preset applied whole by up to {abs(p['delta']):.{digits}f} ({p['setting']}, "
                     f"{p['metric']} of the {p['scores']} scores)")
        out.append(text + ": a number compared across papers has to name its convention.")
    if len(spread):
        widest = spread["spread"].idxmax()
        by_scores = spread["spread"].groupby(level=0, sort=False).max()
        still = [name for name, v in by_scores.items() if v == 0]
        out.append(f"Random tie orders alone move {widest[1]} of the {widest[0]} scores by up to "
                   f"{spread['spread'].max():.{digits}f} (max - min over {int(spread.loc[widest, 'seeds'])} orders)"
                   + (f"; no metric of the {', '.join(still)} scores moves (they do not tie)." if still else "."))
    if len(round_trip):
        equal = int(round_trip["equal"].sum())
        out.append(f"The run exported in the authors' layout and scored again gives {equal} of {len(round_trip)} numbers "
                   "equal to the run's own" + (": a released features file is scored here by the same code as the "
                                                "study's runs." if equal == len(round_trip) else
                                                ": the two paths disagree, so released files are not yet scored as the "
                                                "study's runs are."))
    return out


def signed(x: float, digits: int = 3) -> str:
    """A difference with its sign, never '-0.000' (a difference that rounds to zero reads +0.000)."""
    v = round(float(x), digits)
    return f"{v if v != 0 else 0.0:+.{digits}f}"


def explore_sentences(comparisons, sweep=None, pairs=None, digits: int = 3) -> list[str]:
    """06_explore's closing sentences: over its fixed queries (``explorer.Comparison``), what cluster-then-retrieve
    changes against exact retrieval; how the first query's list and cell change with K (``Explorer.k_sweep``); and
    how a DMWA weight list follows its pairs' scores (``PairProbe.frame``)."""
    out = []
    if comparisons:
        diff = np.array([c.cluster.ap - c.exact.ap for c in comparisons])
        ranks = [(c.cluster.first_correct, c.exact.first_correct) for c in comparisons
                 if c.cluster.first_correct is not None and c.exact.first_correct is not None]
        earlier, later = sum(a < b for a, b in ranks), sum(a > b for a, b in ranks)
        out.append(f"Over the {len(comparisons)} fixed queries, {comparisons[0].cluster.name} changes the query's AP by "
                   f"{signed(diff.mean(), digits)} on average against exact retrieval (from {signed(diff.min(), digits)} "
                   f"to {signed(diff.max(), digits)}); it shows the first photo of the query's class earlier for "
                   f"{earlier}, later for {later} and at the same rank for {len(ranks) - earlier - later} of them.")
    if sweep is not None and len(sweep):
        first, last = sweep.iloc[0], sweep.iloc[-1]

        def share(v) -> str:
            return f"{v:.0%} of them of its class" if v == v else "none of its class"

        best = sweep["AP cluster"].idxmax()
        out.append(f"For the first query, as K grows from {sweep.index[0]} to {sweep.index[-1]} its cell goes from "
                   f"{int(first['cell size'])} photos ({share(first['cell share of the class'])}) to "
                   f"{int(last['cell size'])} ({share(last['cell share of the class'])}), and the cluster list's AP "
                   f"from {first['AP cluster']:.{digits}f} to {last['AP cluster']:.{digits}f} (exact retrieval "
                   f"{first['AP exact']:.{digits}f}); its best K here is {best} (AP {sweep.loc[best, 'AP cluster']:.{digits}f}).")
    if pairs is not None and len(pairs) > 2:
        rho = {k: pairs["w"].corr(pairs[k], method="spearman") for k in ("a_loc", "a_glob")}
        kinds = pairs.groupby("paired")["w"].mean()
        out.append(f"In the DMWA weight list of {len(pairs)} training pairs, w runs from {pairs['w'].min():.{digits}f} to "
                   f"{pairs['w'].max():.{digits}f} (mean 1); its rank correlation with the local score a_loc is "
                   f"{rho['a_loc']:.2f} and with the global score a_glob {rho['a_glob']:.2f}"
                   + (f"; pairs drawn from their photo weigh {kinds[True]:.2f} on average, other same-class pairs "
                      f"{kinds[False]:.2f}" if len(kinds) == 2 else "") + ".")
    return out
