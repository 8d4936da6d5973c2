"""Runs trained side by side (study.run_pool): the same weights and history as the same runs trained one after the
other in this process, only unfinished runs start a process, the number of runs at once follows the cores and the
thread count (or ZSSBIR_PARALLEL_RUNS), and a run's error reaches the caller."""
import json

import pytest
import torch

from zssbir.study import run_pool, runs
from zssbir.training.config import TrainConfig
from zssbir.training.identity import default_run_dir

TINY = dict(dataset="synthetic_tiny", image_size=32, embed_dim=32, batch_size=12, epochs=2, max_steps_per_epoch=2,
            torch_threads=1, backbone_params={"width": 32, "depth": 1, "heads": 2, "stem_channels": (8, 16, 32)})


def configs() -> list[TrainConfig]:
    return [TrainConfig(**TINY, seed=0), TrainConfig(**TINY, method="dmwa", lambda_da=0.0, seed=1)]


def trained_state(config: TrainConfig) -> tuple[dict, list]:
    run_dir = default_run_dir(config)
    return (torch.load(run_dir / "best.pt", map_location="cpu", weights_only=False)["model"],
            json.loads((run_dir / "history.json").read_text()))


def test_side_by_side_runs_equal_runs_one_after_the_other(isolated_dirs, monkeypatch):
    with run_pool.RunPool(2) as pool:
        assert pool.submit(configs()) == 2
        for config in configs():
            pool.wait(config)
    side_by_side = [trained_state(c) for c in configs()]
    monkeypatch.setenv("ZSSBIR_RUNS", str(isolated_dirs / "sequential"))
    for config in configs():
        runs.train_run(config, progress=False)
    for (weights, history), config in zip(side_by_side, configs()):
        seq_weights, seq_history = trained_state(config)
        assert [{k: v for k, v in h.items() if "time" not in k and "seconds" not in k} for h in history] == \
               [{k: v for k, v in h.items() if "time" not in k and "seconds" not in k} for h in seq_history]
        assert weights.keys() == seq_weights.keys()
        assert all(torch.equal(weights[k], seq_weights[k]) for k in weights)
    # finished runs are not queued: the caller only reopens them
    with run_pool.RunPool(2) as pool:
        assert pool.submit(configs()) == 0


def test_how_many_runs_at_once(monkeypatch):
    monkeypatch.delenv(run_pool.ENV, raising=False)
    monkeypatch.setattr(run_pool, "available_cores", lambda: 8)
    one_thread, two_threads = TrainConfig(torch_threads=1, device="cpu"), TrainConfig(torch_threads=2, device="cpu")
    assert run_pool.parallel_runs([one_thread]) == 8
    assert run_pool.parallel_runs([one_thread, two_threads]) == 4
    assert run_pool.parallel_runs([TrainConfig(device="cpu")]) == 1  # torch's own thread count takes every core
    monkeypatch.setattr(run_pool, "resolve_device", lambda device: torch.device("cuda"))
    assert run_pool.parallel_runs([one_thread]) == 1  # an accelerator trains one run at a time
    monkeypatch.setenv(run_pool.ENV, "3")
    assert run_pool.parallel_runs([one_thread]) == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(run_pool.ENV, bad)
        with pytest.raises(ValueError, match="ZSSBIR_PARALLEL_RUNS.*whole number"):
            run_pool.parallel_runs([one_thread])


def test_a_run_that_fails_in_the_pool_raises_its_error_in_the_caller(isolated_dirs):
    broken = TrainConfig(**{**TINY, "dataset": "sketchy_ext_split1"}, data_root=str(isolated_dirs / "nothing"))
    with run_pool.RunPool(2) as pool:
        pool.submit([broken, configs()[0]])
        with pytest.raises(Exception, match="sketchy_ext_split1"):
            pool.wait(broken)


def test_a_script_without_a_main_guard_is_told_what_to_do(isolated_dirs):
    """The pool's spawned processes run an unguarded script again, which breaks the pool: the error says why and how
    to go on, not a traceback of the pool's internals."""
    import subprocess
    import sys

    script = isolated_dirs / "unguarded.py"
    script.write_text(
        "from zssbir.study.run_pool import RunPool\n"
        "from zssbir.training.config import TrainConfig\n"
        f"TINY = {TINY!r}\n"
        "configs = [TrainConfig(**TINY, seed=s) for s in (0, 1)]\n"
        "with RunPool(2) as pool:\n"
        "    pool.submit(configs)\n"
        "    pool.wait(configs[0])\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "RuntimeError: a training process ended abruptly" in done.stderr
    assert 'if __name__ == "__main__":' in done.stderr and "ZSSBIR_PARALLEL_RUNS=1" in done.stderr


def test_runs_queued_in_the_background_are_waited_for_not_trained_again(isolated_dirs, monkeypatch):
    """A notebook queues its runs first (runs.train_in_background); trained_run and train_and_score then wait for a
    queued run and only reopen it: no optimiser step is taken in the calling process."""
    monkeypatch.setenv(run_pool.ENV, "2")
    assert runs.train_in_background(configs()) == 2
    assert runs.train_in_background(configs()) == 0  # queued once

    def step_here(*args, **kwargs):
        raise AssertionError("a queued run was trained again in the calling process")

    monkeypatch.setattr(torch.optim.Adam, "step", step_here)
    main = runs.trained_run(configs()[0], progress=False)
    assert len(main.history) == TINY["epochs"]
    written = runs.train_and_score(configs()[1:], preset="clusterretri", cluster=None)
    assert written and all(p.is_file() for p in written)
    assert run_pool._background is None  # released once no queued run is left
    assert runs.train_in_background(configs()) == 0  # finished runs are not queued again


def test_a_queued_run_that_fails_raises_its_error_and_cancels_the_queue(isolated_dirs, monkeypatch):
    monkeypatch.setenv(run_pool.ENV, "2")
    broken = TrainConfig(**{**TINY, "dataset": "sketchy_ext_split1"}, data_root=str(isolated_dirs / "nothing"))
    assert runs.train_in_background([broken, *configs()]) == 3
    with pytest.raises(Exception, match="sketchy_ext_split1"):
        runs.trained_run(broken, progress=False)
    assert run_pool._background is None


def test_a_run_of_other_training_code_is_queued_when_the_notebook_retrains(isolated_dirs, monkeypatch):
    """With if_code_changed "retrain" (the notebooks'), a finished run written by other training code trains again:
    in the pool, not later one after the other in the notebook's process; "reuse" and "refuse" leave it."""
    config = configs()[0]
    runs.train_run(config, progress=False)
    assert run_pool.finished(config, "retrain") and run_pool.finished(config, "refuse")
    monkeypatch.setattr(run_pool, "training_code", lambda: {"models/small.py": "changed"})
    assert not run_pool.finished(config, "retrain")
    assert run_pool.finished(config, "reuse") and run_pool.finished(config, "refuse")
    assert run_pool._unfinished([config, configs()[1]], "retrain") == [config, configs()[1]]
    assert run_pool._unfinished([config, configs()[1]], "reuse") == [configs()[1]]
