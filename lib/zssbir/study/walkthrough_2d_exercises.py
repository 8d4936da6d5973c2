"""The two exercises of notebook ``07_methods_in_2d``, answered from its toys (``walkthrough_2d``): L_DA of changed
features against the same Gaussian draws, and how many centroids ADC needs to rank the toy gallery like the exact
distance (``tests/test_walkthrough_exercises.py``)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..eval.cluster_retrieval import ClusterIndex
from ..training.losses import alignment_kl
from .walkthrough_2d import rank_correlation


def lda_views(result: dict, shift: float = 3.0, scales=(2.0, 0.5)) -> pd.DataFrame:
    """Exercise 1: L_DA (``alignment_kl``) of the trained features of ``lda_training`` against one fixed set of its
    Gaussian draws, and of the same features shifted by ``shift`` on every channel, scaled by each of ``scales``, and
    set to zero (a flat softmax)."""
    f = torch.as_tensor(result["snapshots"][max(result["snapshots"])])
    views = {"trained features": f, f"plus {shift:g} on every channel": f + shift,
             **{f"times {s:g}": f * s for s in scales}, "all zero (a flat softmax)": torch.zeros_like(f)}
    z = torch.as_tensor(result["target"])
    frame = pd.DataFrame({"features": list(views), "L_DA": [float(alignment_kl(v, z)) for v in views.values()]})
    frame.attrs.update(floor=result["floor"])
    return frame


def lda_views_answer(frame: pd.DataFrame) -> str:
    """What ``lda_views`` shows: the shift changes nothing, the scale does, and which features score lowest."""
    loss = dict(zip(frame["features"], frame["L_DA"]))
    trained, shifted = frame["L_DA"].iloc[0], frame["L_DA"].iloc[1]
    scaled = [(name, v) for name, v in loss.items() if name.startswith("times ")]
    lowest = min(loss, key=loss.get)
    return (f"A shift shared by every channel leaves L_DA {'unchanged' if abs(shifted - trained) < 1e-4 else 'changed'}"
            f" ({trained:.3f}, then {shifted:.3f}): softmax ignores the level of a feature. A scale changes it ("
            + ", ".join(f"{name}: {v:.3f}" for name, v in scaled) + "): the scale sets how peaked the softmax is. "
            f"Lowest of all: {lowest}, at {loss[lowest]:.3f} against these draws (a flat softmax averages "
            f"{frame.attrs['floor']:.3f} over many draws: the floor of section 1)"
            + (": on its own, L_DA pulls every feature towards carrying no channel profile at all, and only the "
               "classification (and distillation) loss it is added to keeps the features informative; lambda_da sets "
               "the balance." if lowest.startswith("all zero") else "."))


def adc_k_sweep(points: np.ndarray, query, Ks, *, Ms=(1, 2), seed: int = 0) -> pd.DataFrame:
    """Exercise 2: per M and K, the gallery's distinct ADC values to the query (at most the cells it uses) and ADC's rank
    correlation with the exact distance (``ClusterIndex`` on the raw plane, as ``pq_cells``)."""
    q = np.asarray(query, dtype=np.float32)[None]
    exact = ((points - q) ** 2).sum(1)
    rows = []
    for M in Ms:
        for K in Ks:
            index = ClusterIndex.fit(points, M, K, seed=seed, normalize=False)
            adc = index.adc(q)[0]
            rows.append({"M": M, "K": K, "distinct ADC values": len(np.unique(adc)),
                         "rank correlation": rank_correlation(adc, exact)})
    return pd.DataFrame(rows)


def adc_k_answer(frame: pd.DataFrame, target: float = 0.95) -> str:
    """The smallest K of each M whose ADC ranks the gallery with rank correlation at least ``target``."""
    parts = []
    for M, rows in frame.groupby("M"):
        hit = rows[rows["rank correlation"] >= target]
        parts.append(f"with M = {M} first at K = {hit['K'].iloc[0]} ({hit['distinct ADC values'].iloc[0]} distinct "
                     "values)" if len(hit) else
                     f"with M = {M} at no K up to {rows['K'].max()} (best {rows['rank correlation'].max():.3f})")
    return (f"ADC ranks the gallery like the exact distance (rank correlation at least {target:g}) " + "; ".join(parts)
            + ". Product cells multiply: M sub-spaces of K centroids give up to K^M cells, so at the same K (and the "
            "same k-means work per sub-space) M = 2 tells more distances apart.")
