"""Validation curves and the fine-tuning budget (issue 22, point 4).

Every run records its seen-class validation mAP@all after each epoch (``history.json``); the runs' results files say
which epoch was selected (``findings.convergence`` counts the runs that selected their last one). Here the curves
themselves: per method and start, the mean curve over seeds of every training length the results hold, and, from
the runs trained longer than the report's budget (``make reports-full``'s budget steps), how close that budget comes
to the peak and the shortest budget that reaches ``SHARE`` of it. Epochs are counted from 1 here (epoch 1 = after
the first pass), as in the logs; ``history.json`` counts them from 0.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .. import paths
from .tables import pretrained_without_distillation

SHARE = 0.98  # a budget is enough when its validation mAP reaches this share of the run's peak
VALIDATION = "val_map@all"


def validation_curves(frame: pd.DataFrame, dataset: str, runs_root: str | Path | None = None) -> pd.DataFrame:
    """One row per run of ``dataset`` (the results files' exact-retrieval rows) and epoch: method, start (a key of
    ``runs.STARTS``: "pretrained_nokd" for pretrained runs without distillation where the method's pretrained runs
    differ in it, as the tables mark them), the run's number of epochs, seed, epoch (from 1) and the validation
    mAP@all of its ``history.json``; runs without a history are left out."""
    root = Path(runs_root) if runs_root else paths.runs_dir() / "train"
    part = frame[(frame["dataset"] == dataset) & (frame["retrieval"] == "exact") & frame["epochs"].notna()]
    part = part.drop_duplicates("name")
    part = part.assign(start=part["start"].mask(pretrained_without_distillation(part), "pretrained_nokd"))
    rows = []
    for r in part.itertuples():
        run = r.name.split("__")[0]
        history = root / run / "history.json"
        if not history.is_file():
            continue
        for entry in json.loads(history.read_text(encoding="utf-8")):
            if entry.get(VALIDATION) is not None:
                rows.append({"run": run, "method": r.method, "start": r.start if isinstance(r.start, str) else "unknown",
                             "mismatched_pairs": r.mismatched_pairs, "label": r.label, "epochs": int(r.epochs),
                             "seed": int(r.seed), "epoch": int(entry["epoch"]) + 1, "val": float(entry[VALIDATION])})
    return pd.DataFrame(rows, columns=["run", "method", "start", "mismatched_pairs", "label", "epochs", "seed",
                                       "epoch", "val"])


def budget_table(curves: pd.DataFrame, budgets: dict[str, int], share: float = SHARE) -> pd.DataFrame:
    """Per method and start, over its runs trained longer than the report's budget (``budgets``: method -> epochs):
    the runs, their length, the median epoch of their peak, the mean share of the peak the longer runs reach at the
    report's budget (mid-schedule), the shortest budget at which every longer run reaches ``share`` of its own peak
    (the budget the curves choose), and ``report_share``: the report's own runs of the same seeds (their whole,
    shorter schedule), their best validation mAP as a share of the longer run's peak, averaged over the paired seeds
    (``paired_seeds``; NaN without one)."""
    rows = []
    for (method, start), part in curves.groupby(["method", "start"], sort=False):
        budget = budgets.get(method)
        long = part[part["epochs"] > budget] if budget else part.iloc[:0]
        if long.empty:
            continue
        per_run = []
        for _, run in long.groupby("run"):
            val = run.set_index("epoch")["val"].sort_index()
            peak = val.max()
            per_run.append({"peak_epoch": int(val.idxmax()), "at_budget": float(val.get(budget, np.nan) / peak),
                            "enough": int(val.index[(val >= share * peak).to_numpy()].min())})
        per_run = pd.DataFrame(per_run)
        peaks = long.groupby("seed")["val"].max()
        reached = part[part["epochs"] == budget].groupby("seed")["val"].max()
        paired = peaks.index.intersection(reached.index)
        rows.append({"method": method, "start": start, "runs": len(per_run), "epochs": int(long["epochs"].max()),
                     "report_budget": budget, "peak_epoch": float(per_run["peak_epoch"].median()),
                     "share_at_budget": float(per_run["at_budget"].mean()),
                     "chosen_budget": int(per_run["enough"].max()),
                     "report_share": float((reached[paired] / peaks[paired]).mean()) if len(paired) else np.nan,
                     "paired_seeds": len(paired)})
    return pd.DataFrame(rows, columns=["method", "start", "runs", "epochs", "report_budget", "peak_epoch",
                                       "share_at_budget", "chosen_budget", "report_share", "paired_seeds"])


def budget_sentences(table: pd.DataFrame, share: float = SHARE) -> list[str]:
    """One sentence per row of ``budget_table``: what the longer runs' curves say about the report's budget."""
    if table.empty:
        return ["No run was trained longer than the report's budget (`make reports-full` trains them), so the curves "
                "cannot say whether that budget is enough."]
    from ..viz import method_name

    out = []
    for r in table.itertuples():
        own = r.report_share
        converged = own >= share if not np.isnan(own) else r.chosen_budget <= r.report_budget
        verdict = (f"the report's {_epochs(r.report_budget)} are enough" if converged else
                   f"the curves choose {_epochs(r.chosen_budget)}, more than the report's {r.report_budget}: its "
                   "numbers are those of runs stopped before their plateau")
        if r.peak_epoch >= r.epochs:
            verdict += f"; the curves still rise at epoch {r.epochs}, so even that is a lower bound"
        reached = ("" if np.isnan(own) else
                   f" The report's own runs of the same {r.paired_seeds} seed{'s' if r.paired_seeds != 1 else ''}, "
                   f"whose learning rate decays over their {_epochs(r.report_budget)}, end at {own:.0%} of that peak.")
        out.append(f"{method_name(r.method)} {_from(r.start)}, {r.runs} runs of {r.epochs} epochs: validation mAP@all "
                   f"peaks at epoch {r.peak_epoch:g} (median); after {_epochs(r.report_budget)} it is at "
                   f"{r.share_at_budget:.0%} of the peak, and every run reaches {share:.0%} of its peak by epoch "
                   f"{r.chosen_budget}, so {verdict}.{reached}")
    return out


def _from(start: str) -> str:
    from ..viz import display_name

    return "from scratch" if start == "scratch" else f"from the {display_name('start', start)} start"


def _epochs(n: int) -> str:
    return f"{n} epoch{'s' if n != 1 else ''}"


def plot_curves(curves: pd.DataFrame, budgets: dict[str, int], title: str = ""):
    """The mean validation curve over seeds per method, start and training length, with the report's budget marked;
    each start in its palette colour and display name (solid: pretrained, dashed: the other starts; thicker, with
    squares: runs longer than the budget)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from ..viz import display_name, method_name, palette_colour

    groups = [g for g in curves.groupby(["method", "start", "epochs"], sort=True)]
    methods = sorted(curves["method"].unique())
    fig, axes = plt.subplots(1, max(1, len(methods)), figsize=(5.5 * max(1, len(methods)), 3.6), squeeze=False)
    for ax, method in zip(axes[0], methods):
        for (m, start, epochs), part in groups:
            if m != method:
                continue
            mean = part.groupby("epoch")["val"].mean()
            longer = epochs > budgets.get(m, epochs)
            ax.plot(mean.index, mean.values, marker="s" if longer else "o", ms=3, lw=1.8 if longer else 1,
                    ls="-" if start == "pretrained" else "--", color=palette_colour("start", start),
                    label=f"{display_name('start', start)}, {epochs} epochs ({part['seed'].nunique()} seeds)")
        if method in budgets:
            ax.axvline(budgets[method], color="grey", lw=1, ls=":", label=f"the report's budget ({budgets[method]})")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="epoch", ylabel="seen-class validation mAP@all", title=method_name(method))
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def claims_by_budget(frame: pd.DataFrame, dataset: str) -> dict[str, pd.DataFrame]:
    """The claims (``findings.claim_table``) of ``dataset`` at the report's budget and at the longer budget of the
    budget check, on the seeds the longer runs have (so both sides compare the same seeds): label -> claim table, for
    ``findings.side_by_side``. Only claims whose both sides were trained longer get a row; empty when no claim has."""
    from ..viz import method_name
    from .findings import claim_table
    from .tables import report_budget

    part = frame[frame["dataset"] == dataset]
    usual = report_budget(part)
    longer = part[~usual & (part["method"] != "chance")]
    if longer.empty:
        return {}
    seeds = sorted(longer["seed"].dropna().astype(int).unique())
    short = part[usual & part["seed"].isin(seeds)]

    def epochs(rows: pd.DataFrame) -> str:
        per_method = rows.dropna(subset=["epochs"]).groupby("method")["epochs"].max().astype(int)
        return ", ".join(f"{method_name(m)} {e}" for m, e in per_method.items())

    seed_text = f"seeds {seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else \
        "seeds " + ", ".join(map(str, seeds))
    longer_claims = claim_table(longer, dataset)
    if longer_claims.empty:
        return {}
    short_claims = claim_table(short, dataset)
    short_claims = short_claims[short_claims["claim"].isin(longer_claims["claim"])] if len(short_claims) else short_claims
    return {f"{seed_text} at the report's budget ({epochs(short[short['method'].isin(longer['method'])])} epochs)":
            short_claims, f"{seed_text} at the longer budget ({epochs(longer)} epochs)": longer_claims}
