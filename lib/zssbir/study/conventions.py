"""The same scores under every metric convention: how much each published choice moves a number.

Starting from a reference convention (a preset of ``zssbir.eval.metrics.PRESETS``, ties stable by
gallery index), one choice is changed at a time (axis, setting):
  ap                   voc | exact
  map_k_denominator    min_k_relevant | relevant_in_topk   (mAP@K with a finite K only)
  prec_k_denominator   min_k_gallery | min_k_relevant      (Prec@K only)
  average              query | class
  ties                 stable | random (one row per seed: the spread over seeds) | secondary
and every published preset is applied whole (ties stable). ``delta`` is the value minus the
reference value of the same scores and metric. All numbers come from ``metrics.evaluate`` (through
``retrieval.evaluate_features`` or ``ClusterIndex.evaluate``); nothing is re-implemented here.

Scores. Exact cosine similarities of this project's features rarely tie, so the tie policy barely
matters there; cluster-then-retrieve at M = 1 (``cluster_scores``, variant adc) gives every photo
of a cluster the same distance, and there the tie rule moves the number. For cluster scores
"secondary" is the rerank variant (ties ordered by the exact distance); exact scores have no
secondary score, so that setting is left out for them. ITQ codes (``itq_scores``, ``itq_tie_study``) rank
by Hamming distance, which ties far more (65 values at 64 bits); their "secondary" is the exact Euclidean
distance of the real-valued features.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import paths
from ..eval.cluster_retrieval import DEFAULT_SEED, ClusterIndex
from ..eval.metrics import (AP_FLAVOURS, AVERAGES, DEFAULT_METRICS, MAP_K_DENOMINATORS, PREC_K_DENOMINATORS, PRESETS,
                      evaluate, parse_metric)
from ..eval.exact_search import evaluate_features
from ..eval.itq import evaluate_hamming, itq_codes

FIELDS = ("ap", "map_k_denominator", "prec_k_denominator", "average")
AXES = ("reference",) + FIELDS + ("ties", "preset")
_CHOICES = {"ap": AP_FLAVOURS, "map_k_denominator": MAP_K_DENOMINATORS, "prec_k_denominator": PREC_K_DENOMINATORS,
            "average": AVERAGES}


@dataclass(frozen=True)
class Scores:
    """A named way of scoring a query set: ``score(ties=, tie_seed=, ap=, ...)`` -> {metric: MetricResult}."""

    name: str
    score: Callable
    has_secondary: bool = False


def exact_scores(query, gallery, query_labels, gallery_labels, metrics: Sequence[str] = DEFAULT_METRICS) -> Scores:
    """Exact cosine similarity of the features (``retrieval.evaluate_features``)."""
    def score(ties, tie_seed, **convention):
        return evaluate_features(query, gallery, query_labels, gallery_labels, metrics=metrics, ties=ties,
                                 seed=tie_seed, **convention)
    return Scores("exact cosine", score)


def cluster_scores(query, gallery, query_labels, gallery_labels, M: int = 1, K: int | None = None,
                   seed: int = DEFAULT_SEED, metrics: Sequence[str] = DEFAULT_METRICS) -> Scores:
    """Cluster-then-retrieve ADC distances (K defaults to the number of gallery classes); the index is
    fitted once. ties="secondary" is the rerank variant."""
    K = K or len(np.unique(np.asarray(gallery_labels)))
    index = ClusterIndex.fit(gallery, M, K, seed)

    def score(ties, tie_seed, **convention):
        variant = "rerank" if ties == "secondary" else "adc"
        return index.evaluate(query, query_labels, gallery_labels, variant=variant, ties=ties, tie_seed=tie_seed,
                              metrics=metrics, **convention)
    return Scores(f"cluster M={M} K={K} adc", score, has_secondary=True)


def matrix_scores(scores, query_labels, gallery_labels, *, name: str = "scores", higher_is_better: bool = True,
                  secondary=None, metrics: Sequence[str] = DEFAULT_METRICS) -> Scores:
    """A given (Q, N) score matrix (and optionally a secondary one for ties="secondary")."""
    def score(ties, tie_seed, **convention):
        return evaluate(scores, query_labels, gallery_labels, metrics=metrics, ties=ties, seed=tie_seed,
                        secondary=secondary if ties == "secondary" else None, higher_is_better=higher_is_better,
                        **convention)
    return Scores(name, score, has_secondary=secondary is not None)


def itq_scores(query, gallery, query_labels, gallery_labels, *, bits: int = 64, seed: int = 0,
               metrics: Sequence[str] = DEFAULT_METRICS, **itq) -> Scores:
    """Hamming distances of ITQ codes (``eval.itq``; fitted once, ``itq`` as in ``itq_codes``); ties="secondary"
    orders tied photos by the exact Euclidean distance of the features."""
    _, qc, gc = itq_codes(query, gallery, bits=bits, seed=seed, **itq)

    def score(ties, tie_seed, **convention):
        return evaluate_hamming(qc, gc, query_labels, gallery_labels, ties=ties, tie_seed=tie_seed,
                                features=(query, gallery), metrics=metrics, **convention)
    return Scores(f"ITQ {bits}-bit Hamming", score, has_secondary=True)


def pick_run(records: list[dict], dataset: str, run: str = "") -> tuple[str, Path]:
    """(run name, run folder) of the run whose features to study: the results files' run named ``run``
    (the part of a results name before '__'), or by default the first ClusterRetri L_DA 0.1 seed 0 run
    of ``dataset``, one from pretrained weights (the study's default start) before one from scratch. The folder
    is the file's ``extra.run_dir``, else ``<runs>/train/<run name>``."""
    def wanted(r) -> bool:
        p = r.get("params", {})
        if p.get("dataset") != dataset:
            return False
        if run:
            return r["name"].split("__")[0] == run
        return p.get("method") == "clusterretri" and p.get("train", {}).get("lambda_da") == 0.1 and r["seed"] == 0

    found = sorted((r for r in records if wanted(r)),
                   key=lambda r: (not r.get("params", {}).get("train", {}).get("pretrained"), r["name"]))
    if not found:
        runs = sorted({r["name"].split("__")[0] for r in records if r.get("params", {}).get("dataset") == dataset})
        what = f"run {run!r}" if run else "ClusterRetri run with L_DA 0.1 and seed 0"
        raise ValueError(f"no {what} on {dataset} in the results files; runs found: {runs}. "
                         "Pass one of them, or run notebooks/01_train.ipynb first.")
    name = found[0]["name"].split("__")[0]
    stored = found[0].get("extra", {}).get("run_dir")
    folder = Path(stored) if stored and Path(stored).is_dir() else paths.runs_dir() / "train" / name
    return name, folder


def variations(reference: str = "clusterretri", tie_seeds: int = 5, secondary: bool = True) -> list[dict]:
    """The settings tried: the reference, each single change of a field or of the tie policy, each preset."""
    if reference not in PRESETS:
        raise ValueError(f"unknown reference preset {reference!r}; expected one of {sorted(PRESETS)}")
    base = {**PRESETS[reference], "ties": "stable", "tie_seed": None}
    out = [{"axis": "reference", "setting": f"{reference} preset, ties stable", **base}]
    for field in FIELDS:
        out += [{"axis": field, "setting": v, **base, field: v} for v in _CHOICES[field] if v != base[field]]
    out += [{"axis": "ties", "setting": "random", **base, "ties": "random", "tie_seed": s} for s in range(tie_seeds)]
    if secondary:
        out.append({"axis": "ties", "setting": "secondary", **base, "ties": "secondary"})
    out += [{"axis": "preset", "setting": name, **base, **preset} for name, preset in PRESETS.items()]
    return out


def applies(axis: str, metric: str) -> bool:
    """Whether changing ``axis`` can change ``metric`` (e.g. the Prec@K denominator never moves an mAP)."""
    kind, k = parse_metric(metric)
    return {"ap": kind == "map", "map_k_denominator": kind == "map" and k is not None,
            "prec_k_denominator": kind == "prec"}.get(axis, True)


def convention_study(scores: Sequence[Scores], *, reference: str = "clusterretri", tie_seeds: int = 5) -> pd.DataFrame:
    """Tidy frame: scores, axis, setting, the convention fields, ties, tie_seed, metric, value, reference, delta."""
    rows = []
    for s in scores:
        for v in variations(reference, tie_seeds, s.has_secondary):
            results = s.score(ties=v["ties"], tie_seed=v["tie_seed"], **{f: v[f] for f in FIELDS})
            rows += [{"scores": s.name, **v, "metric": m, "value": r.value} for m, r in results.items()
                     if applies(v["axis"], m)]
    frame = pd.DataFrame(rows)
    ref = frame[frame["axis"] == "reference"].set_index(["scores", "metric"])["value"]
    frame["reference"] = [ref[(s, m)] for s, m in zip(frame["scores"], frame["metric"])]
    frame["delta"] = frame["value"] - frame["reference"]
    return frame


def tie_spread(frame: pd.DataFrame) -> pd.DataFrame:
    """Over the random tie orders: min, max, max - min and standard deviation per scores and metric."""
    random = frame[(frame["axis"] == "ties") & (frame["setting"] == "random")]
    out = random.groupby(["scores", "metric"], sort=False)["value"].agg(["min", "max", "std", "count"])
    return out.assign(spread=out["max"] - out["min"]).rename(columns={"count": "seeds"})


def plot_deltas(frame: pd.DataFrame, metrics: Sequence[str] = ("map@all", "prec@100"), ax_width: float = 5.5):
    """One panel per metric: the delta of every setting against the reference (random tie orders as
    several dots on one line), one marker per scores, each in its procedure's palette colour and named by its
    display name (``viz.procedure_label``). Returns the figure."""
    import matplotlib.pyplot as plt

    from ..viz import metric_name, palette_colour, procedure_label, procedure_of

    frame = frame[frame["metric"].isin(metrics)]
    shown = frame.sort_values("axis", key=lambda a: a.map(AXES.index), kind="stable")
    settings = list(dict.fromkeys(f"{a}: {s}" for a, s in zip(shown["axis"], shown["setting"])))
    fig, axes = plt.subplots(1, len(metrics), figsize=(ax_width * len(metrics), 0.32 * len(settings) + 1.5),
                             sharey=True, squeeze=False)
    y = {s: i for i, s in enumerate(settings)}
    for ax, metric in zip(axes[0], metrics):
        part = frame[frame["metric"] == metric]
        for (name, rows), marker in zip(part.groupby("scores", sort=False), "os^Dv"):
            ax.scatter(rows["delta"], [y[f"{a}: {s}"] for a, s in zip(rows["axis"], rows["setting"])],
                       label=procedure_label(name), marker=marker, alpha=0.75,
                       color=palette_colour("procedure", procedure_of(name)))
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_title(f"{metric_name(metric)}: change against the reference")
        ax.set_xlabel("value - reference value")
    axes[0][0].set_yticks(range(len(settings)), settings)
    axes[0][0].invert_yaxis()
    axes[0][-1].legend(loc="best", fontsize="small")
    fig.tight_layout()
    return fig


def tie_study(scores: Sequence[Scores], *, preset: str = "clusterretri", tie_seeds: int = 5) -> pd.DataFrame:
    """The same scores under the tie rules only (stable, ``tie_seeds`` random orders, and secondary where the
    scores have one), with the other conventions of ``preset``: one row per scores and tie rule, a column
    per metric."""
    rows = []
    for s in scores:
        rules = [("stable (gallery index)", "stable", None)]
        rules += [(f"random (seed {k})", "random", k) for k in range(tie_seeds)]
        if s.has_secondary:
            rules.append(("rerank by exact distance", "secondary", None))
        for text, ties, seed in rules:
            results = s.score(ties=ties, tie_seed=seed, **PRESETS[preset])
            rows.append({"scores": s.name, "tie rule": text, **{m: r.value for m, r in results.items()}})
    return pd.DataFrame(rows)


def itq_tie_study(query, gallery, query_labels, gallery_labels, *, bits: int = 64, seed: int = 0,
                  preset: str = "clusterretri", tie_seeds: int = 5, metrics: Sequence[str] = DEFAULT_METRICS,
                  **itq) -> pd.DataFrame:
    """``tie_study`` of the ITQ Hamming ranking (``itq_scores``): one row per tie rule (stable, ``tie_seeds``
    random orders, exact distance), a column per metric: how much the tie rule alone moves a hashed number."""
    scores = itq_scores(query, gallery, query_labels, gallery_labels, bits=bits, seed=seed, metrics=metrics, **itq)
    return tie_study([scores], preset=preset, tie_seeds=tie_seeds)
