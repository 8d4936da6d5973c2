"""What the miniature's pretraining gives (issue 13): the pretrained backbone's zero-shot retrieval before any
fine-tuning, and ClusterRetri fine-tuned from it with SAKE's distillation against training from scratch, paired
over training seeds.

    python -m zssbir.study.pretraining            # pretrains if missing (make pretrain), trains what is missing,
                                                  # writes docs/pretraining_effects.{md,json}

Runs are ``configs/study/clusterretri.yaml`` with L_DA 0 and 0.1; the pretrained ones add ``pretrained: pretrain``,
``teacher_weights: pretrain`` and ``lambda_kd: 1`` (SAKE's weight, as the ClusterRetri configs of the real
benchmarks). Scored by exact retrieval on the unseen classes (mAP@all, clusterretri preset). Nothing here writes
results files: the study tables are unchanged.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pandas as pd

from .. import paths
from ..models.factory import build_model
from ..runtime import git_commit
from ..training.config import TrainConfig
from ..training.identity import CODE_CHANGE_POLICIES
from ..training.pretrain import PRETRAINED_MINIATURE, PretrainSettings, pretrain
from .findings import paired, verdict
from .runs import run_config, trained_run
from .scoring import unseen_map_all

PRETRAINED = {"pretrained": PRETRAINED_MINIATURE, "teacher_weights": PRETRAINED_MINIATURE, "lambda_kd": 1.0}
LAMBDAS = (0.0, 0.1)


def zero_shot(base: TrainConfig, device: str = "auto") -> dict[str, float]:
    """Unseen-class mAP@all of the backbone's embeddings before any fine-tuning: pretrained and random."""
    from ..data.datasets import load_split
    from ..data.tools import ensure_dataset

    ensure_dataset(base.dataset, data_root=base.data_root)
    names = load_split(base.dataset, "train", "photo", data_root=base.data_root, check_files=False).class_names
    out = {}
    for label, pretrained in (("pretrained", PRETRAINED_MINIATURE), ("random", None)):
        config = dataclasses.replace(base, pretrained=pretrained, lambda_kd=0.0, teacher_weights=None)
        out[label] = unseen_map_all(build_model(config, names), config, device)[0]
    return out


def start_effects(base: TrainConfig, seeds: list[int], device: str = "auto",
                  if_code_changed: str = "retrain") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every run (start x L_DA weight x seed), and the paired comparisons over ``seeds``: the pretrained start
    against scratch at each L_DA weight, and L_DA 0.1 against none from each start."""
    runs = []
    for lambda_da in LAMBDAS:
        for start, extra in (("scratch", {}), ("pretrained", PRETRAINED)):
            for seed in seeds:
                config = dataclasses.replace(base, lambda_da=lambda_da, seed=seed, **extra)
                run = trained_run(config, device=device, progress=False, if_code_changed=if_code_changed)
                runs.append({"run": run.name, "start": start, "lambda_da": lambda_da, "seed": seed,
                             "map@all": unseen_map_all(run.model, run.config, device)[0]})
    runs = pd.DataFrame(runs)
    value = runs.set_index(["start", "lambda_da", "seed"])["map@all"].sort_index()
    pairs = [(f"pretrained - scratch (L_DA {lda:g})", ("pretrained", lda), ("scratch", lda)) for lda in LAMBDAS]
    pairs += [(f"L_DA {LAMBDAS[1]:g} - none ({start})", (start, LAMBDAS[1]), (start, LAMBDAS[0]))
              for start in ("scratch", "pretrained")]
    rows = []
    for name, with_, without in pairs:
        result = paired(value.loc[with_], value.loc[without])
        rows.append({"comparison": name, "n": result["n"], "mean_with": result["mean_with"],
                     "mean_without": result["mean_without"], "difference": result["difference"],
                     "ci_low": result["ci_low"], "ci_high": result["ci_high"], "p_value": result["p_value"],
                     "verdict": verdict(result).replace("supported", "a gain").replace("contradicted", "a loss")})
    return runs, pd.DataFrame(rows)


def write(history: list[dict], zero: dict, runs: pd.DataFrame, effects: pd.DataFrame, out: Path, command: str,
          if_code_changed: str) -> list[Path]:
    from .tables import to_markdown

    data = {"command": command, "commit": git_commit(), "if_code_changed": if_code_changed,
            "pretraining_history": history, "zero_shot_map@all": zero, "runs": runs.to_dict("records"),
            "effects": effects.to_dict("records")}
    json_path, md_path = out.with_suffix(".json"), out.with_suffix(".md")
    json_path.write_text(json.dumps(data, indent=2, default=float), encoding="utf-8")
    curve = pd.DataFrame(history)[["epoch", "loss", "val_top1", "seconds"]]
    md_path.write_text(
        "# What pretraining gives on the embedded benchmark\n\n"
        f"Written by `{command}` at commit `{str(data['commit'])[:10]}` (numbers: `{json_path.name}`; runs of other "
        f"training code: {if_code_changed}).\n\n"
        "## Pretraining on the disjoint corpus (`make pretrain`): loss and held-out top-1 per epoch\n\n"
        + to_markdown(curve.round(4), index=False) +
        "\n## Unseen-class mAP@all of the backbone before any fine-tuning (exact retrieval)\n\n"
        + to_markdown(pd.DataFrame([zero]).round(4), index=False) +
        "\n## ClusterRetri fine-tuned from the pretrained backbone with SAKE's distillation, against from scratch, and "
        "L_DA from each start (mAP@all, exact retrieval; paired differences over training seeds, 95 % CI)\n\n" + to_markdown(effects.round(4), index=False)
        + "\n## Every run\n\n" + to_markdown(runs.round(4), index=False), encoding="utf-8")
    return [json_path, md_path]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zssbir.study.pretraining", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=str(paths.project_root() / "docs" / "pretraining_effects"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--if-code-changed", default="retrain", choices=CODE_CHANGE_POLICIES,
                        help="a finished run trained by other code: retrain (default), reuse or refuse")
    args = parser.parse_args(argv)
    folder = pretrain(PretrainSettings(), progress=True)
    history = json.loads((folder / "pretrain.json").read_text(encoding="utf-8"))["history"]
    base = run_config("study/clusterretri.yaml")
    zero = zero_shot(base, args.device)
    runs, effects = start_effects(base, args.seeds, args.device, args.if_code_changed)
    command = "python -m zssbir.study.pretraining" + (f" --seeds {' '.join(map(str, args.seeds))}"
                                                      if args.seeds != [0, 1, 2] else "")
    for path in write(history, zero, runs, effects, Path(args.out), command, args.if_code_changed):
        print(f"written {path}")
    print(effects.round(4).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
