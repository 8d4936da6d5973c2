"""Training and scoring speed of every real-benchmark settings file, and what a whole run would take (issue 24).

For each file in configs/clusterretri/ and configs/dmwa/: a tree fabricated in its benchmark's layout (JPEG photos
and PNG sketches, a few of the split's real classes), prepared as a download would be (``zssbir.data.prepare``),
then two epochs through the study's own training loop (``zssbir.training.loop.train``) with the file's batch size,
image size, backbone, loader workers and AMP, from random weights (nothing downloaded: ``pretrained`` None, the
SAKE teacher a randomly initialised SE-ResNet50 file, TU-Berlin's class mask random). One line per file:

  epoch 2      images/s of the second epoch (loader and training steps together, ``history[1]["seconds"]``)
  compute      images/s of forward + backward + optimiser step on one batch already on the device (as the loop
               steps: autocast, grad scaler), i.e. the ceiling the loader has to feed
  extract      images/s of feature extraction for scoring (``training.features.extract`` as scoring calls it:
               its batch size, workers and autocast for the device) over the seen photos read 8,192 times or
               more (one loader start, every worker busy; a few hundred photos would leave most workers idle
               at 512 images a batch)
  peak         device memory: torch.cuda.max_memory_allocated over training, the compute steps and extraction;
               on a CPU the process's peak resident set size
  score        exact search + metrics (``eval.exact_search.evaluate_features``, preset clusterretri) of the
               fabricated unseen split, and on CUDA of random features of the REAL unseen split's size
               (e.g. QuickDraw-Ext's 92,291 sketches x 54,151 photos)
  estimate     one epoch of the real benchmark (its training images per epoch from the published sizes in
               ``data.benchmarks``: seen = all - unseen, 10% of the seen sketches held out for validation, list
               duplicates ignored; an epoch as the method draws it) at the epoch-2 rate, and the whole run: the
               file's epochs x (epoch + validation: its images at the extract rate) + the final scoring

    python bench/bench_gpu.py                       # every file; on a CPU the tiny form
    python bench/bench_gpu.py --configs dmwa/quickdraw_ext.yaml
    python bench/bench_gpu.py --tiny                # the tiny form on any device (tests/test_bench_gpu.py)

Figures on one NVIDIA H200 (141 GB, 16 cores; torch 2.11, bf16 autocast; the files' 8 loader workers), 2026-12-04.
Images/s: epoch 2 | compute | extract; peak GiB; the estimated epoch and whole run on the real benchmark:
  clusterretri/quickdraw_ext        596 | 1,020 |   624  | 7.4 | epoch 224,718 img 6.3 min, run 2.4 h
  clusterretri/sketchy_ext_split1   648 | 1,028 |  (333) | 7.4 | epoch  87,594 img 2.3 min, run 53 min
  clusterretri/sketchy_ext_split2   627 |   963 |  (364) | 7.4 | epoch  90,636 img 2.4 min, run 55 min
  clusterretri/tuberlin_ext         569 |   640 |  (320) | 7.6 | epoch 158,400 img 4.6 min, run 96 min
  dmwa/quickdraw_ext              1,190 | 4,481 | 1,516  | 2.1 | epoch 599,296 img 8.4 min, run 1.7 h
  dmwa/sketchy_ext_split1           838 | 2,747 |  (214) | 2.1 | epoch 233,600 img 4.6 min, run 3.3 h
  dmwa/sketchy_ext_split2           990 | 4,397 |  (211) | 2.1 | epoch 241,792 img 4.1 min, run 3.1 h
  dmwa/tuberlin_ext               1,074 | 3,279 |  (239) | 2.1 | epoch 705,920 img 11.0 min, run 7.8 h
(in parentheses: measured before the extraction rate was taken over 8,192 images, over the few hundred images of
the fabricated split with 512 a batch, i.e. 2 or 3 of the 8 workers busy: a lower bound that inflates those runs'
validation and scoring, e.g. DMWA's validation extracts every seen photo each epoch). Exact search + metrics of
the real unseen splits on random features: QuickDraw-Ext 92,291 x 54,151 in 5.2 - 7.0 s, Sketchy 0.3 s, TU-Berlin
0.1 s. Reading: training is loader-bound as filed (epoch 2 at 58 - 89% of the step alone for CSE-ResNet50, 23 - 33%
for ViT-B/32 with only its layer norms trained): 8 workers decoding and augmenting 256 px images feed ~600 and
~1,000 - 1,200 images/s, so num_workers (a runtime setting, not part of a run's name) up to the core count is the
first lever; the steps themselves would take about half (ClusterRetri) or a quarter (DMWA) of the time.

On a CPU (or with --tiny) the tiny form runs: 2 seen + 2 unseen classes, 3 images of each per domain at 32 px,
batch 4, 1 step an epoch, no loader workers, one torch thread, ClusterRetri's CSE-ResNet50 at 64 px instead of
224 (CLIP towers keep their own 224 px), one compute step without warm-up, and extraction of the unseen split
only (the rate over it). It runs the same code path; its figures mean nothing, and it says so.
"""
from __future__ import annotations

import argparse
import os
import pickle
import resource
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image, ImageDraw

from zssbir import paths
from zssbir.config import TrainConfig
from zssbir.data.benchmarks import get_benchmark
from zssbir.data.datasets import load_split
from zssbir.data.prepare import VAL_FRACTION, prepare
from zssbir.data.splits import SplitClasses, load_split_classes
from zssbir.eval.exact_search import evaluate_features
from zssbir.models.factory import transforms_for
from zssbir.runtime import amp_dtype, resolve_device
from zssbir.training.features import extract
from zssbir.training.batches import BATCHES
from zssbir.training.loop import train

CONFIG_DIRS = ("clusterretri", "dmwa")
# fabricated tree per form: classes (seen, unseen), images per class and domain, side in pixels
FULL = {"seen": 10, "unseen": 5, "per_class": 150, "side": 256}
TINY = {"seen": 2, "unseen": 2, "per_class": 3, "side": 32}
TINY_OVERRIDES = {"batch_size": 4, "max_steps_per_epoch": 1, "num_workers": 0, "torch_threads": 1}
TINY_CNN_SIZE = 64  # CSE-ResNet50's image size in the tiny form (CLIP towers keep their own)
COMPUTE_STEPS = {"full": (3, 10), "tiny": (0, 1)}
EXTRACT_IMAGES = 8192  # the extraction rate is measured over at least this many images (full form)  # (warm-up, timed) steps of the compute-alone measure


def all_configs() -> list[str]:
    root = paths.project_root() / "configs"
    return sorted(p.relative_to(root).as_posix() for d in CONFIG_DIRS for p in (root / d).glob("*.yaml"))


# ------------------------------------------------------------------------------------ fabricated trees
def _photo(path: str, seed: int, side: int) -> None:
    """A smooth random colour field with some noise, as a JPEG (decodes like a photo of that size)."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((side, side), Image.BICUBIC)
    arr = np.asarray(small, dtype=np.int16) + rng.integers(-12, 13, (side, side, 3))
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, quality=90)


def _sketch(path: str, seed: int, side: int) -> None:
    """Black strokes on white, as a PNG."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (side, side), "white")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(6, 14))):
        pts = [tuple(int(v) for v in rng.integers(side // 10, side - side // 10, 2)) for _ in range(int(rng.integers(2, 6)))]
        draw.line(pts, fill="black", width=max(1, side // 100))
    img.save(path)


def _write(job: tuple[str, str, int, int]) -> None:
    kind, path, seed, side = job
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    (_photo if kind == "photo" else _sketch)(path, seed, side)


def tree_jobs(dataset: str, base: Path, classes: SplitClasses, per_class: int, side: int) -> list[tuple]:
    """The files of ``classes`` in the release layout of ``dataset`` (the layouts of tests/fabricate_real.py)."""
    jobs, n = [], 0
    for c, cls in enumerate(classes.all):
        seed = 1000 * c
        if dataset.startswith("sketchy"):  # 256x256/{photo,sketch}/tx_000000000000 + EXTEND_image_sketchy
            originals = max(1, per_class // 5)  # five sketches per original photo, as Sketchy
            for i in range(originals):
                pid = f"n0{c}_{i}"
                jobs.append(("photo", f"{base}/256x256/photo/tx_000000000000/{cls}/{pid}.jpg", seed + i, side))
                jobs.append(("photo", f"{base}/EXTEND_image_sketchy/{cls}/{pid}.jpg", seed + i, side))
                jobs += [("sketch", f"{base}/256x256/sketch/tx_000000000000/{cls}/{pid}-{k}.png", seed + 10 * i + k,
                          side) for k in range(1, 6)][:max(1, per_class - 5 * i)]
            jobs += [("photo", f"{base}/EXTEND_image_sketchy/{cls}/ext_{i + 1}.jpg", seed + 500 + i, side)
                     for i in range(max(0, per_class - 2 * originals))]
        elif dataset == "tuberlin_ext":  # png/<cls>/<n>.png and ImageResized/<cls>/*.JPEG
            for i in range(per_class):
                n += 1
                jobs.append(("sketch", f"{base}/png/{cls}/{n}.png", seed + i, side))
                jobs.append(("photo", f"{base}/ImageResized/{cls}/img_{i}.JPEG", seed + 500 + i, side))
        elif dataset == "quickdraw_ext":  # QuickDraw_{sketches,images}_final/<cls>/
            for i in range(per_class):
                jobs.append(("sketch", f"{base}/QuickDraw_sketches_final/{cls}/{5000 + 1000 * c + i}.png", seed + i, side))
                jobs.append(("photo", f"{base}/QuickDraw_images_final/{cls}/image_{i:05d}.jpg", seed + 500 + i, side))
        else:
            raise ValueError(f"no fabricated layout for {dataset!r}")
    return jobs


def fabricate(dataset: str, workdir: Path, form: dict, processes: int) -> Path:
    """A prepared tree of ``dataset`` under ``workdir/<dataset>`` (its data_root): the first classes of its split files."""
    split = load_split_classes(dataset)
    classes = SplitClasses(tuple(split.seen[:form["seen"]]), tuple(split.unseen[:form["unseen"]]))
    source = workdir / "download" / dataset
    jobs = tree_jobs(dataset, source, classes, form["per_class"], form["side"])
    if processes > 1:
        with ProcessPoolExecutor(processes) as pool:
            list(pool.map(_write, jobs, chunksize=64))
    else:
        for job in jobs:
            _write(job)
    data_root = workdir / "data" / dataset
    prepare(dataset, [source], data_root=data_root, classes=classes)
    return data_root


def random_teacher_file(workdir: Path) -> str:
    """A randomly initialised ImageNet SE-ResNet50 state dict in timm's layout (as tests/test_config_smoke.py)."""
    import timm

    path = workdir / "seresnet50_random.pt"
    if not path.is_file():
        torch.manual_seed(0)
        torch.save(timm.create_model("seresnet50", pretrained=False).state_dict(), path)
    return str(path)


# ------------------------------------------------------------------------------------------- measures
def settings(name: str, workdir: Path, data_root: Path, tiny: bool, device: str) -> TrainConfig:
    values = yaml.safe_load((paths.project_root() / "configs" / name).read_text(encoding="utf-8"))
    values.update(epochs=2, data_root=str(data_root), device=device)
    if values["method"] == "clusterretri":
        values.update(pretrained=None, teacher_weights=random_teacher_file(workdir))
        if values.get("lambda_kd_mask"):
            n_seen = len(load_split(values["dataset"], "train", "photo", data_root=data_root, check_files=False)
                         .class_names)
            mask = workdir / f"cid_mask_{values['dataset']}.pickle"
            mask.write_bytes(pickle.dumps({i: np.random.default_rng(i).random(1000) for i in range(n_seen)}))
            values["kd_mask"] = str(mask)
        if tiny:
            values["image_size"] = TINY_CNN_SIZE
    else:
        values["pretrained"] = None  # the same CLIP towers, randomly initialised (open_clip, nothing fetched)
    if tiny:
        values.update(TINY_OVERRIDES)
    return TrainConfig.from_dict(values)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def images_per_step(config: TrainConfig) -> int:
    if config.method == "dmwa":
        return 4 * (max(4, config.batch_size) // 4)
    return max(2, config.batch_size)


def compute_rate(model, config: TrainConfig, dev: torch.device, form: str) -> float:
    """Images/s of the loop's step (autocast, grad scaler, Adam) on one batch already on the device."""
    tf = transforms_for(model, config, train=True)
    data = {d: load_split(config.dataset, "train", d, data_root=config.data_root, transform=tf[d],
                          duplicates=config.list_duplicates) for d in ("sketch", "photo")}
    one = TrainConfig.from_dict({**config.to_dict(), "num_workers": 0})
    _, batches = BATCHES[config.method](data, one, 0, 0, 1)
    batch = {k: v.to(dev) if torch.is_tensor(v) else v for k, v in next(iter(batches)).items()}
    n_images = len(batch["image"]) if "image" in batch else images_per_step(config)
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr,
                                 weight_decay=config.weight_decay)
    dtype = amp_dtype(dev) if config.amp else None
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16)

    def step():
        with torch.autocast(dev.type, dtype=dtype) if dtype else nullcontext():
            terms = model(batch)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(terms["total"]).backward()
        scaler.step(optimizer)
        scaler.update()

    warm, timed = COMPUTE_STEPS[form]
    for _ in range(warm):
        step()
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(timed):
        step()
    _sync(dev)
    return timed * n_images / (time.perf_counter() - t0)


class Repeated(torch.utils.data.Dataset):
    """A dataset's items ``times`` over (each image read and decoded again), with its ``info`` (extract names it)."""

    def __init__(self, dataset, times: int):
        self.dataset, self.times, self.info = dataset, times, dataset.info

    def __len__(self) -> int:
        return len(self.dataset) * self.times

    def __getitem__(self, i: int):
        return self.dataset[i % len(self.dataset)]


def extraction(model, config: TrainConfig, dev: torch.device, tiny: bool) -> tuple[float, dict]:
    """(images/s of ``extract`` with scoring's defaults for the device, {domain: (features, labels)} of the unseen
    split). The rate is measured over the seen photos repeated to ``EXTRACT_IMAGES`` (one loader start, enough
    batches for every worker); in the tiny form over the unseen split itself."""
    tf = transforms_for(model, config, train=False)
    model.eval()
    feats, n, seconds = {}, 0, 0.0
    for domain in ("sketch", "photo"):
        ds = load_split(config.dataset, "zero", domain, data_root=config.data_root, transform=tf[domain],
                        duplicates=config.list_duplicates)
        _sync(dev)
        t0 = time.perf_counter()
        feats[domain] = (extract(model.embed, ds, device=dev), np.asarray(ds.labels))
        _sync(dev)
        seconds += time.perf_counter() - t0
        n += len(ds)
    if tiny:
        return n / seconds, feats
    seen = load_split(config.dataset, "train", "photo", data_root=config.data_root, transform=tf["photo"],
                      duplicates=config.list_duplicates)
    repeated = Repeated(seen, -(-EXTRACT_IMAGES // len(seen)))
    _sync(dev)
    t0 = time.perf_counter()
    extract(model.embed, repeated, device=dev)
    _sync(dev)
    return len(repeated) / (time.perf_counter() - t0), feats


def peak_memory(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"peak {torch.cuda.max_memory_allocated(dev) / 2 ** 30:.1f} GiB"
    return f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20:.1f} GiB (process)"


def real_sizes(dataset: str) -> dict:
    """Images of the real benchmark (published sizes; approximations named in the module docstring)."""
    exp = get_benchmark(dataset).expected
    split = load_split_classes(dataset)
    seen_sketches = exp[("sketch", "all")][0] - exp[("sketch", "zero")][0]
    return {"train_sketch": round(seen_sketches * (1 - VAL_FRACTION)), "val_sketch": round(seen_sketches * VAL_FRACTION),
            "train_photo": exp[("photo", "all")][0] - exp[("photo", "zero")][0],
            "zero_sketch": exp[("sketch", "zero")][0], "zero_photo": exp[("photo", "zero")][0],
            "unseen_classes": len(split.unseen), "seen_classes": len(split.seen)}


def real_epoch_images(config: TrainConfig, real: dict) -> int:
    """Training images of one epoch on the real benchmark, as the method draws its batches."""
    if config.method == "dmwa":  # one quadruplet (4 images) per training photo, whole steps
        p = max(4, config.batch_size) // 4
        return (real["train_photo"] // p) * p * 4
    n_sketch = max(1, round(config.batch_size * config.sketch_fraction))
    n_photo = config.batch_size - n_sketch
    steps = real["train_photo"] // n_photo
    if config.epoch_mode == "shorter_loader":
        steps = min(steps, real["train_sketch"] // n_sketch)
    return steps * config.batch_size


def validation_images(config: TrainConfig, real: dict) -> int:
    if config.selection == "seen_val_top1":
        return real["val_sketch"]
    if config.selection == "unseen_test":
        return real["zero_sketch"] + real["zero_photo"]
    gallery = real["train_photo"] if config.validation_gallery is None else min(
        real["train_photo"], config.validation_gallery * real["seen_classes"])
    return real["val_sketch"] + gallery


def real_score_seconds(real: dict, dev: torch.device, dim: int) -> float:
    """Seconds of ``evaluate_features`` (preset clusterretri) on random features of the real unseen split's size."""
    rng = np.random.default_rng(0)
    q = rng.standard_normal((real["zero_sketch"], dim), dtype=np.float32)
    g = rng.standard_normal((real["zero_photo"], dim), dtype=np.float32)
    ql, gl = np.arange(len(q)) % real["unseen_classes"], np.arange(len(g)) % real["unseen_classes"]
    torch.cuda.empty_cache()
    _sync(dev)
    t0 = time.perf_counter()
    evaluate_features(q, g, ql, gl, preset="clusterretri", device=dev)
    _sync(dev)
    return time.perf_counter() - t0


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def bench_config(name: str, workdir: Path, data_root: Path, dev: torch.device, tiny: bool,
                 real_score: dict) -> str:
    form = "tiny" if tiny else "full"
    config = settings(name, workdir, data_root, tiny, str(dev))
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    result = train(config, run_dir=workdir / "runs" / name.replace("/", "_")[:-5], resume=False, progress=False)
    model = result.model
    tf = transforms_for(model, config, train=True)
    data = {d: load_split(config.dataset, "train", d, data_root=config.data_root, transform=tf[d],
                          duplicates=config.list_duplicates) for d in ("sketch", "photo")}
    steps, _ = BATCHES[config.method](data, config, 1, 0, 1)
    epoch2 = steps * images_per_step(config) / result.history[1]["seconds"]
    compute = compute_rate(model, config, dev, form)
    extract_rate, feats = extraction(model, config, dev, tiny)
    peak = peak_memory(dev)
    (q, ql), (g, gl) = feats["sketch"], feats["photo"]
    t0 = time.perf_counter()
    evaluate_features(q, g, ql, gl, preset="clusterretri", device=dev)
    _sync(dev)
    score_small = time.perf_counter() - t0
    real = real_sizes(config.dataset)
    if dev.type == "cuda":
        if config.dataset not in real_score:
            real_score[config.dataset] = real_score_seconds(real, dev, q.shape[1])
        real_text = f"real {real['zero_sketch']:,}x{real['zero_photo']:,}: {real_score[config.dataset]:.1f} s"
        score_real = real_score[config.dataset]
    else:
        real_text, score_real = "real size: n/a on CPU", float("nan")
    as_filed = TrainConfig.from_dict(yaml.safe_load((paths.project_root() / "configs" / name).read_text()))
    epoch_images = real_epoch_images(as_filed, real)
    epoch_s = epoch_images / epoch2
    val_s = validation_images(as_filed, real) / extract_rate
    final_s = (real["zero_sketch"] + real["zero_photo"]) / extract_rate + (0.0 if np.isnan(score_real) else score_real)
    real_epochs = as_filed.epochs
    run_s = real_epochs * (epoch_s + val_s) + final_s
    size = config.image_size if not config.backbone.startswith("clip:") else 224
    dtype = amp_dtype(dev) if config.amp else None
    return (f"{name:<37}{dev.type} batch {config.batch_size} @{size}px {config.backbone} "
            f"{'amp ' + str(dtype).split('.')[-1] if dtype else 'fp32'} w={config.num_workers} | "
            f"epoch 2: {epoch2:,.0f} img/s | compute: {compute:,.0f} img/s | extract: {extract_rate:,.0f} img/s | "
            f"{peak} | score: {score_small:.2f} s ({len(q)}x{len(g)}), {real_text} | "
            f"estimate: epoch {epoch_images:,} img {_duration(epoch_s)}, run {real_epochs} epochs + validation "
            f"{_duration(val_s)}/epoch + scoring {_duration(final_s)} = {_duration(run_s)}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="*", default=None, help="settings files under configs/ (default: all of "
                   + ", ".join(f"configs/{d}/" for d in CONFIG_DIRS) + ")")
    p.add_argument("--device", default="auto", help="auto (CUDA when there is one), cuda or cpu")
    p.add_argument("--tiny", action="store_true", help="the tiny form even on a GPU")
    p.add_argument("--workdir", default=None, help="folder for the fabricated trees and runs (default: a temporary one)")
    args = p.parse_args(argv)
    try:
        dev = resolve_device(args.device)
    except RuntimeError as err:
        print(f"bench_gpu: {err} (in a settings file: device: auto)", file=sys.stderr)
        return 2
    names = args.configs or all_configs()
    unknown = [n for n in names if not (paths.project_root() / "configs" / n).is_file()]
    if unknown:
        print(f"bench_gpu: no settings file configs/{unknown[0]}; known: {', '.join(all_configs())}", file=sys.stderr)
        return 2
    tiny = args.tiny or dev.type != "cuda"
    threads = torch.get_num_threads()
    if tiny:  # one thread: two threads on two shared cores wait for each other (bench/bench_training.py)
        torch.set_num_threads(TINY_OVERRIDES["torch_threads"])
    try:
        return _run(names, dev, tiny, args.workdir)
    finally:
        torch.set_num_threads(threads)


def _run(names: list[str], dev: torch.device, tiny: bool, workdir: str | None) -> int:
    form = TINY if tiny else FULL
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        workdir = Path(workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        what = (f"tiny form: {form['seen']}+{form['unseen']} classes, {form['per_class']} images a class and domain at "
                f"{form['side']} px, batch {TINY_OVERRIDES['batch_size']}, {TINY_OVERRIDES['max_steps_per_epoch']} "
                f"step an epoch, no workers, 1 thread, CSE-ResNet50 at {TINY_CNN_SIZE} px"
                if tiny else f"{form['seen']}+{form['unseen']} classes, {form['per_class']} images a class and domain "
                f"at {form['side']} px, the files' batch, image size, workers and AMP")
        name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
        print(f"bench_gpu on {name}, torch {torch.__version__}; {what}; random weights, 2 epochs each")
        if tiny:
            print(f"{'On a CPU' if dev.type != 'cuda' else 'In the tiny form'} these figures mean nothing for a GPU "
                  "run: they only show that every settings file runs through the training loop, extraction and "
                  "scoring.")
        roots, real_score, failed = {}, {}, 0
        processes = 1 if tiny else min(16, os.cpu_count() or 1)
        for cfg in names:
            try:
                dataset = yaml.safe_load((paths.project_root() / "configs" / cfg).read_text())["dataset"]
                if dataset not in roots:
                    roots[dataset] = fabricate(dataset, workdir, form, processes)
                print(bench_config(cfg, workdir, roots[dataset], dev, tiny, real_score), flush=True)
            except Exception as err:  # one file's failure (e.g. out of memory) must not hide the others' figures
                failed += 1
                traceback.print_exc()
                print(f"{cfg:<37}FAILED: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
                      flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
