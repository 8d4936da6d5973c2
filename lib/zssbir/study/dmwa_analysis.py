"""What the DMWA notebook calls: its ablation grid, the weight list of a trained model on probe pairs,
and the plots of both. The training and scoring go through ``zssbir.study.scoring`` like every method."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from ..training.config import TrainConfig
from ..data.datasets import load_split
from ..data.quadruplets import QuadrupletDataset, QuadrupletSampler, stack_quadruplets
from ..models.factory import transforms_for
from ..viz import image_grid


def variant_label(method_params: dict) -> str:
    """A table row label, e.g. "DMWA (weighting both, quadruplet)", or "DMWA (weighting both inverse, quadruplet)"
    when misaligned pairs weigh more."""
    inverse = " inverse" if method_params.get("emphasis", "aligned") == "misaligned" else ""
    return (f"DMWA (weighting {method_params.get('weighting', 'both')}{inverse}, "
            f"{method_params.get('loss', 'quadruplet')})")


def ablation_grid(main: dict, weightings: list[str], loss_forms: list[str], emphases: list[str] = ()) -> list[dict]:
    """method_params of every ablation run: the main settings with each weighting (main loss form),
    then with each loss form (main weighting), then with each emphasis (aligned or misaligned pairs
    weigh more); duplicates removed, the main settings first."""
    grid = [dict(main)] + [dict(main, weighting=w) for w in weightings] + [dict(main, loss=f) for f in loss_forms]
    grid += [dict(main, emphasis=e) for e in emphases]
    unique: list[dict] = []
    for params in grid:
        if params not in unique:
            unique.append(params)
    return unique


def probe_weights(model, config: TrainConfig, n: int = 96, seed: int = 0, split: str = "train",
                  device: str | torch.device = "cpu") -> tuple[pd.DataFrame, QuadrupletDataset]:
    """The weight list that training would compute on ``n`` quadruplets of ``split`` (eval transforms,
    one batch, so w has mean 1 over these n pairs). Returns one row per pair (sketch and photo index,
    class, paired, mismatched (the anchor is another class's sketch: ``TrainConfig.mismatched_pairs``), a_loc,
    a_glob, w) and the quadruplet dataset, for showing the images."""
    tf = transforms_for(model, config, train=False)
    data = {d: load_split(config.dataset, split, d, data_root=config.data_root, transform=tf[d])
            for d in ("sketch", "photo")}
    sampler = QuadrupletSampler(data["sketch"].labels, data["sketch"].pair_ids, data["photo"].labels,
                                data["photo"].pair_ids, seed=seed,
                                mismatched=config.mismatched_pairs if split == "train" else 0.0)
    quads = sampler.epoch(0)[:n]
    ds = QuadrupletDataset(data["sketch"], data["photo"], quads)
    batch = stack_quadruplets(torch.utils.data.default_collate([ds[k] for k in range(len(ds))]))
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    model = model.eval().to(device)
    weights = {k: v.cpu().numpy() for k, v in model.weigh(batch).items()}
    names = data["photo"].class_names
    frame = pd.DataFrame({"sketch": quads[:, 0], "photo": quads[:, 1],
                          "class": [names[data["photo"].labels[j]] for j in quads[:, 1]],
                          "paired": [data["sketch"].pair_ids[s] == data["photo"].pair_ids[p] for s, p in quads[:, :2]],
                          "mismatched": sampler.mismatched[quads[:, 1]],
                          **weights})
    return frame, ds


def weight_quality(probe: pd.DataFrame) -> dict:
    """Whether the weight list tracks the injected pair quality: the mean w of mismatched and of sound pairs and
    the correlation of w with being sound (point-biserial, Pearson's r with its p-value; NaN without both kinds)."""
    from scipy import stats

    bad = probe["mismatched"].to_numpy(bool)
    out = {"pairs": len(probe), "mismatched": int(bad.sum()), "mean_w_mismatched": float(probe["w"][bad].mean())
           if bad.any() else float("nan"), "mean_w_sound": float(probe["w"][~bad].mean()) if (~bad).any()
           else float("nan"), "r": float("nan"), "p_value": float("nan")}
    if 0 < bad.sum() < len(bad) and probe["w"].std() > 0:
        r, p = stats.pearsonr((~bad).astype(float), probe["w"].to_numpy(float))
        out.update(r=float(r), p_value=float(p))
    return out


def weight_quality_sentence(quality: dict, digits: int = 2) -> str:
    """One sentence from ``weight_quality``."""
    if not quality["mismatched"]:
        return ("No training pair of this run is mismatched (mismatched_pairs = 0), so the weight list has no "
                "injected low-quality pair to find here.")
    tracks = ("tracks the injected quality: mismatched pairs weigh less" if quality["r"] > 0 and quality["p_value"] < 0.05
              else "weighs mismatched pairs MORE" if quality["r"] < 0 and quality["p_value"] < 0.05
              else "does not separate mismatched from sound pairs measurably")
    return (f"Of {quality['pairs']} probed training pairs {quality['mismatched']} are mismatched (their anchor is "
            f"another class's sketch): mean w {quality['mean_w_mismatched']:.{digits}f} against "
            f"{quality['mean_w_sound']:.{digits}f} for sound pairs, correlation of w with soundness r = "
            f"{quality['r']:+.{digits}f} (p = {quality['p_value']:.2g}). The weight list {tracks}.")


# readable names of the weight-list statistics a DMWA run records per epoch
WEIGHT_STATS = {"stat_w_max": "largest w", "stat_w_min": "smallest w", "stat_w_std": "spread of w (std)",
                "stat_a_loc": "local alignment a_loc", "stat_a_glob": "global alignment a_glob"}


def closing_sentences(history: list[dict], probe: pd.DataFrame, claims: pd.DataFrame, share: float = 0.1,
                      digits: int = 3) -> list[str]:
    """What 04's figures and ablations show, from the main run's history, the probed pairs and ``claims``
    (``findings.claim_table`` of the DMWA claims): how the weighting changed over training, what sets the
    lowest-weighted pairs apart (the lowest and highest ``share`` of the probe), and each claim's verdict."""
    out = []
    first, last = history[0], history[-1]
    if "stat_w_std" in first:
        trend = ("more uneven" if last["stat_w_std"] > first["stat_w_std"] else "more even")
        out.append(f"Over training the weight list became {trend}: its spread within a batch went from "
                   f"{first['stat_w_std']:.{digits}f} in epoch 1 to {last['stat_w_std']:.{digits}f} in epoch "
                   f"{last['epoch'] + 1}, its smallest weight from {first['stat_w_min']:.{digits}f} to "
                   f"{last['stat_w_min']:.{digits}f} (1 would be no weighting at all).")
    k = max(1, int(round(share * len(probe))))
    ranked = probe.sort_values("w")
    low, high = ranked.head(k), ranked.tail(k)
    out.append(f"The {k} lowest-weighted of the {len(probe)} probed pairs (w {low['w'].mean():.2f} on average) have "
               f"global alignment {low['a_glob'].mean():.2f} and local {low['a_loc'].mean():.2f}, the {k} highest "
               f"(w {high['w'].mean():.2f}) {high['a_glob'].mean():.2f} and {high['a_loc'].mean():.2f}; "
               f"{int(low['paired'].sum())} of the lowest and {int(high['paired'].sum())} of the highest are a sketch "
               f"drawn from that very photo{_paired_reading(int(low['paired'].sum()), int(high['paired'].sum()), k)}.")
    for r in (claims.to_dict("records") if len(claims) else []):
        fragile = " (fragile)" if r.get("fragile") else ""
        out.append(f"\"{r['claim']}\": {r['difference']:+.{digits}f} mAP@all over {r['n']} seeds, "
                   f"{r['verdict']}{fragile}.")
    if not len(claims):
        out.append("No ablation pair has results on the same seeds, so no claim is tested on this page.")
    return out


def _paired_reading(low: int, high: int, k: int) -> str:
    if abs(high - low) <= max(1, k // 5):
        return ": being drawn from the same photo barely moves the weight, which follows how alike the features are"
    return (": pairs drawn from the same photo weigh more" if high > low else
            ": pairs drawn from the same photo weigh LESS")


def plot_weight_history(history: list[dict], title: str = ""):
    """The weight list over training: per-epoch means of min, max and spread of w, and of a_loc, a_glob."""
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] + 1 for h in history]
    fig, (ax_w, ax_a) = plt.subplots(1, 2, figsize=(10, 3.2))
    for key, style in (("stat_w_max", "-"), ("stat_w_min", "-"), ("stat_w_std", "--")):
        ax_w.plot(epochs, [h.get(key, np.nan) for h in history], style, marker="o", label=WEIGHT_STATS[key])
    ax_w.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax_w.set(xlabel="epoch", title="weight list per batch (epoch means)")
    for key in ("stat_a_loc", "stat_a_glob"):
        ax_a.plot(epochs, [h.get(key, np.nan) for h in history], marker="o", label=WEIGHT_STATS[key])
    ax_a.set(xlabel="epoch", ylim=(0, 1), title="alignment scores (batch means)")
    for ax in (ax_w, ax_a):
        ax.legend(fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def pair_grid(rows: pd.DataFrame, quads: QuadrupletDataset, title: str):
    """The sketch-photo pairs of ``rows`` (from ``probe_weights``) side by side, titled with their weight
    and alignment scores, four pairs per row."""
    images, titles = [], []
    for _, r in rows.iterrows():
        images += [quads.sketches.load_image(int(r["sketch"])), quads.photos.load_image(int(r["photo"]))]
        titles += [f"{r['class']}\nw={r['w']:.2f}", f"loc {r['a_loc']:.2f} glob {r['a_glob']:.2f}"]
    return image_grid(images, titles, ncols=min(len(images), 2 * 4), suptitle=title)


def ablation_runs(base: TrainConfig, variants: list[dict], seeds: list[int], *,
                  starts: tuple[str, ...] = ("pretrained",)) -> tuple[list[TrainConfig], list[str]]:
    """The config and results label of every variant's run with every seed; the main variant (the first) also from
    every other start (``runs.STARTS``)."""
    import dataclasses

    from .runs import start_overrides

    configs, labels = [], []
    for i, start in enumerate(starts):
        for params in variants if i == 0 else variants[:1]:
            for seed in seeds:
                configs.append(dataclasses.replace(base, **start_overrides(start), method_params=params, seed=seed))
                labels.append(variant_label(params) + (f", {base.mismatched_pairs:.0%} mismatched pairs"
                                                       if base.mismatched_pairs else ""))
    return configs, labels


def run_ablations(base: TrainConfig, variants: list[dict], seeds: list[int], *, preset: str,
                  cluster: tuple[int, int, str] | None, starts: tuple[str, ...] = ("pretrained",), device: str = "auto",
                  if_code_changed: str = "refuse"):
    """Train (or reuse) every run of ``ablation_runs`` and score it on the unseen split (results files labelled by
    ``variant_label``). Returns the paths of the written results files."""
    from .runs import train_and_score

    configs, labels = ablation_runs(base, variants, seeds, starts=starts)
    return train_and_score(configs, preset=preset, cluster=cluster, labels=labels, device=device,
                           if_code_changed=if_code_changed)
