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
                     transductive: bool = True) -> dict[str, Path]:
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
    """One sentence per results file of a run (a ``results_frame``): its metrics, against chance when given."""
    from .tables import procedure_text

    out = []
    for name, rows in scores.groupby("name", sort=False):
        values = dict(zip(rows["metric"], rows["value"]))
        parts = [f"{m} {v:.{digits}f}" + (f" (chance {chance[m]:.{digits}f})" if chance and m in chance else "")
                 for m, v in values.items()]
        first = rows.iloc[0]
        out.append(f"{procedure_text(first['retrieval'], first['M'], first['K'], first['variant'], first['tie_order'])}: "
                   + ", ".join(parts) + ".")
    return out
