"""Training runs side by side on the CPU cores: a grid's (``runs.train_and_score``) and a notebook's queue.

A small model on a few cores trains faster as several single-threaded runs at once than as one run over every core.
On 2 cores, two runs side by side trained 1.37x (ClusterRetri) and 1.36x (DMWA) the images per second of one run on
both cores (``zssbir train``, 2-3 epochs); with the scoring, which the calling process does as each run ends,
``train_and_score`` of six DMWA runs took 98.6 s against 114.5 s one after the other (1.16x). The study's settings
files fix ``torch_threads: 1``, so a run gives the same numbers alone, in the pool or from ``zssbir train`` (the thread
count changes the last bits of the float sums, and with them the run).

``ZSSBIR_PARALLEL_RUNS`` sets the number of runs at once (1: one after the other, in the calling process); by default
a CPU trains ``cores // torch_threads`` runs at once, an accelerator one. The workers are spawned, so a script that
calls ``train_and_score`` must keep its top-level code under ``if __name__ == "__main__":`` (notebooks need nothing).
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from ..config import TrainConfig
from ..runtime import resolve_device
from ..training.identity import code_changes, default_run_dir, training_code

ENV = "ZSSBIR_PARALLEL_RUNS"


def available_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def parallel_runs(configs: list[TrainConfig]) -> int:
    """How many of ``configs``' runs to train at once: ``ZSSBIR_PARALLEL_RUNS`` when set, else one on an accelerator
    (or when a config leaves torch's thread count to torch, which takes every core) and ``cores // torch_threads``
    on a CPU."""
    value = os.environ.get(ENV, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"{ENV}={value!r}: give a whole number of runs at once, 1 or more (1: one after the other)")
        return int(value)
    if not configs or any(resolve_device(c.device).type != "cpu" or not c.torch_threads for c in configs):
        return 1
    return max(1, available_cores() // max(c.torch_threads for c in configs))


def checkpoint_state(config: TrainConfig) -> dict | None:
    """The run's last checkpoint (``checkpoint.pt`` in its folder), or None when it has none."""
    import torch

    path = default_run_dir(config) / "checkpoint.pt"
    return torch.load(path, map_location="cpu", weights_only=False) if path.is_file() else None


def stopped_early(state: dict, config: TrainConfig) -> bool:
    """Whether a checkpoint stopped before the run's last epoch was trained and validated (training resumes it)."""
    return state["epoch"] + 1 < config.epochs or not state.get("validated", True)


def finished(config: TrainConfig, if_code_changed: str = "refuse") -> bool:
    """Whether training the run would only reopen it: its checkpoint holds every epoch, validated, and (with
    ``if_code_changed`` "retrain") was written by the current training code."""
    state = checkpoint_state(config)
    if state is None or stopped_early(state, config):
        return False
    return if_code_changed != "retrain" or not code_changes(state.get("code"), training_code())


def _train_one(config: TrainConfig, if_code_changed: str) -> None:
    from ..training.loop import train

    train(config, run_dir=default_run_dir(config), progress=False, if_code_changed=if_code_changed)


class RunPool:
    """Trains queued runs in ``workers`` spawned processes (none with fewer than two workers: ``submit`` then queues
    nothing and the caller trains in its own process); ``wait(config)`` returns when that run's training has ended
    (re-raising its error)."""

    def __init__(self, workers: int):
        self._futures: dict[str, Future] = {}
        self._pool = (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
                      if workers > 1 else None)  # its processes start at the first submit

    def submit(self, configs: list[TrainConfig], *, if_code_changed: str = "refuse") -> int:
        """Queue the unfinished runs of ``configs`` not queued yet (in their order); returns how many were queued."""
        if self._pool is None:
            return 0
        queued = 0
        for config in _unfinished(configs, if_code_changed):
            key = str(default_run_dir(config))
            if key not in self._futures:
                self._futures[key] = self._pool.submit(_train_one, config, if_code_changed)
                queued += 1
        return queued

    def busy(self) -> bool:
        """Whether a queued run has not ended yet."""
        return any(not f.done() for f in self._futures.values())

    def wait(self, config: TrainConfig) -> None:
        future = self._futures.get(str(default_run_dir(config)))
        if future is None:
            return
        try:
            future.result()
        except BrokenProcessPool as err:
            raise RuntimeError(
                f"a training process ended abruptly while training {default_run_dir(config).name} (killed, out of "
                f"memory, or started from a script whose top-level code is not under `if __name__ == \"__main__\":`, "
                f"which spawned processes run again); guard the script, or train one run at a time with "
                f"{ENV}=1") from err

    def cancel(self) -> None:
        """Drop the queued runs not started yet and return at once (the runs in training end in the background)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        """Wait for the queued runs, then stop the processes."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> "RunPool":
        return self

    def __exit__(self, error_type, *exc) -> None:
        if error_type is not None:  # an error or an interrupt: the queued runs stop too
            self.cancel()
        self.close()


def _unfinished(configs: list[TrainConfig], if_code_changed: str) -> list[TrainConfig]:
    """The configs whose runs training would not only reopen (``finished``), one per run folder, in their order."""
    pending: dict[str, TrainConfig] = {}
    for config in configs:
        if not finished(config, if_code_changed):
            pending.setdefault(str(default_run_dir(config)), config)
    return list(pending.values())


# The process's background pool: a notebook queues every run it will need before it opens the first one, so the
# cores train them while it looks at the main run; ``runs.trained_run`` and ``runs.train_and_score`` wait for a run
# that is queued there instead of training it themselves.
_background: RunPool | None = None


def train_in_background(configs: list[TrainConfig], *, if_code_changed: str = "refuse") -> int:
    """Start training the unfinished runs of ``configs`` side by side in this process's background pool (first
    config first) and return at once; returns how many runs were queued (0 when the runs train one at a time:
    ``parallel_runs`` gives 1, or every run is finished)."""
    global _background
    pending = _unfinished(configs, if_code_changed)
    if not pending:
        return 0
    if _background is None:
        workers = parallel_runs(pending)
        if workers < 2:
            return 0
        _background = RunPool(workers)
    return _background.submit(pending, if_code_changed=if_code_changed)


def wait_for(config: TrainConfig) -> None:
    """Return when the run of ``config`` has ended if it is queued in the background pool (re-raising its error, after
    cancelling the runs not started yet); at once otherwise."""
    if _background is not None:
        try:
            _background.wait(config)
        except BaseException:
            release_background(cancel=True)
            raise


def release_background(*, cancel: bool = False) -> None:
    """Stop the background pool's processes when no queued run is left; with ``cancel`` at once, the queued runs never
    starting (the ones in training end in the background). The next ``train_in_background`` starts new processes."""
    global _background
    if _background is None:
        return
    if cancel:
        _background.cancel()
    elif _background.busy():
        return
    _background.close()
    _background = None
