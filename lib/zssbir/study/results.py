"""Results are data: one JSON file per run; tables are built from these files, never typed.

A results file holds:
  name, created (UTC ISO time), seed, params (everything needed to re-run; with a ``dataset``, also the
  ``photo_set`` its lists held: ``zssbir.data.photosets``, e.g. Sketchy without its extension is "original only"),
  metrics: {metric name: {"value": float, "convention": {...}}}  (every number names its convention)
  meta: device, versions, git commit (``runtime.run_metadata``), extra: free-form details
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from .. import paths
from ..runtime import run_metadata

SCHEMA = "zssbir.study.results/1"


def _metric_record(name: str, metric: Any, default_convention: Mapping | None) -> dict:
    if hasattr(metric, "to_dict"):
        metric = metric.to_dict()
    if isinstance(metric, Mapping):  # other keys (e.g. the values over k-means seeds) are kept
        record = {**{k: v for k, v in metric.items() if k != "name"}, "value": metric["value"],
                  "convention": dict(metric.get("convention") or default_convention or {})}
    else:
        record = {"value": metric, "convention": dict(default_convention or {})}
    value = float(record["value"])
    if not math.isfinite(value):
        raise ValueError(f"metric {name!r} is {value}: refusing to record a non-finite result; "
                         f"check the features for NaN (e.g. a diverged training run)")
    if not record["convention"]:
        raise ValueError(f"metric {name!r} has no convention: say how it was computed (AP flavour, @K "
                         f"denominator, averaging, ties), e.g. pass convention=zssbir.eval.metrics.PRESETS[...]")
    record["value"] = value
    return record


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return obj.item()
    return obj


def _with_photo_set(params: Mapping) -> Mapping:
    """``params`` plus the photo set of its data set's lists (unless given; nothing for an unknown id)."""
    if "dataset" not in params or "photo_set" in params:
        return params
    from ..data.photosets import photo_set

    train = params.get("train") if isinstance(params.get("train"), Mapping) else {}
    try:
        found = photo_set(params["dataset"], train.get("data_root") or params.get("data_root"))
    except ValueError:  # not a registered data set id
        return params
    return {**params, "photo_set": found.name}


def write_results(name: str, *, params: Mapping, metrics: Mapping, seed: int, convention: Mapping | None = None,
                  out_dir: str | Path | None = None, extra: Mapping | None = None, device: str = "auto") -> Path:
    """Write ``<out_dir>/<name>.json`` atomically and return its path.

    ``metrics`` maps a name to a float (then ``convention`` applies), a dict with value and
    convention, or an object with ``to_dict()`` giving those.
    """
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise ValueError(f"results name must be a plain file stem, got {name!r}")
    out = Path(out_dir) if out_dir is not None else paths.runs_dir() / "results"
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "schema": SCHEMA,
        "name": name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "params": _jsonable(_with_photo_set(params)),
        "metrics": {k: _metric_record(k, v, convention) for k, v in metrics.items()},
        "meta": _jsonable(run_metadata(device)),
        "extra": _jsonable(extra or {}),
    }
    text = json.dumps(record, indent=2, sort_keys=False, allow_nan=False)
    target = out / f"{name}.json"
    fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text + "\n")
    os.replace(tmp, target)
    return target


def load_results(source: str | Path) -> list[dict]:
    """Every results JSON in a folder (recursively) or one file; files of another schema are rejected."""
    source = Path(source)
    files = sorted(source.rglob("*.json")) if source.is_dir() else [source]
    records = []
    for f in files:
        record = json.loads(f.read_text(encoding="utf-8"))
        if record.get("schema") != SCHEMA:
            raise ValueError(f"{f} is not a zssbir results file (schema {record.get('schema')!r}, expected {SCHEMA!r})")
        record["_path"] = str(f)
        records.append(record)
    return records


def results_frame(records: list[dict]) -> "pd.DataFrame":
    """One row per (results file, metric): run parameters (``label``: the optional ``params["label"]``; ``start``:
    pretrained or scratch, None for the chance rows), retrieval procedure, value, tie policy and convention."""
    import pandas as pd

    rows = []
    for r in records:
        params = r.get("params", {})
        train = params.get("train", {})
        retrieval = params.get("retrieval", {})
        for metric, m in r["metrics"].items():
            conv = m["convention"]
            rows.append({"name": r["name"], "label": params.get("label"), "method": params.get("method"),
                         "dataset": params.get("dataset"), "photo_set": params.get("photo_set"),
                         "backbone": train.get("backbone"), "lambda_da": train.get("lambda_da"),
                         "lambda_kd": train.get("lambda_kd"), "seed": r["seed"],
                         "epochs": train.get("epochs"), "best_epoch": r.get("extra", {}).get("best_epoch"),
                         "mismatched_pairs": train.get("mismatched_pairs", 0.0),
                         "start": ("pretrained" if train.get("pretrained") else "scratch") if train else None,
                         "retrieval": retrieval.get("kind"), "M": retrieval.get("M"), "K": retrieval.get("K"),
                         "variant": retrieval.get("variant"), "tie_order": retrieval.get("ties"),
                         "protocol": params.get("protocol") or train.get("protocol") or "clean", "metric": metric,
                         "value": m["value"],
                         "ties": conv.get("ties"),
                         "convention": ", ".join(f"{k}={conv[k]}" for k in ("ap", "map_k_denominator",
                                                 "prec_k_denominator", "average", "ties") if conv.get(k) is not None)})
    return pd.DataFrame(rows)


def summary_table(frame: "pd.DataFrame", by: list[str], metrics: list[str] | None = None) -> "pd.DataFrame":
    """Mean, standard deviation (ddof 1) and number of seeds of each metric, grouped by ``by``."""
    if metrics is not None:
        frame = frame[frame["metric"].isin(metrics)]
    frame = frame.copy()
    for col in by:  # fields a procedure does not have (M and K of exact retrieval) group as "-"
        frame[col] = [("-" if v is None or v != v else (int(v) if isinstance(v, float) and v.is_integer()
                       and col in ("M", "K", "seed") else v)) for v in frame[col]]
    grouped = frame.groupby(by + ["metric"])["value"]
    out = grouped.agg(mean="mean", std="std", seeds="count")
    return out.unstack("metric")


def mean_std_text(table: "pd.DataFrame", digits: int = 4, unit: str = "", count: bool = True) -> "pd.DataFrame":
    """``summary_table`` output as 'mean ± std (n)' strings, one column per metric; ``unit="seed"``
    gives 'mean ± std (n seeds)', ``count=False`` 'mean ± std' (the count said elsewhere). Rows without a value for
    a metric get '-'."""
    import pandas as pd

    def cell(mu, sd, n) -> str:
        if not n or n != n:
            return "-"
        value = f"{mu:.{digits}f} ± {sd:.{digits}f}" if n > 1 else f"{mu:.{digits}f}"
        if not count:
            return value
        return f"{value} ({int(n)} {unit}{'s' if n != 1 else ''})" if unit else f"{value} ({int(n)})"

    metrics = list(dict.fromkeys(table["mean"].columns))
    text = {m: [cell(mu, sd, n) for mu, sd, n in zip(table["mean"][m], table["std"][m], table["seeds"][m])]
            for m in metrics}
    return pd.DataFrame(text, index=table.index)
