"""Images per second of each stage of a training step: ClusterRetri on the embedded benchmark at the report's settings.

Settings: configs/study/clusterretri.yaml (48 px, batch 48 = 16 sketches + 32 photos, small backbone, the study
augmentation), on the `synthetic` benchmark (generated first if missing). Stages, measured one after the other in
this one process (a warm-up first, then repeats for about ``--seconds`` each; the best of ``--rounds`` rounds is
printed, as on a shared machine other processes only ever slow a stage down):

  decode         PIL open + convert("RGB") of the training files (one sketch per two photos, as in a batch)
  transform      the training transform (resize, flip, affine, to tensor, normalise) of decoded images
  item           Dataset.__getitem__ (decode + transform + the item dict), i.e. what a loader worker does per image
  collate        the DataLoader's default collation of items into batches, then the loop's sketch+photo join
  fwd+bwd        ClusterRetri's forward (its loss terms) + backward + Adam step on a batch already in memory
  loader w=N     the loop's batches (``mixed_batches``) with N loader worker processes, no model
  train step w=N loader and fwd+bwd+step together, as in training.loop.train

    python bench/bench_training.py                 # the table; about a minute on 2 idle cores
    python bench/bench_training.py --seconds 1 --workers 0 2
    python bench/bench_training.py --set decoded_cache=true torch_threads=1   # TrainConfig overrides (YAML values)

Figures on this project's shared 2-core machine (2026-11-30; other users' processes come and go, so each figure is
given with the 1-minute load average; images per second, batch 48 @ 48 px):
  load ~1.4, defaults:  decode 9,400, transform 4,600, item 2,400, fwd+bwd 563, loader w=0 1,870,
                        train step w=0 463, w=1 349, w=2 265 (workers only compete with torch's 2 threads)
  load 5-6, defaults:   decode 3,100-7,600, fwd+bwd 23-79, train step w=0 22-56, w=1 40-47, w=2 39-44
  load 5-6, decoded_cache=true torch_threads=1:
                        decode 76,000-92,000, item 2,700-3,100, fwd+bwd 216-283, loader w=0 2,500-3,700,
                        train step w=0 236-253, w=1 170-276, w=2 164-213
  forward+backward alone, 1 vs 2 torch threads, interleaved in one process (ms per batch, best of 6):
                        load ~1: 145 vs 87 (2 threads win); load ~4.5: 196 vs 827 (2 threads collapse)
So: fwd+bwd is most of a step; 2 torch threads on 2 cores that other processes also use lose 4-10x (threads wait for
each other), which torch_threads=1 avoids at a cost of 1.7x on an idle machine; loader workers do not help on 2
cores; the cache removes decoding (about 5 ms of a batch). Both are off by default, so the report's runs are as they
were.
"""
from __future__ import annotations

import argparse
import os
import time

import torch
import yaml
from torch.utils.data import default_collate

from zssbir import paths
from zssbir.data.datasets import load_split
from zssbir.data.tools import ensure_dataset
from zssbir.models.factory import build_model, transforms_for
from zssbir.runtime import describe_threads
from zssbir.training.config import TrainConfig
from zssbir.training.batches import _collate, mixed_batches

CONFIG = "study/clusterretri.yaml"


def timed(fn, n_images: int, seconds: float, rounds: int) -> tuple[float, float]:
    """(best images per second over ``rounds``, CPU seconds per image of this process) of ``fn``; each round
    repeats ``fn`` (which handles ``n_images``) for about ``seconds``."""
    fn()  # warm-up
    best, cpu_total, done = 0.0, 0.0, 0
    for _ in range(rounds):
        t0, c0, n = time.perf_counter(), time.process_time(), 0
        while True:
            fn()
            n += n_images
            if time.perf_counter() - t0 >= seconds:
                break
        best = max(best, n / (time.perf_counter() - t0))
        cpu_total += time.process_time() - c0
        done += n
    return best, cpu_total / done


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=2.0, help="length of one measuring round per stage")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--workers", type=int, nargs="*", default=[0, 1, 2], help="loader worker counts to measure")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in this process (default: torch's)")
    p.add_argument("--set", nargs="*", default=[], help="TrainConfig overrides key=value (YAML values)")
    args = p.parse_args(argv)
    values = yaml.safe_load((paths.project_root() / "configs" / CONFIG).read_text())
    for item in args.set:
        key, _, value = item.partition("=")
        values[key] = yaml.safe_load(value)
    config = TrainConfig.from_dict(values)
    ensure_dataset(config.dataset, data_root=config.data_root, progress=True)
    threads = args.threads or config.torch_threads
    if threads:
        torch.set_num_threads(threads)
    load0 = os.getloadavg()[0]
    torch.manual_seed(0)
    seen = load_split(config.dataset, "train", "photo", data_root=config.data_root)
    model = build_model(config, seen.class_names)
    tf = transforms_for(model, config, train=True)
    data = {d: load_split(config.dataset, "train", d, data_root=config.data_root, transform=tf[d],
                          cache_decoded=config.decoded_cache) for d in ("sketch", "photo")}
    if config.decoded_cache:  # as training.loop does: filled before loader workers fork
        for ds in data.values():
            ds.fill_cache()
    per = {"sketch": max(1, round(config.batch_size * config.sketch_fraction))}
    per["photo"] = config.batch_size - per["sketch"]
    batch = config.batch_size
    # the files of one batch: the first sketches and photos of the training lists
    picks = [(d, i) for d in ("sketch", "photo") for i in range(per[d])]
    rows = []

    def decode():
        for d, i in picks:
            data[d].load_image(i)

    rows.append(("decode", *timed(decode, batch, args.seconds, args.rounds)))
    decoded = [(d, data[d].load_image(i)) for d, i in picks]

    def transform():
        for d, img in decoded:
            tf[d](img)

    rows.append(("transform", *timed(transform, batch, args.seconds, args.rounds)))

    def items():
        for d, i in picks:
            data[d][i]

    rows.append(("item", *timed(items, batch, args.seconds, args.rounds)))
    made = {d: [data[d][i] for i in range(per[d])] for d in ("sketch", "photo")}

    def collate():
        _collate(default_collate(made["sketch"]), default_collate(made["photo"]))

    rows.append(("collate", *timed(collate, batch, args.seconds, args.rounds)))
    ready = _collate(default_collate(made["sketch"]), default_collate(made["photo"]))
    optimizer = torch.optim.Adam([q for q in model.parameters() if q.requires_grad], lr=config.lr)
    model.train()

    def step(b=ready):
        terms = model(b)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        optimizer.step()

    rows.append(("fwd+bwd", *timed(step, batch, args.seconds, args.rounds)))
    for workers in args.workers:
        cfg = TrainConfig.from_dict({**config.to_dict(), "num_workers": workers, "max_steps_per_epoch": None})
        for name, with_model in (("loader", False), ("train step", True)):
            # each round: a fresh epoch iterator (worker start-up included, as in training), ``steps`` batches
            steps = 12 if with_model else 30

            def run():
                _, it = mixed_batches(data, cfg, 0, 0, 1)
                for k, b in enumerate(it):
                    if with_model:
                        step(b)
                    if k + 1 == steps:
                        break

            ips, cpu = timed(run, steps * batch, args.seconds, args.rounds)
            rows.append((f"{name} w={workers}", ips, cpu))
    print(f"ClusterRetri training stages, {CONFIG} ({config.image_size} px, batch {batch} = {per['sketch']} sketches "
          f"+ {per['photo']} photos, {config.backbone} backbone, augmentation {config.augmentation}"
          f"{', ' + ' '.join(args.set) if args.set else ''})")
    print(f"{'stage':<16}{'images/s':>10}{'ms/batch':>10}{'CPU ms/image':>14}")
    for name, ips, cpu in rows:
        print(f"{name:<16}{ips:>10.0f}{1000 * batch / ips:>10.1f}{1000 * cpu:>14.3f}")
    print(f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, load average {load0:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after (CPU of loader workers not counted in the CPU column)")
    print(describe_threads())  # the thread budget this process would get and what torch runs on now
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
