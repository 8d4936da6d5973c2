"""Speed of cluster-then-retrieve (zssbir.eval.cluster_retrieval) against exact retrieval, at Sketchy split-1 size.

Synthetic, seeded features: 25 classes in 5 super-classes (class centre = super-class direction +
0.5 x own direction, normalised), photos = centre + noise of norm about 1.5, sketches = centre + a
shared domain shift + noise of norm about 2.5; all L2-normalised by the retrieval code. The mAP
values only show that both paths compute sensible numbers on the same data: isotropic noise is what
k-means removes best, so the gap between the methods says nothing about real features.

Timings: "fit" = k-means of the gallery (M sub-spaces x K centroids); "score" = producing every
distance block, discarded; "query" = scoring plus all four metrics in one streaming pass of
``zssbir.eval.metrics.evaluate`` (what a user pays per evaluation); "ratio" = query time / exact query time.
Variant "adc" is ranked by its PQ cells (path "auto", ``zssbir.eval.cell_ranks``) and, for comparison,
by its (Q, N) distance blocks (path "scores"); both give identical values. The M x K grid over
k-means seeds is ``bench/bench_cluster_grid.py``.

    python bench/bench_clustering.py            # full size, about a minute on 2 CPU cores
    python bench/bench_clustering.py --quick    # small sizes, a few seconds
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from zssbir.eval.cluster_retrieval import ClusterIndex
from zssbir.eval.exact_search import evaluate_features, score_blocks

METRICS = ("map@all", "prec@100", "map@200", "prec@200")
PRESET = "clusterretri"  # VOC AP, SAKE denominators, class averaging


def features(n_gallery: int, n_query: int, dim: int, n_classes: int, seed: int):
    rng = np.random.default_rng(seed)
    n_super = 5
    centres = rng.standard_normal((n_super, dim))[np.arange(n_classes) % n_super] \
        + 0.5 * rng.standard_normal((n_classes, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    shift = 0.5 * rng.standard_normal(dim) / np.sqrt(dim)

    def draw(n, noise, offset):
        y = rng.permutation(np.arange(n) % n_classes)
        x = centres[y] + offset + noise * rng.standard_normal((n, dim)) / np.sqrt(dim)
        return x.astype(np.float32), y

    (g, gl), (q, ql) = draw(n_gallery, 1.5, 0.0), draw(n_query, 2.5, shift)
    return q, g, ql, gl


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def consume(blocks) -> None:
    for _ in blocks:
        pass


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes (2,000 photos, 1,500 sketches)")
    p.add_argument("--M", type=int, default=2, help="sub-spaces")
    p.add_argument("--K", type=int, default=32, help="centroids per sub-space")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic features")
    p.add_argument("--block-size", type=int, default=1024, help="queries per score block")
    args = p.parse_args(argv)

    n_gallery, n_query = (2000, 1500) if args.quick else (17101, 15229)
    dim, n_classes = 512, 25
    q, g, ql, gl = features(n_gallery, n_query, dim, n_classes, args.seed)
    print(f"bench_clustering: {n_query:,} queries x {n_gallery:,} gallery items, D = {dim}, {n_classes} classes, "
          f"M = {args.M}, K = {args.K}, k-means seed 123, feature seed {args.seed}, torch threads "
          f"{torch.get_num_threads()}, block size {args.block_size}")
    print(f"metrics: {', '.join(METRICS)} under preset {PRESET!r} (VOC AP, class-averaged); "
          "ties: adc/fuse random (seeded by the k-means seed), rerank by exact distance (nearest first); "
          "adc is ranked by PQ cells (path 'auto'), 'adc, scores path' ranks the (Q, N) ADC blocks instead\n")

    bs = args.block_size
    index, fit_s = timed(lambda: ClusterIndex.fit(g, args.M, args.K))
    rows = []
    _, score_s = timed(lambda: consume(score_blocks(q, g, block_size=bs, reuse_buffer=True)))
    exact, query_s = timed(lambda: evaluate_features(q, g, ql, gl, metrics=METRICS, preset=PRESET, block_size=bs))
    rows.append(("exact (cosine)", float("nan"), score_s, query_s, exact))
    for variant, path in (("adc", "auto"), ("adc", "scores"), ("fuse", "auto"), ("rerank", "auto")):
        _, score_s = timed(lambda: consume(index.score_blocks(q, variant, block_size=bs, reuse_buffer=True)))
        res, query_s = timed(lambda: index.evaluate(q, ql, gl, variant=variant, metrics=METRICS, preset=PRESET,
                                                    block_size=bs, path=path))
        name = f"cluster {variant}{', scores path' if path == 'scores' else ''} M={args.M} K={args.K}"
        rows.append((name, fit_s, score_s, query_s, res))

    exact_query = rows[0][3]
    head = f"{'method':<37} {'fit s':>7} {'score s':>8} {'query s':>8} {'ratio':>6}" + "".join(
        f" {m:>9}" for m in METRICS)
    print(head)
    print("-" * len(head))
    for name, fit, score, query, res in rows:
        fit_txt = "-" if np.isnan(fit) else f"{fit:.2f}"
        print(f"{name:<37} {fit_txt:>7} {score:>8.2f} {query:>8.2f} {query / exact_query:>6.2f}"
              + "".join(f" {res[m].value:>9.4f}" for m in METRICS))
    print(f"\nquantisation error (mean |x - x_hat|^2 on the normalised gallery): {index.quantization_error():.4f}; "
          f"distinct PQ cells used: {len(np.unique(index.codes, axis=0))} of {args.K ** args.M}")


if __name__ == "__main__":
    main()
