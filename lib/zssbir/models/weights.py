"""Reading a state dict from a local weights file, for every backbone that loads one."""
from __future__ import annotations

import os

import torch


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state dict from a local file (unwraps {"state_dict": ...} / {"model": ...} and "module.")."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}. Pass the path of an existing local "
                                f"state-dict file, or pretrained=None for random initialisation.")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(sd).__name__})")
    return {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}
