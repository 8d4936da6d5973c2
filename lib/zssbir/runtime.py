"""Seeds, devices and run metadata: the one place randomness and hardware are decided."""
from __future__ import annotations

import os
import platform
import random
import subprocess
from contextlib import contextmanager
from importlib import metadata

import numpy as np
import torch

_VERSIONED = ("zssbir", "torch", "torchvision", "open_clip_torch", "faiss-cpu", "numpy", "scikit-learn",
              "umap-learn", "pillow")


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch (all devices); return a torch Generator seeded the same.

    Use the returned generator (or ``make_generator``) for DataLoaders and samplers, and
    ``np.random.default_rng(seed)`` for numpy code, rather than the global states.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return make_generator(seed)


@contextmanager
def torch_threads(n: int | None):
    """Hold torch's intra-op thread count at ``n`` inside the block (None: leave it); the previous count is restored."""
    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def make_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks CUDA, then Apple MPS, then CPU; anything else is checked to exist.

    The environment variable ZSSBIR_DEVICE, when set (e.g. "cpu"), is what 'auto' means instead; it
    reaches subprocesses (torchrun ranks, notebook kernels), which is how the tests keep to the CPU.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto" and os.environ.get("ZSSBIR_DEVICE", "auto").strip() not in ("", "auto"):
        device = os.environ["ZSSBIR_DEVICE"].strip()
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available; use device='auto' or 'cpu'.")
    return dev


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype to use on this device, or None where AMP is not worth it (CPU)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


def git_commit() -> str | None:
    from .paths import project_root

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_root(), capture_output=True,
                             text=True, timeout=10)
    except (OSError, RuntimeError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=project_root(),
                           capture_output=True, text=True, timeout=10).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["python"] = platform.python_version()
    return versions


def run_metadata(device: str | torch.device = "auto") -> dict:
    dev = resolve_device(device)
    return {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "hostname": platform.node(),
        "pid": os.getpid(),
        "git_commit": git_commit(),
        "versions": package_versions(),
    }


def distributed_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) when not launched by it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Join the torchrun process group (gloo on CPU, nccl on CUDA) if launched by torchrun; return (rank, world)."""
    rank, world, local = distributed_env()
    if world > 1 and not torch.distributed.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(local)
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world
