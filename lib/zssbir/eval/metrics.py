"""Retrieval metrics for ZS-SBIR with every convention named, defined and selectable.

The published code bases disagree (see the shared reference ``benchmarks.md``, section 6), so each
choice is an explicit parameter and every result records the convention it used. Metrics know
nothing of models or data: they take scores (a full matrix or query blocks) and labels.

Setting. A query (sketch) ranks the N gallery items (photos) by score: SIMILARITIES, higher first
(``higher_is_better=False`` for distances); equal scores are ordered by the tie policy ``ties``
(``"stable"``: gallery index; ``"random"``: a seeded random permutation; ``"secondary"``: a second
score array, then index; see ``zssbir.eval.relevant_ranks``). A gallery item is relevant when its label equals
the query's. For one query let n be its number of relevant items and r_1 < ... < r_n their 1-based
ranks; precision at the i-th hit is p_i = i / r_i. K is clipped to N (``K := min(K, N)``).

AP flavour (``ap``):
  "exact"  non-interpolated AP: mean of p_i over all n relevant items. Equals
           ``sklearn.metrics.average_precision_score`` when no scores tie (sklearn instead merges
           tied scores into one threshold; here ties follow the tie policy).
  "tie_merged"  sklearn's ``average_precision_score`` (Sem-PCYC): items with EQUAL scores form one
           threshold, so the tie order does not matter. With u_i = the number of gallery items scored
           at least as well as relevant item i (the end of its tie group) and c_i = the number of
           relevant items among them, AP = (1/n) sum_i c_i / u_i. Without ties it equals "exact".
           At @K (Sem-PCYC's ``apsak``) the top-K list is cut by the tie policy, then ties inside
           the list are merged: u_i := min(u_i, K) and c_i counts the relevant items of the list.
  "voc"    VOC-interpolated AP (SAKE, DSN, ClusterRetri, ZSE-SBIR ``voc_ap``): the precision curve
           is replaced by its envelope, made monotone non-increasing from the right
           (e_i = max_{j >= i} p_j; precision only peaks at hits), then averaged over the recall
           steps, i.e. over the relevant items: AP = (1/n) sum_i e_i.
mAP@all: the AP above over the whole ranking.
AP@K (``map_k_denominator``): only hits with r_i <= K count. For ``ap="voc"`` the envelope is taken
  over the TRUNCATED ranking (e_i = max over hits j >= i with r_j <= K), as the SAKE/ZSE-SBIR code
  truncates before interpolating. With S_K the sum of p_i (or e_i) over hits inside the top K:
  "min_k_relevant"    S_K / min(K, n)  (SAKE, ZSE-SBIR: recall denominator capped at K).
  "relevant_in_topk"  S_K / h_K, h_K = number of hits inside the top K; 0 if h_K = 0 (Sem-PCYC:
                      sklearn AP on the top-K list only).
Prec@K (``prec_k_denominator``):
  "min_k_gallery"     h_K / min(K, N)  (SAKE, Sem-PCYC).
  "min_k_relevant"    h_K' / K' with K' = min(K, n) (ZSE-SBIR ``precision_eval``: the ranking is
                      cut at min(K, n) and divided by it; equals h_K / K whenever n >= K, the case of
                      every standard benchmark).
Averaging (``average``):
  "query"  mean over all evaluated queries (ZSE-SBIR, Sem-PCYC, Doodle2Search, Sketch-LVM).
  "class"  mean over the queries of each class, then mean over classes (macro; DSN/SAKE-style,
           ClusterRetri).
Queries whose class has no gallery item: ``ValueError`` naming the classes, unless
``skip_missing=True``: then their per-query value is NaN and they are left out of every average.
The published code differs here: ZSE-SBIR leaves such queries out (nanmean over queries, as
``skip_missing``); SAKE and ClusterRetri average per class with nanmean, so a class without gallery
items gives a NaN class mean and a NaN mAP, while their precision counts such queries as 0;
Sem-PCYC counts them as 0 in both. NaN or inf scores: ``ValueError``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
import re

import numpy as np

from .relevant_ranks import RANK_BACKENDS, LabelIndex, RankBlock, iter_rank_blocks, iter_score_blocks, label_index

AP_FLAVOURS = ("voc", "exact", "tie_merged")
MAP_K_DENOMINATORS = ("min_k_relevant", "relevant_in_topk")
PREC_K_DENOMINATORS = ("min_k_gallery", "min_k_relevant")
AVERAGES = ("query", "class")
DEFAULT_METRICS = ("map@all", "prec@100", "map@200", "prec@200")

# The conventions most published code shares; every result records what it used.
DEFAULT_CONVENTION = {"ap": "voc", "map_k_denominator": "min_k_relevant",
                      "prec_k_denominator": "min_k_gallery", "average": "query"}

# Conventions of the reference code bases. None fixes the tie rule: they all use numpy's unstable
# argsort (implementation-defined order); ``evaluate`` uses ``ties`` (default "stable") instead.
PRESETS: dict[str, dict[str, str]] = {
    # SAKE (Liu et al. 2019, github qliu24/SAKE, test_cse_resnet_*_zeroshot.py; DSN shares it):
    # eval_AP_inner + VOCap, eval_precision divides by min(top, gallery); per-class nanmean lists.
    "sake": {"ap": "voc", "map_k_denominator": "min_k_relevant", "prec_k_denominator": "min_k_gallery",
             "average": "class"},
    # ZSE-SBIR (Lin et al. 2023, github buptLinfy/ZSE-SBIR, utils/ap.py): voc_eval with
    # tot_pos = min(top, #relevant); precision_eval cuts at min(top, #relevant); nanmean over queries.
    "zse_sbir": {"ap": "voc", "map_k_denominator": "min_k_relevant", "prec_k_denominator": "min_k_relevant",
                 "average": "query"},
    # Sem-PCYC (Dutta & Akata 2019, github AnjanDutta/sem-pcyc, src/utils.py): sklearn
    # average_precision_score per query (apsak: on the top-K list, 0 if no hit); prec divides by
    # min(k, len(top-k list)); plain mean over queries.
    "sem_pcyc": {"ap": "tie_merged", "map_k_denominator": "relevant_in_topk", "prec_k_denominator": "min_k_gallery",
                 "average": "query"},
    # ClusterRetri: SAKE-derived evaluation (VOC AP, SAKE denominators), class averaging
    # (shared reference benchmarks.md, section 6).
    "clusterretri": {"ap": "voc", "map_k_denominator": "min_k_relevant", "prec_k_denominator": "min_k_gallery",
                     "average": "class"},
}


def parse_metric(name: str) -> tuple[str, int | None]:
    """'map@all' -> ('map', None); 'map@200' -> ('map', 200); 'prec@100' -> ('prec', 100)."""
    m = re.fullmatch(r"(map|prec)@(all|\d+)", str(name).strip().lower())
    if not m or (m.group(1) == "prec" and m.group(2) == "all") or m.group(2) == "0":
        raise ValueError(f"unknown metric {name!r}; use 'map@all', 'map@<K>' or 'prec@<K>' with K >= 1")
    return m.group(1), None if m.group(2) == "all" else int(m.group(2))


def resolve_convention(preset: str | None = None, **overrides) -> dict[str, str]:
    """DEFAULT_CONVENTION, updated by a preset, updated by explicit (non-None) arguments; validated."""
    conv = dict(DEFAULT_CONVENTION)
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
        conv.update(PRESETS[preset])
    conv.update({k: v for k, v in overrides.items() if v is not None})
    for key, allowed in (("ap", AP_FLAVOURS), ("map_k_denominator", MAP_K_DENOMINATORS),
                         ("prec_k_denominator", PREC_K_DENOMINATORS), ("average", AVERAGES)):
        if conv[key] not in allowed:
            raise ValueError(f"unknown {key}={conv[key]!r}; expected one of {allowed}")
    return conv


def query_values(ranks: np.ndarray, n_gallery: int, metric: str, *, ap: str = "voc",
                 map_k_denominator: str = "min_k_relevant", prec_k_denominator: str = "min_k_gallery",
                 upper: np.ndarray | None = None) -> np.ndarray:
    """Per-query value of ``metric`` from ``ranks``: (b, n) ascending 1-based ranks of the n >= 1
    relevant items of b queries (the definitions are in the module docstring). ``ap="tie_merged"``
    also needs ``upper``: (b, n) ascending, for each relevant item the number of gallery items scored at
    least as well (``tie_group_ends``)."""
    ranks = np.asarray(ranks)
    if ranks.ndim != 2 or ranks.shape[1] == 0:
        raise ValueError(f"ranks must be (queries, n_relevant >= 1), got shape {ranks.shape}")
    kind, k = parse_metric(metric)
    n = ranks.shape[1]
    kk = n_gallery if k is None else min(k, n_gallery)
    inside = ranks <= kk
    if kind == "prec":
        if prec_k_denominator == "min_k_gallery":
            return inside.sum(1) / kk
        if prec_k_denominator == "min_k_relevant":
            return (ranks <= min(kk, n)).sum(1) / min(kk, n)
        raise ValueError(f"unknown prec_k_denominator={prec_k_denominator!r}; expected one of {PREC_K_DENOMINATORS}")
    if ap == "tie_merged":
        if upper is None:
            raise ValueError("ap='tie_merged' needs the tie-group ends of the relevant items (upper=)")
        u = np.minimum(np.asarray(upper), kk)
        # relevant items of the (cut) list scored at least as well: those inside with u_j <= u_i
        counted = np.where(inside, u, np.iinfo(np.int64).max)
        c = np.stack([np.searchsorted(np.sort(row), row, side="right") for row in counted]) if len(u) else u
        prec = np.where(inside, c / u, 0.0)
    else:
        prec = np.arange(1, n + 1) / ranks
        prec[~inside] = 0.0
    if ap == "voc":  # envelope over the truncated ranking: suffix maximum along each row
        prec = np.maximum.accumulate(prec[:, ::-1], axis=1)[:, ::-1]
        prec[~inside] = 0.0
    elif ap not in ("exact", "tie_merged"):
        raise ValueError(f"unknown ap={ap!r}; expected one of {AP_FLAVOURS}")
    total = prec.sum(1)
    if map_k_denominator == "min_k_relevant":
        return total / min(kk, n)
    if map_k_denominator == "relevant_in_topk":
        hits = inside.sum(1)
        return np.divide(total, hits, out=np.zeros(len(total)), where=hits > 0)
    raise ValueError(f"unknown map_k_denominator={map_k_denominator!r}; expected one of {MAP_K_DENOMINATORS}")


def average_values(per_query: np.ndarray, query_labels, average: str) -> float:
    """Mean over evaluated (non-NaN) queries, or mean of per-class means (``average="class"``)."""
    per_query = np.asarray(per_query, dtype=np.float64)
    ok = ~np.isnan(per_query)
    if not ok.any():
        raise ValueError("no query could be evaluated (every query lacks relevant gallery items)")
    if average == "query":
        return float(per_query[ok].mean())
    if average == "class":
        _, inv = np.unique(np.asarray(query_labels)[ok], return_inverse=True)
        return float((np.bincount(inv, weights=per_query[ok]) / np.bincount(inv)).mean())
    raise ValueError(f"unknown average={average!r}; expected one of {AVERAGES}")


@dataclass(frozen=True)
class MetricResult:
    """One metric: its value, the per-query values behind it (NaN = skipped query), the query
    labels (for re-averaging) and the full convention that produced it."""

    name: str
    value: float
    per_query: np.ndarray = field(repr=False)
    query_labels: np.ndarray = field(repr=False)
    convention: dict = field(default_factory=dict)

    def with_average(self, average: str) -> MetricResult:
        """The same per-query values averaged the other way (no recomputation of ranks)."""
        value = average_values(self.per_query, self.query_labels, average)
        return replace(self, value=value, convention={**self.convention, "average": average})

    def per_class(self) -> dict:
        """Class label -> mean over that class's evaluated queries."""
        ok = ~np.isnan(self.per_query)
        labels = self.query_labels[ok]
        return {c.item() if hasattr(c, "item") else c: float(self.per_query[ok][labels == c].mean())
                for c in np.unique(labels)}

    def to_dict(self, per_query: bool = False) -> dict:
        """JSON-ready summary (per-query values only on request)."""
        out = {"name": self.name, "value": self.value, "convention": dict(self.convention)}
        if per_query:
            out["per_query"] = [None if np.isnan(v) else float(v) for v in self.per_query]
        return out


def evaluate(scores, query_labels, gallery_labels, *, metrics: Sequence[str] | str = DEFAULT_METRICS,
             preset: str | None = None, ap: str | None = None, map_k_denominator: str | None = None,
             prec_k_denominator: str | None = None, average: str | None = None, ties: str = "stable",
             seed: int | None = None, secondary=None, higher_is_better: bool = True,
             secondary_higher_is_better: bool | None = None, skip_missing: bool = False,
             block_size: int = 1024, num_threads: int | None = None, rank_backend: str = "numpy",
             device=None) -> dict[str, MetricResult]:
    """Compute ``metrics`` over all queries in one streaming pass; returns name -> MetricResult.

    ``scores``: a (Q, N) similarity matrix (numpy or torch), a callable ``f(start, end)`` returning
    a query block, or an iterable of ``(start, end, block[, secondary_block])`` such as
    ``zssbir.eval.exact_search.score_blocks(...)`` (then the full matrix never exists). Conventions:
    explicit arguments > ``preset`` (a key of ``PRESETS``) > ``DEFAULT_CONVENTION``; the tie
    policy (``ties``, ``seed``, ``secondary``) and score direction (``higher_is_better``) are
    described in ``zssbir.eval.relevant_ranks``. ``num_threads`` defaults to torch's thread count.
    ``rank_backend``: "numpy" (the CPU) or "torch" (ranks, and for ap="tie_merged" the tie-group ends, computed
    with torch where the score blocks are, e.g. CUDA tensors, or on ``device``; only the ranks come to the host):
    the same ranks, so the same values, bit for bit (``relevant_ranks``).
    """
    if rank_backend not in RANK_BACKENDS:
        raise ValueError(f"unknown rank_backend={rank_backend!r}; expected one of {RANK_BACKENDS}")
    if rank_backend == "numpy" and device is not None and str(device) != "cpu":
        raise ValueError(f"rank_backend='numpy' ranks on the CPU, not on {device}; pass rank_backend='torch' to "
                         "rank there")
    merged = resolve_convention(preset, ap=ap)["ap"] == "tie_merged"
    current: dict = {}

    def recorded(labels):  # the score blocks, each kept while its ranks are turned into values
        for item in iter_score_blocks(scores, len(labels.query_codes), labels.n_gallery, secondary=secondary,
                                      block_size=block_size):
            current["block"] = item
            yield item

    def numpy_ranks(labels):
        return iter_rank_blocks(recorded(labels) if merged else scores, labels, higher_is_better=higher_is_better,
                                ties=ties, seed=seed, secondary=secondary if not merged else None,
                                secondary_higher_is_better=secondary_higher_is_better, block_size=block_size,
                                num_threads=num_threads)

    def numpy_upper(labels, rows):
        start, _, block, _ = current["block"]
        return tie_group_ends(block[rows - start], labels.relevant[labels.query_codes[rows[0]]], higher_is_better)

    def torch_ranks(labels):  # the tie-group ends come with the ranks (RankBlock.upper)
        for rb in iter_rank_blocks(scores, labels, higher_is_better=higher_is_better, ties=ties, seed=seed,
                                   secondary=secondary, secondary_higher_is_better=secondary_higher_is_better,
                                   block_size=block_size, backend="torch", device=device, tie_groups=merged):
            current["upper"] = {int(rows[0]): up for (rows, _), up in zip(rb.groups, rb.upper or ())}
            yield rb

    def torch_upper(labels, rows):
        return current["upper"][int(rows[0])]

    rank_blocks, upper = (torch_ranks, torch_upper) if rank_backend == "torch" else (numpy_ranks, numpy_upper)
    order = {"ties": ties, "seed": seed if ties == "random" else None, "higher_is_better": bool(higher_is_better)}
    if ties == "secondary":
        order["secondary_higher_is_better"] = bool(higher_is_better if secondary_higher_is_better is None
                                                   else secondary_higher_is_better)
    return evaluate_rank_blocks(rank_blocks, query_labels, gallery_labels, order, metrics=metrics, preset=preset,
                                ap=ap, map_k_denominator=map_k_denominator, prec_k_denominator=prec_k_denominator,
                                average=average, skip_missing=skip_missing, upper=upper if merged else None)


def tie_group_ends(block: np.ndarray, relevant: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """(b, n) ascending: for each query row of ``block`` and each relevant gallery column, the number of
    gallery items scored at least as well (the 1-based end of its tie group; -0.0 equals +0.0)."""
    x = np.asarray(block, dtype=np.float64)
    x = -x if higher_is_better else x                          # smaller is better from here on
    ordered = np.sort(x, axis=1)
    rel = x[:, relevant]
    return np.sort(np.stack([np.searchsorted(o, r, side="right") for o, r in zip(ordered, rel)]), axis=1)


def evaluate_rank_blocks(rank_blocks: Callable[[LabelIndex], Iterable[RankBlock]], query_labels, gallery_labels,
                         order: dict, *, metrics: Sequence[str] | str = DEFAULT_METRICS, preset: str | None = None,
                         ap: str | None = None, map_k_denominator: str | None = None,
                         prec_k_denominator: str | None = None, average: str | None = None,
                         skip_missing: bool = False, upper: Callable | None = None) -> dict[str, MetricResult]:
    """``evaluate`` from ranks: ``rank_blocks(labels)`` yields the ``RankBlock`` s of every query
    (``relevant_ranks.iter_rank_blocks`` for score matrices; ``cell_ranks`` for scores constant on
    cells) and ``order`` is the ranking's record (ties, seed, higher_is_better, ...) for each
    result's convention. Same validation, per-query values and averages as ``evaluate``. ``ap="tie_merged"``
    also needs ``upper(labels, rows)``: the tie-group ends of the relevant items of the query rows of the
    block just yielded (``evaluate`` computes them from its score blocks)."""
    conv = resolve_convention(preset, ap=ap, map_k_denominator=map_k_denominator,
                              prec_k_denominator=prec_k_denominator, average=average)
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    if not names:
        raise ValueError("metrics must name at least one metric")
    parsed = {name: parse_metric(name) for name in names}
    labels = label_index(query_labels, gallery_labels)
    missing = labels.missing()
    n_missing = int((labels.n_relevant[labels.query_codes] == 0).sum())
    if n_missing and not skip_missing:
        shown = ", ".join(repr(m.item() if hasattr(m, "item") else m) for m in missing[:10])
        raise ValueError(f"{n_missing} queries have no relevant gallery item: their classes "
                         f"{shown}{' ...' if len(missing) > 10 else ''} are missing from the gallery. "
                         "Fix the split, or pass skip_missing=True to leave those queries out of every "
                         "average (their per-query values are NaN).")
    values = {name: np.full(len(labels.query_codes), np.nan) for name in names}
    if conv["ap"] == "tie_merged" and upper is None:
        raise ValueError("ap='tie_merged' needs the scores themselves: use evaluate() on score blocks")
    for block in rank_blocks(labels):
        for rows, ranks in block.groups:
            ends = upper(labels, np.asarray(rows)) if conv["ap"] == "tie_merged" else None
            for name in names:
                values[name][rows] = query_values(ranks, labels.n_gallery, name, ap=conv["ap"],
                                                  map_k_denominator=conv["map_k_denominator"],
                                                  prec_k_denominator=conv["prec_k_denominator"], upper=ends)
    qlabels = labels.classes[labels.query_codes]
    results = {}
    for name, (kind, k) in parsed.items():
        specific = ({"ap": conv["ap"], "map_k_denominator": conv["map_k_denominator"]} if kind == "map"
                    else {"prec_k_denominator": conv["prec_k_denominator"]})
        convention = {"metric": kind, "k": k, **specific, "average": conv["average"], **order, "preset": preset,
                      "n_queries": len(qlabels), "n_evaluated": len(qlabels) - n_missing,
                      "n_gallery": labels.n_gallery, "skip_missing": bool(skip_missing)}
        results[name] = MetricResult(name, average_values(values[name], qlabels, conv["average"]),
                                     values[name], qlabels, convention)
    return results
