"""The `zssbir` command line. Argument parsing happens only in ``main``, never at import."""
from __future__ import annotations

import argparse
import sys


def _cmd_data_generate(args: argparse.Namespace) -> int:
    from .data.tools import ensure_dataset

    root = ensure_dataset(args.dataset, data_root=args.data_root, progress=True)
    print(f"{args.dataset} is ready at {root}")
    return 0


def _cmd_reports(args: argparse.Namespace) -> int:
    from .pipeline import run_pipeline

    rows = run_pipeline(args.pipeline, out_dir=args.out, test=args.test, only=args.only or None)
    for r in rows:
        print(f"  {r['name']:<28} {r['status']:<8} {r['seconds']:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zssbir", description="Zero-shot sketch-based image retrieval study")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="data set tools").add_subparsers(dest="action", required=True)
    gen = data.add_parser("generate", help="generate a procedural data set (synthetic, synthetic_tiny)")
    gen.add_argument("dataset")
    gen.add_argument("--data-root", default=None, help="folder holding the data sets (default: ZSSBIR_DATA)")
    gen.set_defaults(func=_cmd_data_generate)

    rep = sub.add_parser("reports", help="run the notebooks of the pipeline into reports/")
    rep.add_argument("--pipeline", default=None, help="pipeline file (default: notebooks/pipeline.yml)")
    rep.add_argument("--out", default=None, help="output folder (default: ZSSBIR_REPORTS or reports/)")
    rep.add_argument("--only", nargs="*", help="run only these steps (by name)")
    rep.add_argument("--test", action="store_true", help="use each step's tiny test_parameters")
    rep.set_defaults(func=_cmd_reports)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"zssbir: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
