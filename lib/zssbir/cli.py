"""The `zssbir` command line (also `python -m zssbir`). Argument parsing happens only in ``main``, never at import.

Errors the user can act on (bad settings, missing data, unreadable images) are printed in a few lines with their
fix, exit code 2; no traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_data_generate(args: argparse.Namespace) -> int:
    from .data.synthetic_pretrain import CORPORA, ensure_corpus
    from .data.tools import ensure_dataset

    if args.dataset in CORPORA:  # a pretraining corpus (photos only), not a benchmark
        root = ensure_corpus(args.dataset, data_root=args.data_root, progress=True)
    else:
        root = ensure_dataset(args.dataset, data_root=args.data_root, progress=True)
    print(f"{args.dataset} is ready at {root}")
    return 0


def _split_classes(args: argparse.Namespace):
    from .data.splits import load_split_classes

    return load_split_classes(args.dataset, args.splits_dir) if args.splits_dir else None


def _cmd_data_prepare(args: argparse.Namespace) -> int:
    from .data.prepare import prepare

    print(prepare(args.dataset, args.source or [], data_root=args.data_root, classes=_split_classes(args),
                  lists=args.lists).text())
    return 0


def _cmd_data_verify(args: argparse.Namespace) -> int:
    from .data.verify import verify

    report = verify(args.dataset, data_root=args.data_root, classes=_split_classes(args), decode=not args.no_decode,
                    progress=not args.quiet, workers=args.workers)
    print(report.text())
    return 0 if report.ok else 1


def _cmd_data_download(args: argparse.Namespace) -> int:
    from .data.download import download

    files = download(args.dataset, data_root=args.data_root, urls=args.url, base_url=args.base_url,
                     progress=not args.quiet)
    print("\n".join(f"downloaded {f}" for f in files))
    if not args.no_prepare:
        return _cmd_data_prepare(argparse.Namespace(**{**vars(args), "source": [str(f) for f in files]}))
    return 0


def _cmd_reports(args: argparse.Namespace) -> int:
    from .study.pipeline import run_pipeline

    rows = run_pipeline(args.pipeline, out_dir=args.out, test=args.test, only=args.only or None)
    for r in rows:
        print(f"  {r['name']:<28} {r['status']:<8} {r['seconds']:.1f} s")
    if args.readme:  # run_pipeline raised if a step failed, so every step here is ok
        if args.test or args.only:
            print("README headline not updated: it needs a complete report run, without --test or --only")
        else:
            from .study.readme_headline import update_readme

            from .study.pipeline import report_command

            target = report_command(args.pipeline)
            print(f"headline table and figure written into {update_readme(reports=args.out, command=target)}")
    return 0


def _parse_value(text: str):
    import yaml

    return yaml.safe_load(text)


def _cmd_train(args: argparse.Namespace) -> int:
    from . import paths
    from .training.config import TrainConfig
    from .training.loop import train

    values = TrainConfig.from_yaml(args.config).to_dict() if args.config else {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set takes key=value, got {item!r}")
        values[key] = _parse_value(value)
    run_dir = args.run_dir or (paths.runs_dir() / "train" / args.run_name if args.run_name else None)
    result = train(TrainConfig.from_dict(values), run_dir=run_dir, resume=not args.no_resume, progress=not args.quiet,
                   if_code_changed=args.if_code_changed)
    if result.history:
        key = "val_top1" if "val_top1" in result.history[-1] else "val_map@all"
        print(f"trained {result.run_dir}: best epoch {result.best_epoch + 1}, "
              f"last {key.replace('val_', 'validation ')} {result.history[-1].get(key, float('nan')):.4f}")
    if result.unreadable:
        print(f"{len(result.unreadable)} unreadable images were left out (unreadable_images=skip); they are listed "
              f"in {result.run_dir / 'unreadable_images.json'}")
    return 0


def _value_text(metric: dict) -> str:
    """'0.4321', or '0.4321 ± 0.0123' for a value averaged over k-means seeds."""
    spread = metric.get("std_over_kmeans_seeds")
    return f"{metric['value']:.4f}" + (f" ± {spread:.4f}" if spread is not None else "")


def _cmd_evaluate_checkpoint(args: argparse.Namespace) -> int:
    """``evaluate --checkpoint FILE --dataset ID``: the authors' checkpoint encodes the data set's unseen split
    (on the GPU when there is one), scored like a features file (``study.released``)."""
    from .data.feature_files import FeatureFile, check_features, sha256_of
    from .models.released_features import features_from_checkpoint
    from .study.released import score_features

    if not args.dataset:
        raise ValueError("--checkpoint needs --dataset ID: the benchmark whose unseen split it encodes, e.g. "
                         "--dataset sketchy_ext_split1")
    path = Path(args.checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file {path}")
    out = features_from_checkpoint(path, args.dataset, device=args.device, progress=not args.quiet,
                                   embed_dim=args.embed_dim, duplicates=args.duplicates)
    arrays = check_features(out["query"], out["query_labels"], out["gallery"], out["gallery_labels"],
                            out.get("class_names"))
    features = FeatureFile(**arrays, layout="checkpoint", sha256=sha256_of(path), path=path)
    written = score_features(features, preset=args.preset, cluster=_cluster_arg(args.cluster),
                             kmeans_seeds=args.kmeans_seeds, label=args.label, name=args.name, dataset=args.dataset,
                             protocol="authors" if args.duplicates == "keep" else "clean",
                             itq_bits=args.itq, chance_seeds=0 if args.no_chance else 5)
    _print_scored(written, args)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .study import scoring
    from .study.results import load_results
    from .training.loop import load_trained

    if args.checkpoint:
        if args.run_dir:
            raise ValueError("give a run folder or --checkpoint FILE, not both")
        return _cmd_evaluate_checkpoint(args)
    if not args.run_dir:
        raise ValueError("evaluate needs a run folder (runs/train/<run name>) or --checkpoint FILE --dataset ID")
    run_dir = Path(args.run_dir)
    model, config = load_trained(run_dir, device=args.device)
    cluster = _cluster_arg(args.cluster)
    written = scoring.score_and_record(model, config, args.name or run_dir.name, preset=args.preset,
                                       cluster=cluster, label=args.label, device=args.device,
                                       extra={"run_dir": str(run_dir)}, kmeans_seeds=args.kmeans_seeds)
    for procedure, path in written.items():
        metrics = load_results(path)[0]["metrics"]
        print(f"{procedure:<8} " + "  ".join(f"{k} {_value_text(v)}" for k, v in metrics.items()) + f"  -> {path}")
    if cluster is not None:
        print(f"(cluster: mean ± std over {args.kmeans_seeds} k-means seeds; every value is in the results file)")
    if not args.no_chance:
        chance = scoring.chance_metrics(config.dataset, 0, preset=args.preset, data_root=config.data_root,
                                        duplicates=config.list_duplicates)
        print(f"{'chance':<8} " + "  ".join(f"{k} {v.value:.4f}" for k, v in chance.items())
              + "  (random ranking of the same unseen queries and gallery: a run that learned nothing scores this)")
    return 0


def _cluster_arg(values) -> tuple[int, int, str] | None:
    """(M, K, variant) of ``--cluster M K VARIANT``; M and K must be integers."""
    if not values:
        return None
    try:
        return int(values[0]), int(values[1]), values[2]
    except ValueError:
        raise ValueError(f"--cluster takes M K VARIANT with integers M and K, e.g. --cluster 2 32 rerank; got "
                         f"{' '.join(values)}") from None


def _cmd_score(args: argparse.Namespace) -> int:
    from .study.released import score_features_file

    written = score_features_file(args.file, layout=args.layout, preset=args.preset, cluster=_cluster_arg(args.cluster),
                                  kmeans_seeds=args.kmeans_seeds, itq_bits=args.itq, label=args.label, name=args.name,
                                  dataset=args.dataset, protocol=args.protocol, chance_seeds=args.chance_seeds)
    _print_scored(written, args)
    return 0


def _print_scored(written: dict, args: argparse.Namespace) -> None:
    """The scores of a features file or checkpoint: its sizes, each procedure's metrics, the chance level."""
    import numpy as np

    from .study.results import load_results

    first = load_results(written["exact"])[0]
    source = first["params"]["source"]
    print(f"{source['file']} ({source['layout']}, sha256 {source['sha256'][:12]}): {source['n_query']} queries, "
          f"{source['n_gallery']} gallery items, {source['dim']} dimensions, {source['n_classes']} classes")
    chance = {}
    for procedure, path in written.items():
        metrics = load_results(path)[0]["metrics"]
        if procedure.startswith("chance"):
            for k, v in metrics.items():
                chance.setdefault(k, []).append(v["value"])
            continue
        print(f"{procedure:<8} " + "  ".join(f"{k} {_value_text(v)}" for k, v in metrics.items()) + f"  -> {path}")
    if args.cluster:
        print(f"(cluster: mean ± std over {args.kmeans_seeds} k-means seeds; every value is in the results file)")
    if chance:
        n = len(next(iter(chance.values())))
        spread = {k: float(np.std(v, ddof=1)) if n > 1 else 0.0 for k, v in chance.items()}
        print(f"{'chance':<8} " + "  ".join(f"{k} {np.mean(v):.4f} ± {spread[k]:.4f}" for k, v in chance.items())
              + f"  (mean ± std over {n} random rankings of the same labels: features that learned nothing "
                "score this)")


def _cmd_export_features(args: argparse.Namespace) -> int:
    from .data.feature_files import LAYOUTS
    from .study.released import export_run_features

    if args.format not in LAYOUTS:  # before the run is loaded and encoded
        raise ValueError(f"unknown --format {args.format!r}; expected one of {', '.join(LAYOUTS)}")
    path = export_run_features(args.run_dir, args.out, args.format, device=args.device)
    print(f"unseen features of {args.run_dir} written to {path} ({args.format} layout)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zssbir", description="Zero-shot sketch-based image retrieval study")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="data set tools").add_subparsers(dest="action", required=True)
    gen = data.add_parser("generate", help="generate a procedural data set (synthetic, synthetic_hard, synthetic_tiny, synthetic_hard_tiny) or pretraining corpus (synthetic_pretrain, synthetic_pretrain_hard, synthetic_pretrain_tiny)")
    gen.add_argument("dataset")
    gen.add_argument("--data-root", default=None, help="folder holding the data sets (default: ZSSBIR_DATA)")
    gen.set_defaults(func=_cmd_data_generate)
    real = "a real benchmark: sketchy_ext_split1, sketchy_ext_split2, tuberlin_ext, quickdraw_ext"
    for name, func, what in (("prepare", _cmd_data_prepare, "arrange a downloaded benchmark and write its file lists"),
                             ("verify", _cmd_data_verify, "check counts, classes and images of a prepared benchmark"),
                             ("download", _cmd_data_download, "fetch a benchmark's archives (resumable) and prepare it")):
        cmd = data.add_parser(name, help=what)
        cmd.add_argument("dataset", help=real)
        cmd.add_argument("--data-root", default=None, help="folder holding the data sets (default: ZSSBIR_DATA)")
        cmd.add_argument("--splits-dir", default=None,
                         help="folder of <dataset>/{seen,unseen}.txt (default: data/splits)")
        cmd.add_argument("--quiet", action="store_true", help="no progress bars")
        cmd.set_defaults(func=func)
        if name in ("prepare", "download"):
            cmd.add_argument("--source", action="append", help="archive (zip/tar) or unpacked folder; repeatable")
            cmd.add_argument("--lists", default="auto", choices=("auto", "published", "folders"),
                             help="use the published lists, write lists from the class folders, or auto: what the "
                                  "last run did, else published lists when there are any (default)")
        if name == "verify":
            cmd.add_argument("--no-decode", action="store_true", help="check that files exist, do not decode images")
            cmd.add_argument("--workers", type=int, default=None,
                             help="threads decoding the images (default: every CPU)")
        if name == "download":
            cmd.add_argument("--url", action="append", help="download from this URL instead (repeatable)")
            cmd.add_argument("--base-url", default=None,
                             help="fetch the same file names from this folder URL (a mirror)")
            cmd.add_argument("--no-prepare", action="store_true", help="only download, do not prepare")

    tr = sub.add_parser("train", help="train a method (resumes from the run's checkpoint; works under torchrun)")
    tr.add_argument("--config", default=None, help="YAML file of TrainConfig parameters")
    tr.add_argument("--set", nargs="*", help="override parameters: key=value (YAML values)")
    tr.add_argument("--run-name", default=None, help="folder name under <runs>/train (default: from the settings)")
    tr.add_argument("--run-dir", default=None, help="the run folder itself")
    tr.add_argument("--if-code-changed", default="refuse", choices=("refuse", "retrain", "reuse"),
                    help="when the run's checkpoint was written by other training code")
    tr.add_argument("--no-resume", action="store_true", help="start again even if a checkpoint exists")
    tr.add_argument("--quiet", action="store_true", help="no progress bars")
    tr.set_defaults(func=_cmd_train)

    ev = sub.add_parser("evaluate", help="score a trained run on the unseen split and write its results JSON files")
    ev.add_argument("run_dir", nargs="?", default=None,
                    help="the run folder (holds best.pt), e.g. runs/train/<run name>; or give --checkpoint")
    ev.add_argument("--checkpoint", default=None, metavar="FILE",
                    help="instead of a run: the authors' released SAKE / ClusterRetri model_best.pth.tar (read with "
                         "weights_only), which encodes --dataset's unseen split (on the GPU when there is one)")
    ev.add_argument("--dataset", default=None, help="with --checkpoint: the benchmark id, e.g. sketchy_ext_split1")
    ev.add_argument("--embed-dim", type=int, default=None,
                    help="with --checkpoint: the hashing layer's width to expect (512 or 64; default: the file's)")
    ev.add_argument("--duplicates", default="keep", choices=("keep", "drop"),
                    help="with --checkpoint: read the photo lists as published (keep, the authors' reading) or "
                         "without their duplicate lines (drop)")
    ev.add_argument("--itq", type=int, default=None, metavar="BITS", help="with --checkpoint: also ITQ hashing")
    ev.add_argument("--quiet", action="store_true", help="no progress bars")
    ev.add_argument("--preset", default="clusterretri", help="metric convention (zssbir.eval.metrics.PRESETS)")
    ev.add_argument("--cluster", nargs=3, metavar=("M", "K", "VARIANT"), default=None,
                    help="also cluster-then-retrieve, e.g. --cluster 2 32 rerank")
    ev.add_argument("--name", default=None, help="results file stem (default: the run folder's name)")
    ev.add_argument("--label", default=None, help="row label in the study tables")
    ev.add_argument("--kmeans-seeds", type=int, default=5, help="k-means seeds cluster-then-retrieve is scored over")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--no-chance", action="store_true",
                    help="do not print the chance level (a random ranking of the same split) beside the scores")
    ev.set_defaults(func=_cmd_evaluate)

    sc = sub.add_parser("score", help="score a features file others released (query and gallery features with "
                                      "labels) and write its results JSON files, e.g. "
                                      "`zssbir score features.pickle --cluster 2 32 adc` (ClusterRetri's released "
                                      "log, 0.7690 at M=2 K=32, ranks by plain ADC; rerank is their --rerank)")
    sc.add_argument("file", help="the features file: a ClusterRetri or SAKE pickle, or an npz "
                                 "(zssbir.data.feature_files); pickles are read by a restricted unpickler")
    sc.add_argument("--layout", default="auto",
                    help="the file's layout: auto (default: detected from its content), clusterretri, sake or npz")
    sc.add_argument("--preset", default="clusterretri", help="metric convention (zssbir.eval.metrics.PRESETS)")
    sc.add_argument("--cluster", nargs=3, metavar=("M", "K", "VARIANT"), default=None,
                    help="also cluster-then-retrieve, e.g. --cluster 2 32 rerank")
    sc.add_argument("--kmeans-seeds", type=int, default=5, help="k-means seeds cluster-then-retrieve is scored over")
    sc.add_argument("--itq", type=int, default=None, metavar="BITS", help="also ITQ hashing with this many bits")
    sc.add_argument("--label", default=None, help="row label in the study tables (default: file name and sha256)")
    sc.add_argument("--name", default=None, help="results file stem (default: released_<file stem>_<sha256>)")
    sc.add_argument("--dataset", default=None,
                    help="the data set id the rows are tabled under, e.g. sketchy_ext_split1 to stand beside its "
                         "published numbers (default: 'features file')")
    sc.add_argument("--protocol", default="authors", choices=("authors", "clean"),
                    help="the lists the features were computed on (default: authors, as a released file)")
    sc.add_argument("--chance-seeds", type=int, default=5,
                    help="random rankings of the same labels scored as the chance level (0: none)")
    sc.set_defaults(func=_cmd_score)

    ex = sub.add_parser("export-features", help="write a trained run's unseen features as a features file")
    ex.add_argument("run_dir", help="the run folder (holds best.pt)")
    ex.add_argument("out", help="the features file to write")
    ex.add_argument("--format", default="npz",
                    help="layout: clusterretri or sake (their pickles), or npz (default; the only one keeping class "
                         "names)")
    ex.add_argument("--device", default="auto")
    ex.set_defaults(func=_cmd_export_features)

    rep = sub.add_parser("reports", help="run the notebooks of the pipeline into reports/")
    rep.add_argument("--pipeline", default=None, help="pipeline file (default: notebooks/pipeline.yml)")
    rep.add_argument("--out", default=None, help="output folder (default: ZSSBIR_REPORTS or reports/)")
    rep.add_argument("--only", nargs="*", help="run only these steps (by name)")
    rep.add_argument("--test", action="store_true", help="use each step's tiny test_parameters")
    rep.add_argument("--readme", action="store_true",
                     help="after a complete run, put the headline table and figure into README.md")
    rep.set_defaults(func=_cmd_reports)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .data.datasets import UnreadableImageError  # after parsing: `--help` does not import torch

    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError, UnreadableImageError) as err:
        print(f"zssbir: error: {UnreadableImageError.short(err)}", file=sys.stderr)  # without a worker's traceback
        return 2


if __name__ == "__main__":
    sys.exit(main())
