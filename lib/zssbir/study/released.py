"""Scoring what others release: a features file (``zssbir.data.feature_files``) scored as the study scores a run.

``score_features_file`` reads a file of query (sketch) and gallery (photo) features with their labels, in
ClusterRetri's or SAKE's pickle layout or an npz, and writes one results JSON per retrieval procedure (exact
retrieval, cluster-then-retrieve over k-means seeds, ITQ hashing) plus the chance level of its labels (one file per
seed), like ``scoring.score_and_record`` does for a trained run. Each file's params carry method "released", the
data set id the user gives (else "features file"), the row label, the retrieval procedure, the list protocol and a
``source`` record: the file's sha256, layout, name and sizes. The rows enter ``results.results_frame`` and
``tables.study_frame`` like any run's; given the id of a real benchmark and the authors' protocol they stand in
``tables.study_vs_published`` beside the published numbers, and ``released_vs_published`` shows them block by block
with their source. ``export_run_features`` writes a trained run's unseen features in any of the layouts (scoring
that file gives the run's own numbers).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.feature_files import FeatureFile, read_features, write_features
from ..eval.metrics import DEFAULT_METRICS
from .results import load_results, mean_std_text, results_frame, summary_table, write_results
from .scoring import CHANCE_LABEL, KMEANS_SEEDS, cluster_over_seeds

METHOD = "released"
DEFAULT_DATASET = "features file"
CHANCE_SEEDS = 5  # random rankings the chance level of a file is scored over
PHOTO_SET = "as in the features file"  # params["photo_set"]: the file fixes the gallery, not a local tree's lists


def default_name(features: FeatureFile) -> str:
    """``released_<file stem>_<first 8 hex of its sha256>``: the same file gets the same results files."""
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in features.path.stem).lstrip(".") or "features"
    return f"released_{stem}_{features.sha256[:8]}"


def default_label(features: FeatureFile) -> str:
    """'<file name> [<first 8 hex of its sha256>]': two files of one name stay two rows."""
    return f"{features.path.name} [{features.sha256[:8]}]"


def source_record(features: FeatureFile) -> dict:
    """What ``params["source"]`` holds: sha256, layout, file name and sizes (n_query, n_gallery, dim, n_classes)."""
    return {"sha256": features.sha256, "layout": features.layout, "file": features.path.name, **features.sizes}


def chance_of_labels(query_labels, gallery_labels, seed: int, *, preset: str = "clusterretri") -> dict:
    """The metrics of a uniformly random ranking of these labels (every gallery item ties, ties in a random order
    drawn with ``seed``): ``scoring.chance_metrics`` from label arrays instead of a data set's lists."""
    from ..eval.metrics import evaluate

    n_gallery = len(gallery_labels)

    def tied(start: int, end: int) -> np.ndarray:
        return np.zeros((end - start, n_gallery), dtype=np.float32)

    return evaluate(tied, query_labels, gallery_labels, preset=preset, ties="random", seed=seed)


def _itq():
    try:
        from ..eval.itq import evaluate_itq
    except ModuleNotFoundError as err:  # only the module itself missing; an error inside it is not hidden
        if err.name != "zssbir.eval.itq":
            raise
        raise RuntimeError("ITQ hashing needs zssbir.eval.itq, which this installation lacks") from None
    return evaluate_itq


def score_features(features: FeatureFile, *, preset: str = "clusterretri",
                   cluster: tuple[int, int, str] | None = None, kmeans_seeds: int = KMEANS_SEEDS,
                   label: str | None = None, name: str | None = None, dataset: str | None = None,
                   protocol: str = "authors", out_dir: str | Path | None = None, itq_bits: int | None = None,
                   itq_seed: int = 0, chance_seeds: int = CHANCE_SEEDS) -> dict[str, Path]:
    """Score a read features file and write its results files (see ``score_features_file``)."""
    from ..eval.cluster_retrieval import VARIANTS
    from ..eval.metrics import PRESETS

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    if cluster is not None and cluster[2] not in VARIANTS:
        raise ValueError(f"unknown cluster variant {cluster[2]!r}; expected one of {VARIANTS}")
    if chance_seeds < 0:
        raise ValueError(f"chance_seeds must be 0 or more, got {chance_seeds}")
    evaluate_itq = _itq() if itq_bits is not None else None  # before anything is written
    name = name or default_name(features)
    label = label or default_label(features)
    q, ql, g, gl = features.query, features.query_labels, features.gallery, features.gallery_labels
    base = {"method": METHOD, "dataset": dataset or DEFAULT_DATASET, "protocol": protocol, "photo_set": PHOTO_SET,
            "source": source_record(features)}
    extra = {"features_file": str(features.path)}

    def write(key: str, metrics: dict, retrieval: dict, row: str, seed: int = 0, **params) -> Path:
        return write_results(f"{name}__{key}", params={**base, "label": row, "retrieval": retrieval, **params},
                             metrics=metrics, seed=seed, out_dir=out_dir, extra=extra)

    from ..eval.exact_search import evaluate_features

    out = {"exact": write("exact", evaluate_features(q, g, ql, gl, preset=preset),
                          {"kind": "exact", "metric": "cosine"}, f"{label}, exact")}
    if cluster is not None:
        M, K, variant = int(cluster[0]), int(cluster[1]), cluster[2]
        tie_orders = [("cluster", None)] + ([("cluster_stable", "stable")] if M == 1 and variant != "rerank" else [])
        for key, ties in tie_orders:
            suffix = ", stable ties" if ties else ""
            out[key] = write(key, cluster_over_seeds(q, g, ql, gl, M, K, variant, preset=preset,
                                                     kmeans_seeds=kmeans_seeds, ties=ties),
                             {"kind": "cluster", "M": M, "K": K, "variant": variant, "kmeans_seeds": kmeans_seeds,
                              **({"ties": ties} if ties else {})},
                             f"{label}, cluster M={M} K={K} {variant}{suffix}")
    if evaluate_itq is not None:
        ties = "random"
        out["itq"] = write("itq", evaluate_itq(q, g, ql, gl, bits=int(itq_bits), seed=itq_seed, preset=preset,
                                               ties=ties),
                           {"kind": "itq", "bits": int(itq_bits), "seed": itq_seed, "ties": ties},
                           f"{label}, ITQ {int(itq_bits)} bits", seed=itq_seed)
    for s in range(chance_seeds):
        out[f"chance_seed{s}"] = write(f"chance_seed{s}", chance_of_labels(ql, gl, s, preset=preset),
                                       {"kind": "random"}, f"{CHANCE_LABEL}, {label}", seed=s, method="chance")
    return out


def score_features_file(path: str | Path, *, layout: str = "auto", preset: str = "clusterretri",
                        cluster: tuple[int, int, str] | None = None, kmeans_seeds: int = KMEANS_SEEDS,
                        label: str | None = None, name: str | None = None, dataset: str | None = None,
                        protocol: str = "authors", out_dir: str | Path | None = None, itq_bits: int | None = None,
                        itq_seed: int = 0, chance_seeds: int = CHANCE_SEEDS) -> dict[str, Path]:
    """Score the features file at ``path`` (``layout``: auto, clusterretri, sake or npz) and write one results JSON
    per procedure into ``out_dir`` (default ``<runs>/results``, where the study's tables read): ``<name>__exact``
    (exact cosine retrieval, ``exact_search.evaluate_features``), with ``cluster=(M, K, variant)``
    ``<name>__cluster`` (cluster-then-retrieve over ``kmeans_seeds`` k-means seeds, ``scoring.cluster_over_seeds``;
    at M = 1 adc and fuse also ``<name>__cluster_stable``, as for a run), with ``itq_bits`` ``<name>__itq`` (ITQ
    hashing, ``eval.itq.evaluate_itq`` with ``itq_seed``, random ties) and ``<name>__chance_seed<s>`` for
    ``chance_seeds`` random rankings of its labels (method "chance"). ``name`` defaults to ``default_name``, the row
    ``label`` to ``default_label``; ``dataset`` is the id the rows are tabled under (e.g. sketchy_ext_split1 to
    stand beside its published numbers; default "features file") and ``protocol`` the lists the features were
    computed on (a file released by a paper's authors: theirs, "authors"). Returns the paths by procedure."""
    features = read_features(path, layout)
    return score_features(features, preset=preset, cluster=cluster, kmeans_seeds=kmeans_seeds, label=label, name=name,
                          dataset=dataset, protocol=protocol, out_dir=out_dir, itq_bits=itq_bits, itq_seed=itq_seed,
                          chance_seeds=chance_seeds)


def export_run_features(run_dir: str | Path, path: str | Path, format: str = "npz", *, which: str = "best",
                        device: str = "auto") -> Path:
    """Write a trained run's unseen-split features (sketches the queries, photos the gallery, through the feature
    cache: ``scoring.split_features``) as a features file of layout ``format`` (clusterretri, sake or npz; only npz
    keeps the class names)."""
    from ..data.datasets import load_split
    from ..training.loop import load_trained
    from .scoring import split_features

    model, config = load_trained(run_dir, which=which, device=device)
    feats = split_features(model, config, "zero", device=device)
    (q, ql), (g, gl) = feats["sketch"], feats["photo"]
    names = load_split(config.dataset, "zero", "photo", data_root=config.data_root, check_files=False,
                       duplicates=config.list_duplicates).class_names
    return write_features(path, format, q, ql, g, gl, class_names=names)


def round_trip(run_dir: str | Path, run_results: list[str | Path], path: str | Path, format: str = "clusterretri", *,
               out_dir: str | Path, device: str = "auto") -> "pd.DataFrame":
    """Export a run's unseen features (``export_run_features``) and score the file with the same procedures as the
    run's results files ``run_results`` (exact, and cluster-then-retrieve with the same M, K, variant and k-means
    seeds) into ``out_dir``: one row per procedure and metric with the run's value, the file's and whether they are
    equal (they must be: the same features, ranked by the same code)."""
    import pandas as pd

    records = [r for p in run_results for r in load_results(p)]
    cluster = next((r["params"]["retrieval"] for r in records if r["params"]["retrieval"]["kind"] == "cluster"
                    and "ties" not in r["params"]["retrieval"]), None)
    exported = export_run_features(run_dir, path, format, device=device)
    written = score_features_file(exported, layout=format, out_dir=out_dir, chance_seeds=0,
                                  cluster=cluster and (cluster["M"], cluster["K"], cluster["variant"]),
                                  kmeans_seeds=cluster["kmeans_seeds"] if cluster else KMEANS_SEEDS)
    theirs = {(r["params"]["retrieval"]["kind"], m): v["value"] for r in records if "ties" not in
              r["params"]["retrieval"] for m, v in r["metrics"].items()}
    rows = []
    for procedure, p in written.items():
        for metric, v in load_results(p)[0]["metrics"].items():
            run_value = theirs.get((procedure, metric))
            if run_value is not None:
                rows.append({"procedure": procedure, "metric": metric, "run": run_value, "file": v["value"],
                             "equal": run_value == v["value"]})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ tables
def released_frame(source: str | Path) -> "pd.DataFrame":
    """The ``tables.study_frame`` rows of the released features files' results under ``source`` (a folder or
    file) and of their chance levels, with the file's ``file``, ``sha256`` and ``layout`` per row."""
    from .tables import row_labels

    records = [r for r in load_results(source) if isinstance(r.get("params", {}).get("source"), dict)]
    if not records:
        raise FileNotFoundError(f"no results of a features file in {source}: `zssbir score FILE` writes them")
    frame = row_labels(results_frame(records))
    info = {r["name"]: r["params"]["source"] for r in records}
    for key in ("file", "sha256", "layout"):
        frame[key] = [info[n].get(key) for n in frame["name"]]
    return frame


def released_vs_published(source: str | Path, metrics=DEFAULT_METRICS, digits: int = 4) -> "pd.DataFrame":
    """Blocks of rows, one pair per data set the released files were scored under: the released rows (mean ± std
    over seeds where there are several: k-means seeds inside a cluster value, random rankings of chance) with each
    row's convention and source file, then that data set's published numbers when it has any
    (``published_numbers``)."""
    import pandas as pd

    from . import published_numbers
    from .tables import merged_convention

    frame = released_frame(source)
    frame = frame[frame["metric"].isin(metrics)]
    blocks = []
    for dataset, part in frame.groupby("dataset", sort=False):
        kinds = {"exact": 0, "cluster": 1, "itq": 2}
        order = part.assign(_chance=part["method"] == "chance", _kind=part["retrieval"].map(kinds).fillna(3))
        order = order.sort_values(["_chance", "_kind", "row"], kind="stable")
        rows = list(dict.fromkeys(order["row"]))
        text = mean_std_text(summary_table(part, ["row"]), digits=digits, unit="seed").reindex(rows)
        text = text.reindex(columns=list(metrics), fill_value="-").fillna("-")
        text["convention"] = part.groupby("row")["convention"].agg(merged_convention).reindex(rows)
        first = part.drop_duplicates("row").set_index("row")
        text["source"] = [f"features file {first.at[r, 'file']} ({first.at[r, 'layout']}, sha256 "
                          f"{str(first.at[r, 'sha256'])[:12]})" for r in rows]
        blocks.append(text.reset_index().assign(block=f"released features, on {dataset}"))
        if dataset in published_numbers.DATASETS:
            ref = published_numbers.reference_frame(dataset)
            ref = ref.assign(row=[f"{m}, {v}" if v else m for m, v in zip(ref["method"], ref["variant"])])
            wide = ref.pivot_table(index="row", columns="metric", values="value", aggfunc="first", sort=False)
            wide = wide.reindex(columns=list(metrics)).map(_published_text)
            info = ref.drop_duplicates("row").set_index("row")[["convention", "source"]]
            blocks.append(wide.join(info).reset_index().assign(block=f"published, on {dataset}"))
    out = pd.concat(blocks, ignore_index=True)
    return out[["block", "row", *metrics, "convention", "source"]]


def _published_text(v) -> str:
    """A published number with the decimals it was published with (as ``tables`` shows them)."""
    import pandas as pd

    return "-" if pd.isna(v) else f"{v:.3f}" if round(v, 3) == v else f"{v:.4f}"
