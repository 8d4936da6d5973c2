"""The study's tables, built from results files (``zssbir.study.results``), never from typed numbers.

Study table (one per data set): one row per method and variant, labelled by the results file's
``params["label"]`` when it has one, else derived from method, L_DA weight and retrieval
procedure (", from scratch" appended to runs without pretrained weights when a data set has both
starts); one column per metric as 'mean ± std (n seeds)'; a ``ties`` column (the tie policy of
each row's ranking) and a last row giving each column's metric convention (AP flavour, @K
denominator, averaging). A column whose rows used different conventions says MIXED and names
the rows of each convention.

Study vs published: the study's rows next to the published reference numbers
(``zssbir.study.published_numbers``) of every real benchmark, block by block, each row with its convention and
source; a benchmark the study has no results on says so.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import published_numbers
from ..data.photosets import ORIGINAL
from ..eval.metrics import DEFAULT_METRICS
from .results import load_results, mean_std_text, results_frame, summary_table

CONVENTION_ROW = "metric convention"
_PROCEDURE_KEYS = ["retrieval", "M", "K", "variant", "tie_order"]


def procedure_text(retrieval, M, K, variant, tie_order=None) -> str:
    """'exact', 'cluster M=2 K=16 rerank', or with an explicit tie order 'cluster M=1 K=10 adc, stable ties'."""
    if retrieval == "exact":
        return "exact"
    if retrieval == "transductive":
        return "transductive re-ranker (query expansion, gallery augmentation)"
    parts = [str(retrieval or "unknown retrieval")] + [f"{k}={_int(v)}" for k, v in (("M", M), ("K", K)) if _given(v)]
    text = " ".join(parts + ([str(variant)] if _given(variant) else []))
    return text + (f", {tie_order} ties" if _given(tie_order) else "")


def derived_label(method, lambda_da, retrieval, M=None, K=None, variant=None, tie_order=None) -> str:
    """A readable row label for a results file that has no ``params["label"]``."""
    procedure = procedure_text(retrieval, M, K, variant, tie_order)
    if method == "clusterretri":
        if not lambda_da:
            return "exact retrieval baseline (no L_DA)" if procedure == "exact" else f"baseline (no L_DA), {procedure}"
        return f"ClusterRetri L_DA {lambda_da:g}, {procedure}"
    return f"{str(method or 'unknown method').upper()}, {procedure}"


def study_frame(source: str | Path) -> pd.DataFrame:
    """``results_frame`` of every results file under ``source`` with a final ``row`` label per file.

    A ``params["label"]`` shared by several retrieval procedures gets the procedure appended; when
    the data set holds several backbones, the backbone is appended too, and likewise the list protocol
    ("authors lists" / "clean lists") when both were scored, so they stand side by side.
    """
    source = Path(source)
    records = load_results(source) if source.exists() else []
    if not records:
        raise FileNotFoundError(
            f"no results files in {source}. They are written by notebooks/01_train.ipynb (ClusterRetri and the "
            "baseline) and the DMWA notebook; `make reports` runs them all before the tables.")
    return row_labels(results_frame(records))


def report_budget(frame: pd.DataFrame) -> pd.Series:
    """Whether each row's run was trained for its method's usual number of epochs on its data set (the most common
    one: the report's budget); rows without a recorded length count as such. Runs trained longer or shorter (the
    budget check of make reports-full) get their own rows and stay out of the claims."""
    if "epochs" not in frame:
        return pd.Series(True, index=frame.index)
    epochs = frame["epochs"]
    usual = frame.assign(e=epochs).groupby(["dataset", "method"])["e"].transform(
        lambda e: e.mode().iloc[0] if e.notna().any() else np.nan)
    return epochs.isna() | (epochs == usual)


def pretrained_without_distillation(frame: pd.DataFrame) -> pd.Series:
    """The rows of pretrained runs without SAKE's distillation (``runs.STARTS["pretrained_nokd"]``) where their data
    set and method also have distilled pretrained runs: the tables' rows and 05's curves mark them."""
    pretrained = (frame["method"] != "chance") & (frame["start"] == "pretrained")
    kd = frame["lambda_kd"].astype(float) if "lambda_kd" in frame else pd.Series(float("nan"), index=frame.index)
    kd_varies = frame[pretrained].assign(kd=kd).groupby(["dataset", "method"])["kd"].transform("nunique")
    return pretrained & (kd_varies.reindex(frame.index) > 1) & (kd == 0)


def row_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """A ``results_frame`` with its ``procedure`` and final ``row`` label per file (see ``study_frame``)."""
    frame = frame.copy()
    frame["procedure"] = [procedure_text(*v) for v in frame[_PROCEDURE_KEYS].itertuples(index=False)]
    derived = [derived_label(*v) for v in frame[["method", "lambda_da"] + _PROCEDURE_KEYS].itertuples(index=False)]
    frame["row"] = [lab if isinstance(lab, str) and lab else d for lab, d in zip(frame["label"], derived)]
    shared = frame.groupby("row")["procedure"].transform("nunique") > 1
    frame.loc[shared, "row"] = frame.loc[shared, "row"] + ", " + frame.loc[shared, "procedure"]
    runs = frame["method"] != "chance"
    mixed = runs & (frame[runs].groupby("dataset")["start"].transform("nunique").reindex(frame.index) > 1)
    scratch = mixed & (frame["start"] == "scratch")
    frame.loc[scratch, "row"] = frame.loc[scratch, "row"] + ", from scratch"
    undistilled = pretrained_without_distillation(frame)
    frame.loc[undistilled, "row"] = frame.loc[undistilled, "row"] + ", pretrained without distillation"
    several = frame.groupby("dataset")["backbone"].transform("nunique") > 1
    frame.loc[several, "row"] = frame.loc[several, "row"] + ", backbone " + frame.loc[several, "backbone"].astype(str)
    scored = frame["method"] != "chance"
    both = scored & (frame[scored].groupby("dataset")["protocol"].transform("nunique").reindex(frame.index) > 1)
    frame.loc[both, "row"] = frame.loc[both, "row"] + ", " + frame.loc[both, "protocol"] + " lists"
    longer = runs & ~report_budget(frame)  # e.g. the budget check's longer runs of make reports-full
    frame.loc[longer, "row"] = frame.loc[longer, "row"] + ", " + frame.loc[longer, "epochs"].map(
        lambda e: f"{int(e)} epochs")
    original = frame["photo_set"] == ORIGINAL  # e.g. Sketchy without EXTEND_image_sketchy: not the Ext benchmark
    frame.loc[original, "row"] = frame.loc[original, "row"] + ", original photos only (no extended set)"
    return frame


def for_dataset(frame: pd.DataFrame, dataset: str, metrics=DEFAULT_METRICS) -> pd.DataFrame:
    """The rows of one data set and the given metrics, in study order; two files of one row and seed raise."""
    part = frame[(frame["dataset"] == dataset) & frame["metric"].isin(metrics)]
    twice = part[part.duplicated(["row", "seed", "metric"], keep=False)]
    if len(twice):
        raise ValueError(f"several results files give the same row and seed, so seeds would be miscounted: "
                         f"{sorted(set(twice['name']))}; give them distinct params['label'] or remove one")
    order = part.assign(_chance=part["method"] == "chance", _method=part["method"] != "clusterretri",
                        _exact=part["retrieval"] != "exact", _lda=part["lambda_da"].fillna(0))
    order = order.sort_values(["_chance", "_method", "_lda", "_exact", "row"], kind="stable")  # chance last
    return part.loc[order.index]


def definition(convention: str) -> str:
    """A results_frame convention text without the tie policy (that is a property of the row)."""
    return ", ".join(p for p in convention.split(", ") if not p.startswith("ties="))


def merged_convention(conventions) -> str:
    """One text for a row from the convention texts of its metrics ('key=value, ...'), ties last."""
    fields = {}
    for text in conventions:
        fields.update(p.split("=", 1) for p in text.split(", ") if "=" in p)
    return ", ".join(f"{k}={v}" for k, v in sorted(fields.items(), key=lambda kv: kv[0] == "ties"))


def column_conventions(part: pd.DataFrame) -> dict[str, str]:
    """Metric -> its convention text; 'MIXED: <convention> [rows]; ...' when rows differ."""
    out = {}
    for metric, rows in part.groupby("metric", sort=False):
        by_definition = rows.assign(d=rows["convention"].map(definition)).groupby("d", sort=False)["row"]
        groups = {d: list(dict.fromkeys(r)) for d, r in by_definition}
        out[metric] = (next(iter(groups)) if len(groups) == 1 else
                       "MIXED: " + "; ".join(f"{d} [{', '.join(r)}]" for d, r in groups.items()))
    return out


def study_table(frame: pd.DataFrame, dataset: str, metrics=DEFAULT_METRICS, digits: int = 4) -> pd.DataFrame:
    """Rows = method/variant, columns = metrics as 'mean ± std' over the row's seeds, then ``seeds`` (their number;
    'per cell', each cell saying its own, when the row's metrics have different counts) and ``ties``; the last row
    is each column's metric convention."""
    part = for_dataset(frame, dataset, metrics)
    if part.empty:
        raise ValueError(f"no results for data set {dataset!r} (results exist for "
                         f"{sorted(frame['dataset'].dropna().unique())}); notebooks/01_train.ipynb writes them")
    rows = list(dict.fromkeys(part["row"]))
    summary = summary_table(part, ["row"])
    shown = [m for m in metrics if m in summary["mean"].columns]
    counts = summary["seeds"][shown].reindex(rows)
    one_count = counts.nunique(axis=1, dropna=True) <= 1  # the row's seeds, said once in its own column
    text = mean_std_text(summary, digits=digits, unit="seed").reindex(rows)[shown]
    bare = mean_std_text(summary, digits=digits, count=False).reindex(rows)[shown]
    text = bare.where(one_count, text, axis=0)
    text["seeds"] = [str(int(c.max())) if ok else "per cell" for (_, c), ok in zip(counts.iterrows(), one_count)]
    text["ties"] = [", ".join(sorted(part.loc[part["row"] == r, "ties"].dropna().astype(str).unique())) for r in rows]
    conventions = column_conventions(part)
    text.loc[CONVENTION_ROW] = [conventions.get(m, "") for m in shown] + ["", "per row"]
    text.index.name = "row"
    return text


def _published_block(dataset: str, metrics) -> pd.DataFrame:
    ref = published_numbers.reference_frame(dataset)
    ref = ref.assign(row=[f"{m}, {v}" if v else m for m, v in zip(ref["method"], ref["variant"])])
    wide = ref.pivot_table(index="row", columns="metric", values="value", aggfunc="first", sort=False)
    wide = wide.reindex(columns=list(metrics)).map(_published_text)
    info = ref.drop_duplicates("row").set_index("row")[["convention", "source"]]
    return wide.join(info).reset_index()


def _study_block(frame: pd.DataFrame, dataset: str, metrics, protocol: str | None = None) -> pd.DataFrame:
    """The study's rows of ``dataset`` (only those scored under ``protocol`` when given), or a note."""
    if protocol is not None:
        others = frame[(frame["dataset"] == dataset) & (frame["protocol"] != protocol) & (frame["method"] != "chance")]
        frame = frame[(frame["dataset"] != dataset) | (frame["protocol"] == protocol) | (frame["method"] == "chance")]
    part = for_dataset(frame, dataset, metrics)
    if part[part["method"] != "chance"].empty:
        note = (f"no results of this study on {dataset} yet (full-size runs: configs/clusterretri/{dataset}.yaml, "
                f"configs/dmwa/{dataset}.yaml on a GPU)")
        if protocol is not None and len(others):
            note = (f"no results of this study on {dataset} under the {protocol} protocol (the published numbers' "
                    f"lists); {others['name'].nunique()} results files use other lists and are not compared")
        return pd.DataFrame([{"row": note, **{m: "-" for m in metrics}, "convention": "", "source": ""}])
    table = study_table(frame, dataset, metrics).drop(index=CONVENTION_ROW)
    table["convention"] = part.groupby("row")["convention"].agg(merged_convention).reindex(table.index)
    table["source"] = [f"this study: results files ({n} seed{'s' if n != '1' else ''})" if n != "per cell" else "this study: results files"
                       for n in table["seeds"]]
    table = table.drop(columns=["ties", "seeds"]).reindex(columns=list(metrics) + ["convention", "source"], fill_value="-")
    return table.reset_index()


def study_vs_published(frame: pd.DataFrame, study_dataset: str, metrics=DEFAULT_METRICS) -> pd.DataFrame:
    """Blocks of rows: the study on ``study_dataset`` (when it is not a real benchmark), then for every real
    benchmark the published numbers and the study's own rows scored under the same protocol as the published
    numbers (the authors' lists), or a note that it has none."""
    blocks = []
    if study_dataset not in published_numbers.DATASETS:
        blocks.append(_study_block(frame, study_dataset, metrics).assign(block=f"this study, on {study_dataset}"))
    for dataset in published_numbers.DATASETS:
        blocks.append(_published_block(dataset, metrics).assign(block=f"published, on {dataset}"))
        blocks.append(_study_block(frame, dataset, metrics, protocol="authors").assign(
            block=f"this study, on {dataset} (authors' lists, as the published numbers)"))
    out = pd.concat(blocks, ignore_index=True)
    return out[["block", "row", *metrics, "convention", "source"]]


def headline(frame: pd.DataFrame, dataset: str, metrics=DEFAULT_METRICS) -> dict:
    """The study table of ``dataset`` as JSON-ready data: per row the mean, std and seeds of each metric."""
    part = for_dataset(frame, dataset, metrics)
    summary = summary_table(part, ["row"])
    rows = []
    for row in dict.fromkeys(part["row"]):
        values = {m: {"mean": float(summary["mean"].at[row, m]), "std": _float(summary["std"].at[row, m]),
                      "seeds": int(summary["seeds"].at[row, m])} for m in metrics if m in summary["mean"].columns}
        rows.append({"row": row, "metrics": values})
    return {"dataset": dataset, "metrics": list(metrics), "rows": rows, "conventions": column_conventions(part),
            "results_files": sorted(set(part["name"]))}


def to_markdown(table: pd.DataFrame, index: bool = True) -> str:
    """A GitHub Markdown table (pipes escaped)."""
    flat = table.reset_index() if index else table
    cells = [[str(c) for c in flat.columns]] + [["" if v is None else str(v) for v in r]
                                                  for r in flat.itertuples(index=False)]
    lines = ["| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in row) + " |" for row in cells]
    return "\n".join([lines[0], "|" + "---|" * len(cells[0]), *lines[1:]]) + "\n"


def write_table(table: pd.DataFrame, folder: str | Path, stem: str, index: bool = True) -> list[Path]:
    """``<folder>/<stem>.csv`` and ``<folder>/<stem>.md``; returns both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    csv, md = folder / f"{stem}.csv", folder / f"{stem}.md"
    table.to_csv(csv, index=index)
    md.write_text(to_markdown(table, index=index), encoding="utf-8")
    return [csv, md]


def _given(v) -> bool:
    return v is not None and v == v


def _int(v):
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _published_text(v) -> str:
    """A published number with the decimals it was published with (3, or 4 for the ClusterRetri logs)."""
    return "-" if pd.isna(v) else f"{v:.3f}" if round(v, 3) == v else f"{v:.4f}"


def _float(v):
    return None if pd.isna(v) else float(v)
