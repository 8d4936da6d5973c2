"""The one way a notebook (or script) names, trains and opens a run of the study.

A run is defined by a settings file in ``configs/`` (``TrainConfig`` fields as YAML) plus a few
overrides, e.g. ``run_config("study/clusterretri.yaml", {"lambda_da": 0.0, "seed": 1})``. Its name
and folder follow from the settings alone (``zssbir.training.identity.run_name``), so every notebook
that names the same settings means the same run:

- ``train_run`` trains it, resumes it, or reloads it when finished (training notebooks);
- ``open_run`` only opens a trained run and says which notebook or command trains it when it does not
  exist (analysis notebooks never train behind the user's back);
- ``train_in_background`` queues every run a notebook will need, side by side on the CPU cores, before it
  opens the first: ``trained_run`` and ``train_and_score`` then wait for a queued run instead of training it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from .. import paths
from ..training.config import TrainConfig
from ..training.identity import CODE_CHANGE_POLICIES, code_changes, default_run_dir, run_name, training_code
from ..training.loop import TrainResult, load_trained, train
from .run_pool import checkpoint_state, release_background, stopped_early, train_in_background, wait_for


# named starting points: "pretrained" keeps the settings file's (the study configs: the miniature's pretraining with
# SAKE's distillation from its frozen teacher); "scratch" trains every weight from random initialisation
# "pretrained_nokd" is the pretrained start without the distillation, so that the start and the distillation each
# have their own comparison
STARTS = {"pretrained": {}, "pretrained_nokd": {"teacher_weights": None, "lambda_kd": 0.0},
          "scratch": {"pretrained": None, "teacher_weights": None, "lambda_kd": 0.0}}


def start_overrides(start: str) -> dict:
    """The overrides of a named starting point (``STARTS``)."""
    if start not in STARTS:
        raise ValueError(f"unknown start {start!r}: use one of {', '.join(STARTS)}")
    return dict(STARTS[start])


def start_of(config: TrainConfig) -> str:
    """``"pretrained"`` when the run's backbone starts from weights, else ``"scratch"``."""
    return "pretrained" if config.pretrained else "scratch"


class RunNotFoundError(FileNotFoundError):
    """The run a notebook names has not been trained (or not to its end)."""


@dataclass
class TrainedRun:
    name: str
    run_dir: Path
    config: TrainConfig
    model: torch.nn.Module       # the selected checkpoint (best.pt), in eval mode
    history: list[dict]
    best_epoch: int


def config_path(run_config: str | Path) -> Path:
    """A settings file: an existing path, else a path relative to ``configs/``."""
    path = Path(run_config)
    if not path.is_file():
        path = paths.project_root() / "configs" / run_config
    if not path.is_file():
        known = sorted(p.relative_to(paths.project_root() / "configs").as_posix()
                       for p in (paths.project_root() / "configs").rglob("*.yaml"))
        raise FileNotFoundError(f"no settings file {run_config!r} (looked in the working folder and configs/); "
                                f"files in configs/: {', '.join(known)}")
    return path


def run_config(run_config: str | Path, overrides: dict | None = None, **runtime) -> TrainConfig:
    """The ``TrainConfig`` of a settings file with ``overrides`` applied (unknown keys are refused);
    ``runtime`` sets where it runs (device, num_workers, data_root), which is not part of its name."""
    values = yaml.safe_load(config_path(run_config).read_text(encoding="utf-8")) or {}
    values.update(overrides or {})
    values.update({k: v for k, v in runtime.items() if v not in (None, "")})
    return TrainConfig.from_dict(values)


def run_grid(settings_file: str | Path, overrides: dict | None = None, *, seeds: list[int],
             starts: list[str] | tuple[str, ...] = ("pretrained",), vary: dict[str, list] | None = None,
             **runtime) -> list[TrainConfig]:
    """The configs of every start (``STARTS``) x every combination of the ``vary`` values (field -> values) x seed,
    each on top of the settings file and ``overrides``; the first (first start, first values, first seed) is the
    main run."""
    import itertools

    vary = vary or {}
    if not seeds or not starts or any(not values for values in vary.values()):
        raise ValueError(f"a run grid needs at least one seed, start and value of each varied field; got seeds "
                         f"{seeds}, starts {starts}, {vary}")
    return [run_config(settings_file, {**(overrides or {}), **start_overrides(start), **dict(zip(vary, values)),
                                       "seed": seed}, **runtime)
            for start in starts for values in itertools.product(*vary.values()) for seed in seeds]


def train_run(config: TrainConfig, *, progress: bool = True, if_code_changed: str = "refuse") -> TrainResult:
    """Train the run of ``config`` into ``<runs>/train/<run name>``; resumes an interrupted run, only
    reloads a finished one (see ``zssbir.training.loop.train`` for ``if_code_changed``)."""
    return train(config, run_dir=default_run_dir(config), progress=progress, if_code_changed=if_code_changed)


def open_run(config: TrainConfig, *, device: str = "auto", trained_by: str = "01_train",
             if_code_changed: str = "refuse") -> TrainedRun:
    """The finished run of ``config``, with its selected model. Raises ``RunNotFoundError`` naming the
    run and how to train it (``trained_by``: the notebook that does) when it is missing or unfinished."""
    if if_code_changed not in CODE_CHANGE_POLICIES:
        raise ValueError(f"if_code_changed must be one of {CODE_CHANGE_POLICIES}, got {if_code_changed!r}")
    name, run_dir = run_name(config), default_run_dir(config)
    how = (f"train it first: notebook {trained_by} with the same settings, or `zssbir train` with them "
           f"(the run's settings: {dict(sorted(config.to_dict().items()))})")
    state = checkpoint_state(config)
    if state is None:
        raise RunNotFoundError(f"run {name} does not exist in {run_dir.parent}: {how}")
    if stopped_early(state, config):
        raise RunNotFoundError(f"run {name} stopped after epoch {state['epoch'] + 1} of {config.epochs}: resume it "
                               f"(notebook {trained_by} or `zssbir train` resume where it stopped)")
    changed = code_changes(state.get("code"), training_code())
    if changed and if_code_changed != "reuse":
        raise RunNotFoundError(f"run {name} was trained by other code (changed: {', '.join(changed)}): train it "
                               f"again ({trained_by} with if_code_changed='retrain'), or pass if_code_changed='reuse'")
    model, saved = load_trained(run_dir, device=device)
    return TrainedRun(name, run_dir, saved, model, state["history"], state["best"]["epoch"])


def trained_run(config: TrainConfig, *, device: str = "auto", progress: bool = True,
                if_code_changed: str = "refuse") -> TrainedRun:
    """Train (or resume, or reload) the run of ``config`` and open it: what a training notebook calls. A run queued by
    ``train_in_background`` is waited for, not trained again."""
    wait_for(config)
    train_run(config, progress=progress, if_code_changed=if_code_changed)
    return open_run(config, device=device, if_code_changed="reuse")


TRAIN_LOG = "logs/train_and_score.log"  # under the runs folder: one line per run that train_and_score scored


def train_and_score(configs: list[TrainConfig], *, preset: str, cluster: tuple[int, int, str] | None,
                    labels: list[str | None] | None = None, device: str = "auto",
                    if_code_changed: str = "refuse", transductive: bool = False) -> list[Path]:
    """Train (or reuse) the run of every config and score it on the unseen split (``scoring.score_and_record``,
    results files labelled by ``labels``; ``transductive`` also scores the transductive re-ranker); returns the paths
    of the written results files. On a CPU the unfinished runs train side by side in the background pool (``run_pool``;
    ``train_in_background`` may have queued them already), each scored as its training ends. One line per run goes to
    ``<runs>/logs/train_and_score.log`` (``TRAIN_LOG``); one summary line is printed."""
    from datetime import datetime, timezone

    from .scoring import score_and_record

    written, best = [], []
    log = paths.runs_dir() / TRAIN_LOG
    log.parent.mkdir(parents=True, exist_ok=True)
    train_in_background(configs, if_code_changed=if_code_changed)
    try:
        for config, label in zip(configs, labels or [None] * len(configs)):
            # waits for a run training in the background pool; trains it here when runs train one at a time
            run = trained_run(config, device=device, progress=False, if_code_changed=if_code_changed)
            paths_ = score_and_record(run.model, run.config, run.name, preset=preset, cluster=cluster, label=label,
                                      device=device, extra={"best_epoch": run.best_epoch, "run_dir": str(run.run_dir)},
                                      transductive=transductive)
            written += list(paths_.values())
            best.append((run.best_epoch + 1, run.config.epochs))
            with log.open("a", encoding="utf-8") as f:
                f.write(f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} {run.name}: best epoch "
                        f"{run.best_epoch + 1} of {run.config.epochs}; results "
                        f"{', '.join(p.name for p in paths_.values())}\n")
    except BaseException:  # an error or an interrupt: the queued runs stop too
        release_background(cancel=True)
        raise
    release_background()
    if best:
        low, high, last = min(b for b, _ in best), max(b for b, _ in best), sum(b == e for b, e in best)
        print(f"{len(best)} runs trained (or reopened) and scored into {len(written)} results files; selected epoch "
              + (f"{low} in every run" if low == high else f"{low} to {high} (counted from 1)")
              + f", the last one in {last} of {len(best)} runs; one line per run in {log}")
    return written


def train_command(run_config: str | Path, overrides: dict | None = None) -> str:
    """The shell command that trains (or resumes) the run of a settings file plus overrides, e.g.
    ``zssbir train --config configs/study/clusterretri.yaml --set lambda_da=0.1 seed=0``."""
    import shlex

    path = config_path(run_config)
    try:
        shown = path.resolve().relative_to(paths.project_root()).as_posix()
    except ValueError:
        shown = str(path)
    sets = [f"{k}={yaml.safe_dump(v, default_flow_style=True, width=10_000).strip().removesuffix('...').strip()}"
            for k, v in (overrides or {}).items()]
    return " ".join(["zssbir", "train", "--config", shlex.quote(shown)]
                    + (["--set"] + [shlex.quote(s) for s in sets] if sets else []))
