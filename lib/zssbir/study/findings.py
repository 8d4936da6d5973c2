"""The papers' claims as paired comparisons over seeds, and one computed sentence per claim.

A claim compares two rows of the study (results files; see ``tables.study_frame``) that differ in one
component, on the seeds both have: the same training seeds with and without the component, one row per seed on
each side (a side with two rows for one seed is an error naming them). Components are compared from the papers'
starting point (pretrained weights); controls isolate what a claim could otherwise be confused with (the
scale-matched triplet, a transductive re-ranker, the start without distillation).

For the metric (default mAP@all) each claim gets the two means, the mean paired difference with its 95 %
confidence interval (Student t over the paired differences), the paired t-test's p-value and that p-value
Holm-corrected over every claim of the table (one report, one family). The verdict:

* supported: the interval lies above 0 and the Holm-corrected p is below ``ALPHA``;
* contradicted: the interval lies below 0, likewise;
* not resolved: otherwise. The sentence then says what the interval rules out.

Each claim also states its minimum detectable effect (the true difference a paired t-test at Holm's strictest
level, ``ALPHA`` / number of claims, would detect with 80 % power given the seeds' spread), and two robustness
checks mark a verdict as fragile: it changes when one seed is left out (the whole table recomputed without that
seed), or the two disjoint halves of the seeds (e.g. 0-4 and 5-9) disagree: opposite verdicts, or 95 %
intervals that do not overlap (a half merely too small to resolve the claim alone does not count).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .closing import listed
from .tables import report_budget

ALPHA = 0.05  # family-wise level of the claims of one table (Holm)
POWER = 0.8   # power at which the minimum detectable effect is stated

SUPPORTED, CONTRADICTED = "supported on this benchmark", "contradicted on this benchmark"
UNRESOLVED, TOO_FEW = "not resolved by these seeds", "too few paired seeds to tell"


@dataclass(frozen=True)
class Claim:
    name: str              # e.g. "L_DA improves retrieval"
    paper: str             # ClusterRetri | DMWA | starting point (the study's own question, not a paper's claim)
    with_rows: Callable[[pd.DataFrame], pd.Series]     # frame -> boolean mask of the rows with the component
    without_rows: Callable[[pd.DataFrame], pd.Series]  # ... and of the rows without it
    with_text: str
    without_text: str
    control: bool = False  # a control: it tells the component's effect from what could mimic it


def _column(f, name, default):
    return f[name] if name in f else pd.Series(default, index=f.index)


def _started(f, start: str):
    return _column(f, "start", "pretrained") == start


def _distilled(f, distilled: bool | None):
    if distilled is None:
        return pd.Series(True, index=f.index)
    kd = _column(f, "lambda_kd", np.nan).astype(float)
    # rows written before lambda_kd was recorded count as distilled when pretrained (the study configs' default)
    return (kd > 0) | (kd.isna() & _started(f, "pretrained")) if distilled else (kd == 0)


def _clusterretri(f, lda: bool, retrieval: str, start: str = "pretrained", distilled: bool | None = None):
    if distilled is None and start == "pretrained":  # the papers' start: SAKE's distillation on
        distilled = True
    lam = f["lambda_da"].fillna(0).astype(float)
    default_ties = _column(f, "tie_order", None).isna()  # not the extra stable-ties rows at M = 1
    return (f["method"] == "clusterretri") & ((lam > 0) if lda else (lam == 0)) & (f["retrieval"] == retrieval) & \
        default_ties & _started(f, start) & _distilled(f, distilled) & report_budget(f)


def _dmwa(f, weighting: str, loss: str, start: str = "pretrained", mismatched: bool = False):
    label = f["label"].fillna("").astype(str)
    degraded = _column(f, "mismatched_pairs", 0.0).fillna(0.0).astype(float) > 0
    return (f["method"] == "dmwa") & label.str.startswith(f"DMWA (weighting {weighting}, {loss})") & \
        (f["retrieval"] == "exact") & _started(f, start) & (degraded == mismatched) & report_budget(f)


# each method's component claims are tested from the papers' starting point (pretrained weights, with SAKE's
# distillation for ClusterRetri); the controls and the starting-point questions follow
CLAIMS = (
    Claim("L_DA improves retrieval", "ClusterRetri", lambda f: _clusterretri(f, True, "exact"),
          lambda f: _clusterretri(f, False, "exact"), "with L_DA", "without (baseline)"),
    Claim("cluster-then-retrieve improves on exact retrieval", "ClusterRetri",
          lambda f: _clusterretri(f, True, "cluster"), lambda f: _clusterretri(f, True, "exact"),
          "cluster-then-retrieve", "exact retrieval"),
    Claim("cluster-then-retrieve improves on a transductive re-ranker", "ClusterRetri",
          lambda f: _clusterretri(f, True, "cluster"), lambda f: _clusterretri(f, True, "transductive"),
          "cluster-then-retrieve", "query expansion with gallery augmentation", control=True),
    Claim("cluster-then-retrieve improves on exact retrieval, from scratch", "ClusterRetri",
          lambda f: _clusterretri(f, True, "cluster", "scratch"), lambda f: _clusterretri(f, True, "exact", "scratch"),
          "cluster-then-retrieve", "exact retrieval", control=True),
    Claim("the weight list improves alignment", "DMWA", lambda f: _dmwa(f, "both", "quadruplet"),
          lambda f: _dmwa(f, "none", "quadruplet"), "weighting both", "no weighting"),
    Claim("on mismatched training pairs, the weight list improves alignment", "DMWA",
          lambda f: _dmwa(f, "both", "quadruplet", mismatched=True),
          lambda f: _dmwa(f, "none", "quadruplet", mismatched=True), "weighting both", "no weighting", control=True),
    Claim("on mismatched training pairs, the weight list beats its inverse", "DMWA",
          lambda f: _dmwa(f, "both", "quadruplet", mismatched=True),
          lambda f: _dmwa(f, "both inverse", "quadruplet", mismatched=True), "weighting both",
          "inverse (poorly aligned pairs weigh more)", control=True),
    Claim("the quadruplet improves on the triplet", "DMWA", lambda f: _dmwa(f, "both", "quadruplet"),
          lambda f: _dmwa(f, "both", "triplet"), "quadruplet", "triplet"),
    Claim("the quadruplet improves on the scale-matched triplet", "DMWA", lambda f: _dmwa(f, "both", "quadruplet"),
          lambda f: _dmwa(f, "both", "balanced"), "quadruplet (two hinges)",
          "balanced (one hinge, same scale)", control=True),
    Claim("SAKE's distillation improves the pretrained start", "starting point",
          lambda f: _clusterretri(f, False, "exact", distilled=True),
          lambda f: _clusterretri(f, False, "exact", distilled=False), "distilled", "not distilled", control=True),
    Claim("a pretrained start improves on scratch (no distillation)", "starting point",
          lambda f: _clusterretri(f, False, "exact", distilled=False),
          lambda f: _clusterretri(f, False, "exact", "scratch"), "pretrained", "from scratch", control=True),
    Claim("a pretrained start with distillation improves on scratch (baseline)", "starting point",
          lambda f: _clusterretri(f, False, "exact", distilled=True),
          lambda f: _clusterretri(f, False, "exact", "scratch"), "pretrained", "from scratch"),
    Claim("a pretrained start with distillation improves on scratch (L_DA)", "starting point",
          lambda f: _clusterretri(f, True, "exact"), lambda f: _clusterretri(f, True, "exact", "scratch"),
          "pretrained", "from scratch"),
    Claim("a pretrained start improves on scratch (DMWA)", "starting point", lambda f: _dmwa(f, "both", "quadruplet"),
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
           "sd_difference": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan}
    if len(d) >= 2:
        sd = d.std(ddof=1)
        half = stats.t.ppf(0.975, len(d) - 1) * sd / np.sqrt(len(d))
        out.update(sd_difference=float(sd), ci_low=float(d.mean() - half), ci_high=float(d.mean() + half))
        out["p_value"] = float(stats.ttest_rel(a, b).pvalue) if sd > 0 else (0.0 if d.mean() else 1.0)
    return out


def holm(p_values) -> np.ndarray:
    """Holm's step-down correction of a family of p-values (NaN, e.g. a claim with one seed, stays NaN)."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out


def minimum_detectable_effect(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true mean difference a two-sided paired t-test at level ``alpha`` detects with probability
    ``power`` over ``n`` seeds whose paired differences spread by ``sd`` (NaN below two seeds)."""
    from statsmodels.stats.power import TTestPower

    if n < 2 or not np.isfinite(sd):
        return np.nan
    if sd == 0:
        return 0.0
    return float(TTestPower().solve_power(nobs=n, alpha=alpha, power=power, alternative="two-sided") * sd)


def verdict(result: dict, alpha: float = ALPHA) -> str:
    """The claim's verdict from its interval and, when given, its Holm-corrected p-value (``p_holm``)."""
    if result["n"] < 2:
        return TOO_FEW
    p = result.get("p_holm")
    significant = p is None or (np.isfinite(p) and p < alpha)
    if result["ci_low"] > 0 and significant:
        return SUPPORTED
    if result["ci_high"] < 0 and significant:
        return CONTRADICTED
    return UNRESOLVED


def _per_seed(part: pd.DataFrame, mask: pd.Series, claim: Claim, side: str) -> pd.Series:
    rows = part[mask]
    counts = rows["seed"].value_counts()
    if (counts > 1).any():
        seed = counts[counts > 1].index[0]
        names = rows.loc[rows["seed"] == seed, "name" if "name" in rows else "label"].astype(str).tolist()
        raise ValueError(f"claim \"{claim.name}\" ({side}: {getattr(claim, side + '_text')}) matches {len(names)} rows "
                         f"for seed {seed}: {', '.join(names)}; a claim compares one row per seed, so narrow its rows "
                         "(zssbir.study.findings.CLAIMS) or leave one of these results files out")
    return rows.set_index("seed")["value"]


def _judge(sides: list, keep: Callable[[list], list], alpha: float) -> list[dict]:
    """Paired statistics of every claim on the seeds ``keep`` leaves of its common seeds, Holm-corrected together."""
    results = []
    for _claim, with_, without in sides:
        common = sorted(set(with_.index) & set(without.index))
        seeds = keep(common)
        results.append(paired(with_.loc[seeds], without.loc[seeds]))
    for r, p in zip(results, holm([r["p_value"] for r in results])):
        r["p_holm"] = float(p)
        r["verdict"] = verdict(r, alpha)
    return results


def _halves_disagree(a: dict, b: dict) -> bool:
    """Two disjoint seed sets disagree when their verdicts are opposite (supported against contradicted) or when
    their 95 % intervals do not overlap (inconsistent estimates). A half too small to resolve the claim alone, whose
    interval still overlaps the other's, lacks power; it does not disagree."""
    if {a["verdict"], b["verdict"]} == {SUPPORTED, CONTRADICTED}:
        return True
    if a["n"] < 2 or b["n"] < 2:
        return False
    return a["ci_high"] < b["ci_low"] or b["ci_high"] < a["ci_low"]


def _seed_text(seeds) -> str:
    seeds = list(seeds)
    contiguous = len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1))
    return f"{seeds[0]}-{seeds[-1]}" if contiguous else ", ".join(str(s) for s in seeds)


def claim_table(frame: pd.DataFrame, dataset: str, metric: str = "map@all",
                claims: tuple[Claim, ...] = CLAIMS, alpha: float = ALPHA) -> pd.DataFrame:
    """One row per claim whose two sides have results on ``dataset``: means, paired difference, CI, p, p after
    Holm over these claims, minimum detectable effect, verdict, and the robustness checks (``fragile``)."""
    part = frame[(frame["dataset"] == dataset) & (frame["metric"] == metric)]
    sides = []
    for claim in claims:
        with_ = _per_seed(part, claim.with_rows(part), claim, "with")
        without = _per_seed(part, claim.without_rows(part), claim, "without")
        if not with_.empty and not without.empty:
            sides.append((claim, with_, without))
    if not sides:
        return pd.DataFrame()
    full = _judge(sides, lambda s: s, alpha)
    every_seed = sorted({s for r in full for s in r["seeds"]})
    left_out = {s: _judge(sides, lambda common, s=s: [c for c in common if c != s], alpha) for s in every_seed}
    first = _judge(sides, lambda common: common[:len(common) // 2], alpha)
    second = _judge(sides, lambda common: common[len(common) // 2:], alpha)
    rows = []
    for i, (claim, _, _) in enumerate(sides):
        r = full[i]
        flips = [s for s in r["seeds"] if r["n"] > 2 and left_out[s][i]["verdict"] != r["verdict"]]
        halves = (first[i], second[i])
        split = r["n"] >= 4 and _halves_disagree(*halves)
        reasons = ([f"leaving out seed {flips[0]} makes it {left_out[flips[0]][i]['verdict']}"] if flips else []) + \
            ([f"its seed halves disagree ({_seed_text(halves[0]['seeds'])}: {halves[0]['difference']:+.3f}, "
              f"{halves[0]['verdict']}; {_seed_text(halves[1]['seeds'])}: {halves[1]['difference']:+.3f}, "
              f"{halves[1]['verdict']})"] if split else [])
        rows.append({"paper": claim.paper, "claim": claim.name, "control": claim.control, "metric": metric,
                     "with": claim.with_text, "without": claim.without_text,
                     **{k: v for k, v in r.items() if k not in ("seeds", "verdict")},
                     "claims_corrected": len(sides),
                     "mde": minimum_detectable_effect(r["sd_difference"], r["n"], alpha / len(sides)),
                     "verdict": r["verdict"], "fragile": bool(reasons), "fragility": "; ".join(reasons),
                     "halves": "; ".join(f"{_seed_text(h['seeds'])}: {h['verdict']}" for h in halves if h["n"])})
    return pd.DataFrame(rows)


def p_text(p: float) -> str:
    """A p-value as a reader needs it: two significant digits, or 'p < 1e-4'."""
    return "p < 1e-4" if p < 1e-4 else f"p = {p:.2g}"


def bound_text(r: dict, digits: int = 3) -> str:
    """What the 95 % interval of the paired difference supports and rules out, in words."""
    lo, hi = r["ci_low"], r["ci_high"]
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return ""
    if lo > 0:
        return f"the interval supports a gain of at least {lo:+.{digits}f} and rules out one above {hi:+.{digits}f}"
    if hi < 0:
        return f"the interval supports a loss of at least {hi:+.{digits}f} and rules out one beyond {lo:+.{digits}f}"
    return f"the interval rules out a gain above {hi:+.{digits}f} and a loss beyond {lo:+.{digits}f}"


def sentences(table: pd.DataFrame, digits: int = 3) -> list[str]:
    """One sentence per row of ``claim_table``: the numbers, the verdict, its bounds, the minimum detectable effect
    and, when fragile, why."""
    out = []
    for r in table.to_dict("records"):
        stats = ""
        if r["n"] >= 2:
            stats = (f" (95 % CI {r['ci_low']:+.{digits}f} to {r['ci_high']:+.{digits}f}; paired t-test "
                     f"{p_text(r['p_value'])}, Holm-corrected {p_text(r['p_holm'])} over "
                     f"{r['claims_corrected']} claims)")
        tail = ""
        if r["n"] >= 2:
            tail = f"; {bound_text(r, digits)}; with {r['n']} seeds a true difference below about " \
                   f"{r['mde']:.{digits}f} would likely go unnoticed (80 % power)"
        fragile = f" Fragile, not a finding: {r['fragility']}." if r.get("fragile") else ""
        out.append(f"{r['paper']}, \"{r['claim']}\": {r['metric']} {r['mean_with']:.{digits}f} {r['with']} against "
                   f"{r['mean_without']:.{digits}f} {r['without']} over {r['n']} paired seeds, a difference of "
                   f"{r['difference']:+.{digits}f}{stats}: {r['verdict']}{tail}.{fragile}")
    return out


def convergence(frame: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Per method and start: how many runs selected their last epoch (``best_epoch`` of the results files against
    the run's ``epochs``). A run that selects its last epoch was still improving on the seen-class validation when
    training stopped, so its unseen-class numbers may be those of an under-trained model."""
    runs = frame[(frame["dataset"] == dataset) & (frame["retrieval"] == "exact") & frame["epochs"].notna()
                 & frame["best_epoch"].notna()].drop_duplicates("name")
    runs = runs[(runs["epochs"].astype(int) > 1) & report_budget(runs)]  # one epoch: nothing to select
    if runs.empty:
        return pd.DataFrame(columns=["method", "start", "runs", "selected_last_epoch", "epochs"])
    runs = runs.assign(last=runs["best_epoch"].astype(int) == runs["epochs"].astype(int) - 1,
                       start=runs["start"].fillna("unknown"))
    return (runs.groupby(["method", "start"], sort=False)
            .agg(runs=("name", "size"), selected_last_epoch=("last", "sum"), epochs=("epochs", "max"))
            .astype(int).reset_index())


def convergence_sentence(table: pd.DataFrame) -> str:
    """One sentence from ``convergence``."""
    if table.empty:
        return "No run of more than one epoch recorded its selected epoch, so convergence cannot be checked here."
    parts = [f"{r.selected_last_epoch} of {r.runs} {r.method} runs from the {r.start} start ({r.epochs} epochs)"
             for r in table.itertuples()]
    share = table["selected_last_epoch"].sum() / table["runs"].sum()
    verdict_ = ("Most runs were still improving on the seen-class validation when training stopped, so a claim "
                "that does not reproduce here may partly be under-training" if share > 0.5 else
                "Most runs peaked before their last epoch: their fine-tuning budget is not what limits them")
    return f"Selected their last epoch: {'; '.join(parts)}. {verdict_}."


def cluster_context_sentence(quality: pd.DataFrame, K: int, digits: int = 2) -> str:
    """What the gallery's own cluster structure says about the cluster-then-retrieve claim (``quality``:
    ``study.cluster_analysis.cluster_quality`` of one run's unseen photos, with a row for ``K``)."""
    purity, nmi = quality.loc[K, "purity"], quality.loc[K, "nmi"]
    how = ("almost perfectly" if purity >= 0.9 else "well" if purity >= 0.7 else "only loosely")
    return (f"Context for cluster-then-retrieve: k-means with K = {K} on the unseen photos alone (no labels, no "
            f"sketches) groups them by class {how}: purity {purity:.{digits}f}, NMI {nmi:.{digits}f}. The method is "
            "transductive (it uses the gallery's photo-to-photo structure), so its gain over exact retrieval measures "
            "how well this gallery clusters as much as the method; the transductive re-ranker and the same "
            "comparison from scratch above are its controls.")


def _cell(r: pd.Series, digits: int) -> str:
    interval = f" [{r['ci_low']:+.{digits}f}, {r['ci_high']:+.{digits}f}]" if r["n"] >= 2 else ""
    fragile = ", fragile" if r.get("fragile") else ""
    return f"{r['difference']:+.{digits}f}{interval} ({r['n']} seeds): {r['verdict']}{fragile}"


def side_by_side(tables: dict[str, pd.DataFrame], digits: int = 3) -> pd.DataFrame:
    """The claims of several benchmarks (data set -> its ``claim_table``) side by side: one row per claim, one column
    per benchmark with the paired difference, its 95 % interval, the seeds and the verdict ("fragile" when it is);
    an empty cell where a benchmark did not test the claim. Each table keeps its own Holm family."""
    cells = {d: {r["claim"]: _cell(r, digits) for _, r in t.iterrows()} for d, t in tables.items() if len(t)}
    claims = list(dict.fromkeys(c for d in cells for c in cells[d]))
    rows = [{"claim": c, **{d: cells[d].get(c, "") for d in cells}} for c in claims]
    return pd.DataFrame(rows, columns=["claim", *cells])


def _plain(r: pd.Series) -> str:
    return "fragile" if r.get("fragile") else r["verdict"]


def side_by_side_sentences(tables: dict[str, pd.DataFrame], digits: int = 3, across: str = "benchmark",
                           every: bool = False) -> list[str]:
    """What changes between benchmarks (or what ``across`` names: the tables' keys, e.g. training budgets): for each
    claim tested on all of them, whether its verdict (fragile counted as its own verdict) is the same everywhere, and
    the differences where it is not (``every``: for every claim, also those that keep their verdict)."""
    tested = {d: t.set_index("claim") for d, t in tables.items() if len(t)}
    if len(tested) < 2:
        missing = [d for d in tables if d not in tested]
        return [f"Only {', '.join(tested) or f'no {across}'} has claims with results on both sides; "
                f"{', '.join(missing) or 'no other'} has none yet, so nothing can be compared across {across}s."]
    names = list(tested)
    common = [c for c in tested[names[0]].index if all(c in t.index for t in tested.values())]
    same = [c for c in common if len({_plain(t.loc[c]) for t in tested.values()}) == 1]
    # the claims that keep their verdict are listed here unless ``every`` gives each its own sentence below
    keep = "keeps its" if len(same) == 1 else "keep their"
    tested_text = "1 claim was" if len(common) == 1 else f"{len(common)} claims were"
    out = [f"{tested_text} tested on each of {listed(names)}; {len(same)} {keep} verdict on every "
           f"one of them" + (f" ({'; '.join(f'{c}: {_plain(tested[names[0]].loc[c])}' for c in same)})."
                             if same and not every else ".")]
    for c in common:
        if c in same and not every:
            continue
        each = ", ".join(f"{d} {t.loc[c, 'difference']:+.{digits}f} ({_plain(t.loc[c])})" for d, t in tested.items())
        out.append(f"\"{c}\" {'keeps its verdict' if c in same else f'changes with the {across}'}: {each}.")
    return out
