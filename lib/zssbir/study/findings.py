"""The papers' claims as paired comparisons over seeds, and one computed sentence per claim.

A claim compares two rows of the study (results files; see ``tables.study_frame``) that differ in one
component, on the seeds both have: the same training seeds with and without the component. Components are
compared from the papers' starting point (pretrained weights); the starting point itself is compared with
training from scratch. For the metric (default mAP@all) it reports the two means, the mean paired difference
with a 95 % confidence interval (Student t over the paired differences) and the paired t-test's p-value, and
says in words whether the seeds support the claim on this benchmark (the interval lies above 0), contradict it
(below 0) or cannot tell.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Claim:
    name: str              # e.g. "L_DA raises mAP"
    paper: str             # ClusterRetri | DMWA
    with_rows: Callable[[pd.DataFrame], pd.Series]     # frame -> boolean mask of the rows with the component
    without_rows: Callable[[pd.DataFrame], pd.Series]  # ... and of the rows without it
    with_text: str
    without_text: str


def _started(f, start: str):
    return f["start"] == start if "start" in f else pd.Series(start == "pretrained", index=f.index)


def _clusterretri(f, lda: bool, retrieval: str, start: str = "pretrained"):
    lam = f["lambda_da"].fillna(0).astype(float)
    default_ties = f["tie_order"].isna() if "tie_order" in f else True  # not the extra stable-ties rows at M = 1
    return (f["method"] == "clusterretri") & ((lam > 0) if lda else (lam == 0)) & (f["retrieval"] == retrieval) & \
        default_ties & _started(f, start)


def _dmwa(f, weighting: str, loss: str, start: str = "pretrained"):
    label = f["label"].fillna("").astype(str)
    return (f["method"] == "dmwa") & label.str.startswith(f"DMWA (weighting {weighting}, {loss})") & \
        (f["retrieval"] == "exact") & _started(f, start)


# each method's component claims are tested from the papers' starting point (pretrained weights); the last three
# test that starting point itself, the same training against training from scratch
CLAIMS = (
    Claim("L_DA improves retrieval", "ClusterRetri", lambda f: _clusterretri(f, True, "exact"),
          lambda f: _clusterretri(f, False, "exact"), "with L_DA", "without (baseline)"),
    Claim("cluster-then-retrieve improves on exact retrieval", "ClusterRetri",
          lambda f: _clusterretri(f, True, "cluster"), lambda f: _clusterretri(f, True, "exact"),
          "cluster-then-retrieve", "exact retrieval"),
    Claim("the weight list improves alignment", "DMWA", lambda f: _dmwa(f, "both", "quadruplet"),
          lambda f: _dmwa(f, "none", "quadruplet"), "weighting both", "no weighting"),
    Claim("the quadruplet improves on the triplet", "DMWA", lambda f: _dmwa(f, "both", "quadruplet"),
          lambda f: _dmwa(f, "both", "triplet"), "quadruplet", "triplet"),
    Claim("a pretrained start improves on scratch (baseline)", "ClusterRetri",
          lambda f: _clusterretri(f, False, "exact"), lambda f: _clusterretri(f, False, "exact", "scratch"),
          "pretrained", "from scratch"),
    Claim("a pretrained start improves on scratch (L_DA)", "ClusterRetri",
          lambda f: _clusterretri(f, True, "exact"), lambda f: _clusterretri(f, True, "exact", "scratch"),
          "pretrained", "from scratch"),
    Claim("a pretrained start improves on scratch", "DMWA", lambda f: _dmwa(f, "both", "quadruplet"),
          lambda f: _dmwa(f, "both", "quadruplet", "scratch"), "pretrained", "from scratch"),
)


def paired(values_with: pd.Series, values_without: pd.Series) -> dict:
    """Paired statistics of two per-seed value Series (index: seed) on their common seeds."""
    from scipy import stats

    seeds = sorted(set(values_with.index) & set(values_without.index))
    a, b = values_with.loc[seeds].to_numpy(float), values_without.loc[seeds].to_numpy(float)
    d = a - b
    out = {"seeds": seeds, "n": len(seeds), "mean_with": float(a.mean()) if len(a) else np.nan,
           "mean_without": float(b.mean()) if len(b) else np.nan, "difference": float(d.mean()) if len(d) else np.nan,
           "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan}
    if len(d) >= 2:
        half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
        out.update(ci_low=float(d.mean() - half), ci_high=float(d.mean() + half))
        out["p_value"] = float(stats.ttest_rel(a, b).pvalue) if d.std(ddof=1) > 0 else (0.0 if d.mean() else 1.0)
    return out


def verdict(result: dict) -> str:
    if result["n"] < 2:
        return "too few paired seeds to tell"
    if result["ci_low"] > 0:
        return "supported on this benchmark"
    if result["ci_high"] < 0:
        return "contradicted on this benchmark"
    return "not resolved by these seeds (the interval contains 0)"


def claim_table(frame: pd.DataFrame, dataset: str, metric: str = "map@all",
                claims: tuple[Claim, ...] = CLAIMS) -> pd.DataFrame:
    """One row per claim whose two sides have results on ``dataset``: means, paired difference, CI, p, verdict."""
    part = frame[(frame["dataset"] == dataset) & (frame["metric"] == metric)]
    rows = []
    for claim in claims:
        with_ = part[claim.with_rows(part)].groupby("seed")["value"].mean()
        without = part[claim.without_rows(part)].groupby("seed")["value"].mean()
        if with_.empty or without.empty:
            continue
        result = paired(with_, without)
        rows.append({"paper": claim.paper, "claim": claim.name, "metric": metric, "with": claim.with_text,
                     "without": claim.without_text, **{k: v for k, v in result.items() if k != "seeds"},
                     "verdict": verdict(result)})
    return pd.DataFrame(rows)


def sentences(table: pd.DataFrame, digits: int = 3) -> list[str]:
    """One sentence per row of ``claim_table``."""
    out = []
    for r in table.to_dict("records"):
        ci = (f" (95 % CI {r['ci_low']:+.{digits}f} to {r['ci_high']:+.{digits}f}, paired t-test "
              f"p = {r['p_value']:.2g})" if r["n"] >= 2 else "")
        out.append(f"{r['paper']}, \"{r['claim']}\": {r['metric']} {r['mean_with']:.{digits}f} {r['with']} against "
                   f"{r['mean_without']:.{digits}f} {r['without']} over {r['n']} paired seeds, a difference of "
                   f"{r['difference']:+.{digits}f}{ci}: {r['verdict']}.")
    return out
