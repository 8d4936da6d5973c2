"""What the training loop does on the device (issue 24): the batches copied there (pinned, non-blocking on CUDA;
``channels_last`` on request), the loss terms read on the host in one go, cuDNN autotuning, and why ``compile``
cannot apply where it cannot."""
from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import sys
from contextlib import contextmanager

import torch

LOG_EVERY_ACCELERATOR = 25  # log_every=None off the CPU: steps between reads of the losses on the host


def host_values(tensors: list[torch.Tensor]) -> list[float]:
    """The values of 0-d tensors on the host: one read (on a GPU, one wait for the queued work)."""
    return torch.stack(tensors).tolist()


def to_device(batch: dict, device: torch.device, channels_last: bool) -> dict:
    """The batch's tensors on ``device``; on CUDA from pinned memory, without blocking the host."""
    cuda = device.type == "cuda"
    out = {}
    for k, v in batch.items():
        if torch.is_tensor(v):
            if cuda and not v.is_pinned():  # DMWA's batches (data/quadruplets.py concatenates them unpinned)
                v = v.pin_memory()
            v = v.to(device, non_blocking=cuda)
            if channels_last and v.ndim == 4:
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


@contextmanager
def cudnn_benchmark(device: torch.device):
    """cuDNN picks the fastest kernels for the shapes met (CUDA only), unless torch was asked for deterministic
    algorithms (``torch.use_deterministic_algorithms``, ``cudnn.deterministic``); restored afterwards."""
    if device.type != "cuda" or torch.are_deterministic_algorithms_enabled() or torch.backends.cudnn.deterministic:
        yield
        return
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def compile_unavailable(model: torch.nn.Module, device: torch.device, world: int) -> str | None:
    """Why ``compile=True`` cannot apply here (None: it can)."""
    if not callable(getattr(torch, "compile", None)) or not hasattr(torch.nn.Module, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    if world > 1:
        return "this loop does not combine it with DDP (torchrun)"
    if getattr(model, "backbone", None) is None:
        return f"{type(model).__name__} has no backbone to compile"
    try:
        if not importlib.import_module("torch._dynamo").is_dynamo_supported():
            return f"torch.compile does not support Python {sys.version.split()[0]} on this platform"
    except Exception as err:  # noqa: BLE001  any failure to load it means it cannot run
        return f"torch.compile cannot load ({type(err).__name__}: {err})"
    if device.type == "cuda" and importlib.util.find_spec("triton") is None:
        return "its CUDA kernels need triton, which is not installed"
    if device.type == "cpu" and not any(shutil.which(c) for c in (os.environ.get("CXX") or "g++", "c++", "clang++")):
        return "its CPU kernels need a C++ compiler (g++ or clang++), none is on PATH"
    return None
