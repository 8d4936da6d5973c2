"""Benchmark: exact ZS-SBIR metrics at QuickDraw-Ext size against the SAKE-style per-query loop.

Default size is the QuickDraw-Ext zero-shot test set (shared reference benchmarks.md, section 1):
92,291 query sketches (3,001 per class, one class 5,262) x 54,151 gallery photos (~1,805 per
class), 30 classes, 512-d float32. Features are synthetic and clustered (a Gaussian centre per
class plus class-specific isotropic noise, seeded), L2-normalised, so the metrics are non-trivial.

1. zssbir: ``evaluate(score_blocks(...))`` -- mAP@all, Prec@100, mAP@200, Prec@200 in one streaming
   pass (per-query values), then both averaging conventions from the same values.
2. Naive: the SAKE evaluation code path (scipy cdist per query block, np.argsort per query, VOC AP
   with the Python envelope loop, per query) on a subsample of queries, extrapolated to all queries.
3. Equality on the subsample: per-query values of (1) (float32 cosine), and of zssbir rerun in
   float64 with Euclidean distance (what the naive loop ranks by), against the naive loop. Same
   convention: VOC AP, mAP@K / min(K, n), Prec@K / min(K, N), ties stable by gallery index (naive:
   stable argsort).

Run: ``python bench/bench_metrics.py`` (full), ``--quick`` (1/10 size) or ``--queries/--gallery``.
Peak memory is the process's maximum resident set size (``resource.getrusage().ru_maxrss``), which
includes the interpreter, torch and the feature matrices. Wall and process CPU times are printed
with the load average: on a shared machine other processes inflate the (2-thread) zssbir times
more than the single-threaded naive loop's.
"""
from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
import torch

from zssbir.eval.metrics import evaluate
from zssbir.eval.exact_search import evaluate_features, score_blocks

METRICS = ("map@all", "prec@100", "map@200", "prec@200")
QUICKDRAW_SKETCHES = [3001] * 29 + [5262]  # per class (cake is the large one)
QUICKDRAW_PHOTOS = [1805] * 29 + [1806]


def class_sizes(total: int, reference: list[int]) -> np.ndarray:
    """Split ``total`` over classes in the proportions of ``reference`` (largest remainder)."""
    w = np.asarray(reference, dtype=np.float64) / sum(reference) * total
    sizes = np.floor(w).astype(np.int64)
    sizes[np.argsort(-(w - sizes), kind="stable")[:total - sizes.sum()]] += 1
    return sizes


def clustered_features(sizes: np.ndarray, centres: torch.Tensor, noise: torch.Tensor, gen: torch.Generator):
    """Rows of class c = centre_c + noise_c * N(0, I), L2-normalised, written in place."""
    x = torch.empty(int(sizes.sum()), centres.shape[1])
    start = 0
    for c, n in enumerate(sizes):
        x[start:start + n].normal_(generator=gen).mul_(noise[c]).add_(centres[c])
        start += n
    x.div_(torch.linalg.vector_norm(x, dim=1, keepdim=True))
    return x, np.repeat(np.arange(len(sizes)), sizes)


class Timer:
    """Wall-clock and process CPU time (all threads) of a with-block, accumulated over uses."""

    def __init__(self):
        self.wall = self.cpu = 0.0

    def __enter__(self):
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall += time.perf_counter() - self._w
        self.cpu += time.process_time() - self._c

    def cells(self) -> str:
        return f"{self.wall:8.1f} {self.cpu:8.1f}"


def timed_blocks(blocks, timer: Timer):
    """Pass blocks through, adding the time spent producing them (the matmuls) to ``timer``."""
    it = iter(blocks)
    while True:
        with timer:
            item = next(it, None)
        if item is None:
            return
        yield item


def sake_style_loop(q: np.ndarray, g: np.ndarray, ql: np.ndarray, gl: np.ndarray, block: int = 100):
    """The SAKE evaluation path: -cdist scores, per-query argsort, VOC AP with a Python envelope loop."""
    from scipy.spatial.distance import cdist

    def voc_ap(rec, prec):
        mrec = np.concatenate([[0.0], rec, [1.0]])
        mpre = np.concatenate([[0.0], prec, [0.0]])
        for i in range(len(mpre) - 2, -1, -1):  # the per-position Python loop of the original
            mpre[i] = max(mpre[i], mpre[i + 1])
        step = mrec[1:] != mrec[:-1]
        return float(np.sum((mrec[1:][step] - mrec[:-1][step]) * mpre[1:][step]))

    def ap(pos, top=None):
        tp, tot_pos = pos, pos.sum()
        if top is not None:
            top = min(top, len(pos))
            tp, tot_pos = pos[:top], min(top, tot_pos)
        hits = np.cumsum(tp)
        return voc_ap(hits / tot_pos, hits / np.arange(1, len(tp) + 1))

    out = {m: np.empty(len(q)) for m in METRICS}
    t_dist, t_metric = Timer(), Timer()
    for s in range(0, len(q), block):
        with t_dist:
            scores = -cdist(q[s:s + block], g)
        with t_metric:
            for i in range(len(scores)):
                pos = gl[np.argsort(-scores[i], kind="stable")] == ql[s + i]  # stable: ties by gallery index
                out["map@all"][s + i] = ap(pos)
                out["map@200"][s + i] = ap(pos, 200)
                out["prec@100"][s + i] = pos[:min(100, len(pos))].mean()
                out["prec@200"][s + i] = pos[:min(200, len(pos))].mean()
    return out, t_dist, t_metric


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def run(n_queries: int, n_gallery: int, dim: int, n_classes: int, subsample: int, block_size: int, seed: int):
    print(f"zssbir metrics bench: {n_queries:,} queries x {n_gallery:,} gallery x {dim}-d float32, "
          f"{n_classes} classes, torch threads {torch.get_num_threads()}, seed {seed}")
    load0 = os.getloadavg()[0]
    t_gen, t_ours, t_mm, t_64 = Timer(), Timer(), Timer(), Timer()
    with t_gen:
        gen = torch.Generator().manual_seed(seed)
        centres = torch.randn(n_classes, dim, generator=gen)
        noise = torch.empty(n_classes).uniform_(2.4, 3.8, generator=gen)  # per-class difficulty
        ref = n_classes == 30
        qsizes = class_sizes(n_queries, QUICKDRAW_SKETCHES if ref else [1] * n_classes)
        gsizes = class_sizes(n_gallery, QUICKDRAW_PHOTOS if ref else [1] * n_classes)
        qf, ql = clustered_features(qsizes, centres, noise, gen)
        gf, gl = clustered_features(gsizes, centres, noise, gen)
    rss_before = rss_gb()

    with t_ours:
        blocks = score_blocks(qf, gf, normalize=False, block_size=block_size, reuse_buffer=True)
        res = evaluate(timed_blocks(blocks, t_mm), ql, gl, metrics=METRICS, block_size=block_size)
        by_class = {m: r.with_average("class") for m, r in res.items()}
    rss_after = rss_gb()

    sub = np.unique(np.linspace(0, n_queries - 1, min(subsample, n_queries)).astype(np.int64))
    naive, t_dist, t_metric = sake_style_loop(qf.numpy()[sub], gf.numpy(), ql[sub], gl)
    with t_64:
        res64 = evaluate_features(qf[sub].double(), gf.double(), ql[sub], gl, metrics=METRICS, metric="euclidean",
                                  normalize=False)

    print("\nconvention: ap=voc, map@K / min(K, n_relevant), prec@K / min(K, gallery), ties stable by gallery index")
    print(f"{'metric':10s} {'query-avg':>10s} {'class-avg':>10s} {'max|diff| f32':>14s} {'max|diff| f64':>14s}")
    worst64 = 0.0
    for m in METRICS:
        d32 = float(np.max(np.abs(res[m].per_query[sub] - naive[m])))
        d64 = float(np.max(np.abs(res64[m].per_query - naive[m])))
        worst64 = max(worst64, d64)
        print(f"{m:10s} {res[m].value:10.4f} {by_class[m].value:10.4f} {d32:14.2e} {d64:14.2e}")
    print(f"max|diff|: per-query values vs the naive loop on {len(sub)} subsampled queries. f32 = the float32\n"
          "cosine run above; f64 = zssbir rerun on the same features in float64 with Euclidean distance, the\n"
          "quantity the naive loop ranks by (-cdist). f32 can differ: the features are unit-norm only to\n"
          "float32 precision (|x| = 1 +- 6e-8), so |q - g| is not exactly a function of q.g and items whose\n"
          "scores lie within ~1e-7 of each other can swap between the cosine and the Euclidean ranking.")

    n_sub = len(sub)
    naive_wall = (t_dist.wall + t_metric.wall) / n_sub * n_queries
    naive_cpu = (t_dist.cpu + t_metric.cpu) / n_sub * n_queries
    t_rank = Timer()
    t_rank.wall, t_rank.cpu = t_ours.wall - t_mm.wall, t_ours.cpu - t_mm.cpu
    print(f"\n{'step':42s} {'wall s':>8s} {'CPU s':>8s}  notes")
    rows = [
        ("feature generation", t_gen.cells(), ""),
        ("zssbir: 4 metrics, both averages", t_ours.cells(),
         f"peak RSS {rss_after:.2f} GB (after features {rss_before:.2f} GB)"),
        ("  of which score matmuls", t_mm.cells(), f"blocks of {block_size} x {n_gallery:,} float32"),
        ("  of which ranks + metrics", t_rank.cells(), ""),
        (f"naive SAKE loop, {n_sub} queries: cdist", t_dist.cells(),
         f"{1e3 * t_dist.wall / n_sub:.1f} ms per query"),
        (f"naive SAKE loop, {n_sub} queries: metrics", t_metric.cells(),
         f"{1e3 * t_metric.wall / n_sub:.1f} ms per query"),
        ("naive, extrapolated to all queries", f"{naive_wall:8.1f} {naive_cpu:8.1f}", f"= {naive_wall / 60:.1f} min wall"),
        (f"zssbir float64 Euclidean rerun, {n_sub} queries", t_64.cells(), ""),
    ]
    for name, cells, note in rows:
        print(f"{name:42s} {cells}  {note}")
    print(f"speed-up over the naive loop: {naive_wall / t_ours.wall:.1f}x wall, {naive_cpu / t_ours.cpu:.1f}x CPU time")
    print(f"peak memory = process max RSS (getrusage ru_maxrss); load average at start {load0:.2f}, "
          f"at end {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (other processes inflate wall times)")
    status = "OK" if worst64 < 1e-6 else "MISMATCH"
    print(f"equality with the naive loop (float64, same convention): max|diff| {worst64:.2e} -> {status}")
    return worst64 < 1e-6


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, default=92291, help="number of query sketches (QuickDraw-Ext: 92,291)")
    p.add_argument("--gallery", type=int, default=54151, help="number of gallery photos (QuickDraw-Ext: 54,151)")
    p.add_argument("--dim", type=int, default=512, help="feature dimension")
    p.add_argument("--classes", type=int, default=30, help="classes (30 follows QuickDraw-Ext's class sizes)")
    p.add_argument("--subsample", type=int, default=300, help="queries run through the naive loop")
    p.add_argument("--block-size", type=int, default=1024, help="queries per score block")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="1/10 of the default size, 100 naive queries")
    a = p.parse_args(argv)
    if a.quick:
        a.queries, a.gallery, a.subsample = a.queries // 10, a.gallery // 10, min(a.subsample, 100)
    ok = run(a.queries, a.gallery, a.dim, a.classes, a.subsample, a.block_size, a.seed)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
