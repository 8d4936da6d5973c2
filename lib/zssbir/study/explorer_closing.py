"""The closing prose of ``06_explore``: what its static views show, computed from them. Beside the summaries of
``scoring.explore_sentences`` (AP against exact retrieval, the K sweep, the weight list), it interprets: which fixed
queries fall into a PQ cell holding few photos of their class (those photos open the cluster list), whether a finer
clustering helps the first query, how a DMWA pair's weight follows its sketch's ink, and the stripes of the shown
pairs' attention matrices."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .closing import count_of, listed, markdown
from .explorer_pairs import stripe_share
from .scoring import explore_sentences


def cell_sentence(comparisons: Sequence, class_names: Sequence[str], few: float = 0.1) -> str | None:
    """How many fixed queries (``explorer.Comparison``) fall into a PQ cell in which at most ``few`` of the photos
    are of their class, which class fills those cells, and where their first correct photo comes."""
    if not comparisons:
        return None
    low = [c for c in comparisons if c.cell.share == c.cell.share and c.cell.share <= few]
    head = (f"{count_of(len(low), len(comparisons), 'fixed queries')} fall into a PQ cell in which at most {few:.0%} "
            "of the photos are of their class")
    if not low:
        shares = listed(f"{c.cell.share:.0%}" for c in comparisons)
        own = all(c.cell.share >= 0.5 for c in comparisons)
        return (head + f"; their cells hold {shares} of their class" + (
            ": each lands among photos of its own class, so the cell that opens its cluster list helps it." if own else
            ": the cell that opens each cluster list is mixed, and the rest of the list decides the AP."))
    parts = []
    for c in low:
        others = [(name, n) for name, n in c.cell.classes.items() if name != class_names[c.query.label]]
        fill, n = others[0] if others else ("no other class", 0)
        parts.append(f"{c.query.source} into a cell of {len(c.cell.members)} photos, {c.cell.share:.0%} its class and "
                     f"{n / max(len(c.cell.members), 1):.0%} {fill}, its first correct photo at rank "
                     f"{c.cluster.first_correct} against {c.exact.first_correct} by exact retrieval")
    fuse = any(getattr(c, "settings", {}).get("variant") == "fuse" for c in low)
    return (head + f" ({'; '.join(parts)}). The photos of the query's cell come "
            + ("near the top of" if fuse else "first in") + " the cluster list, so such a query starts with a block of "
            "another class: the model put the sketch nearer that class's photos than "
            "its own, which a clustering of the gallery alone cannot change.")


def sweep_sentence(sweep: pd.DataFrame | None) -> str | None:
    """Whether a finer clustering (larger K) brings the first query's cell closer to its class."""
    if sweep is None or not len(sweep):
        return None
    share = sweep["cell share of the class"].fillna(0.0)
    best = share.idxmax()
    if share.max() >= 0.5:
        mostly = listed(str(k) for k in share.index[share >= 0.5])
        return (f"The first query's cell is mostly of its class at K = {mostly} (up to {share.max():.0%} at K = {best}): there a finer or coarser clustering decides whether its "
                "list opens with its class.")
    return (f"At no K from {sweep.index[0]} to {sweep.index[-1]} is the first query's cell mostly of its class "
            f"(at most {share.max():.0%}, at K = {best}): a finer clustering shrinks the cell but does not move the sketch "
            "closer to its class's photos.")


def pair_sentences(frame: pd.DataFrame | None, ink: pd.Series | None = None, pairs: Sequence[dict] = ()) -> list[str]:
    """What the DMWA weight list (``PairProbe.frame``) does with busy sketches (``PairProbe.ink``) and what the
    shown pairs' attention matrices (``PairProbe.pair``) look like (``explorer_pairs.stripe_share``)."""
    out = []
    if frame is not None and ink is not None and len(frame) > 2:
        rho = frame["w"].corr(ink, method="spearman")
        order = frame["w"].sort_values().index
        k = max(1, len(frame) // 4)
        low, high = ink.loc[order[:k]].mean(), ink.loc[order[-k:]].mean()
        trend = ("the busier the sketch, the lower its weight" if rho <= -0.3 else
                 "the busier the sketch, the higher its weight" if rho >= 0.3 else
                 "a sketch's ink says little about its weight")
        out.append(f"Across the weight list, w and the sketch's ink (its share of dark pixels) have rank correlation "
                   f"{rho:.2f}: {trend}; the {k} lowest-weighted pairs' sketches carry {low:.1%} ink on average, the "
                   f"{k} highest-weighted {high:.1%}.")
    if len(pairs):
        shares = [(p["w"], stripe_share(p), 1 / np.asarray(p["sketch_to_photo"]).shape[1]) for p in pairs]
        shares.sort()
        listed_ = "; ".join(f"w {w:.2f}: {s:.0%}" for w, s, _ in shares)
        text = (f"In the attention matrices shown, the share of sketch tokens that attend most to one and the same "
                f"photo token (a vertical stripe) is {listed_} (one token in {round(1 / shares[0][2])}, "
                f"{shares[0][2]:.0%}, if each sketch token looked at its own spot)")
        if len(shares) >= 2:
            half = len(shares) // 2
            low, high = np.mean([s for _, s, _ in shares[:half]]), np.mean([s for _, s, _ in shares[-half:]])
            if low > high + 0.1:
                text += (": the stripes mark the pairs the list weighs down, where the sketch's parts find no "
                         "matching parts in the photo and all look at the same spot, and a_loc and w are low")
            elif high > low + 0.1:
                text += ": the stripes come with the highest weights, so they are not what the list penalises"
            else:
                text += ": striped and spread attention come with low and high weights alike"
        out.append(text + ".")
    return out


def sentences(comparisons: Sequence, class_names: Sequence[str], sweep: pd.DataFrame | None = None,
              frame: pd.DataFrame | None = None, ink: pd.Series | None = None, pairs: Sequence[dict] = (),
              few: float = 0.1, digits: int = 3) -> list[str]:
    """06's closing sentences, in the page's order: the fixed queries (AP, then their cells), the K sweep, the DMWA
    weight list and the shown pairs."""
    out = explore_sentences(comparisons, digits=digits)
    out += [s for s in (cell_sentence(comparisons, class_names, few),) if s]
    out += explore_sentences([], sweep, digits=digits) + [s for s in (sweep_sentence(sweep),) if s]
    out += explore_sentences([], None, frame, digits=digits) + pair_sentences(frame, ink, pairs)
    return out


def conclusion(comparisons: Sequence, class_names: Sequence[str], sweep: pd.DataFrame | None = None, probe=None,
               pairs: Sequence[dict] = (), few: float = 0.1):
    """``sentences`` as the page's closing Markdown (``probe``: the ``PairProbe`` whose pairs were shown)."""
    frame, ink = (probe.frame, probe.ink()) if probe is not None else (None, None)
    return markdown(sentences(comparisons, class_names, sweep, frame, ink, pairs, few))
