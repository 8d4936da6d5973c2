"""SAKE's class mask: for each seen class, its WordNet similarity to each of the teacher's ImageNet classes.

SAKE (and ClusterRetri's TU-Berlin script) add ``kdneg_lambda`` (0.3) times this row to the teacher's logits
before the distillation softmax. The released file (``<zeroshot folder>/cid_mask.pickle``) is a pickled dict
from class id (the label of the SAKE-format lists, i.e. the line of ``cname_cid.txt``) to a vector of the
teacher's classes (1000); a dict keyed by class NAME is accepted too. ``load_class_mask`` returns the rows in
the order of ``class_names`` and refuses a file whose classes differ, naming them.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from ..data.lists import normalise_class_name


def load_class_mask(path: str | Path, class_names: list[str]) -> torch.Tensor:
    """[len(class_names), teacher classes] float tensor of the mask file ``path`` (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class mask file {path} does not exist: it is SAKE's cid_mask.pickle of the "
                                "benchmark's zeroshot folder (or set lambda_kd_mask: 0)")
    with path.open("rb") as f:
        raw = pickle.load(f, encoding="latin1")
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{path} holds {type(raw).__name__}, not a dict from class id or name to a vector")
    if all(isinstance(k, (int, np.integer)) for k in raw):
        wanted = {i: name for i, name in enumerate(class_names)}
        keys = {int(k): k for k in raw}
        missing = [f"{i} ({wanted[i]})" for i in wanted if i not in keys]
        extra = sorted(k for k in keys if k not in wanted)
        rows = [raw[keys[i]] for i in wanted if i in keys]
    else:
        by_name = {normalise_class_name(str(k)): k for k in raw}
        missing = [c for c in class_names if normalise_class_name(c) not in by_name]
        extra = sorted(str(by_name[n]) for n in set(by_name) - {normalise_class_name(c) for c in class_names})
        rows = [raw[by_name[normalise_class_name(c)]] for c in class_names if normalise_class_name(c) in by_name]
    if missing or extra:
        raise ValueError(f"class mask {path} does not match the {len(class_names)} seen classes: no row for "
                         f"{missing[:10]}{' ...' if len(missing) > 10 else ''}; rows for classes not seen: "
                         f"{extra[:10]}{' ...' if len(extra) > 10 else ''}. Use the mask of this benchmark's split")
    mask = np.stack([np.asarray(r, dtype=np.float32).reshape(-1) for r in rows])
    return torch.from_numpy(mask)
