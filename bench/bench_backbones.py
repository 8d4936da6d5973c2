"""Speed of a training step of the small backbone (zssbir.models.small): forward + backward of a batch.

Default: 64 images at 64 px with the default widths (what a `synthetic` run trains on), a few
repeats after one warm-up; prints the best and median wall times, the process CPU time, the torch
thread count and the load average (on a shared machine other processes inflate the figures). The
figure replaces a loose time bound that used to sit in the test suite, where it could only be flaky.

    python bench/bench_backbones.py                   # batch 64 @ 64 px, 5 repeats
    python bench/bench_backbones.py --batch 48 --size 48 --repeats 10
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from zssbir.models import build_backbone


def step_times(batch: int, size: int, repeats: int, seed: int = 0) -> tuple[list[float], float]:
    """Wall times of ``repeats`` forward + backward passes (after one warm-up) and their total CPU time."""
    torch.manual_seed(seed)
    net = build_backbone("small", image_size=size)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))

    def step():
        out = net(x)
        (out.embedding.pow(2).mean() + out.tokens.mean()).backward()

    step()  # warm-up: allocations, kernel selection
    walls, cpu0 = [], time.process_time()
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        walls.append(time.perf_counter() - t)
    return walls, time.process_time() - cpu0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=64, help="image side in pixels (a multiple of 8)")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    walls, cpu = step_times(args.batch, args.size, args.repeats)
    params = sum(q.numel() for q in build_backbone("small", image_size=args.size).parameters())
    print(f"small backbone ({params / 1e3:.0f}k parameters), batch {args.batch} @ {args.size} px, forward+backward "
          f"over {args.repeats} repeats: best {min(walls):.3f} s, median {statistics.median(walls):.3f} s, "
          f"CPU {cpu / args.repeats:.3f} s per step; {torch.get_num_threads()} torch threads, "
          f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
