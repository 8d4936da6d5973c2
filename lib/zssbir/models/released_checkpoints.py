"""The authors' released checkpoints (SAKE, ClusterRetri) loaded into the study's ``cse_resnet50`` backbone.

What the files hold (read from the public code; none of it is copied here):

* github.com/qliu24/SAKE ``src/ResnetModel.py`` (``CSEResnetModel_KDHashing``), ``src/senet.py``
  (``CSENet_hashing``, ``CSEModule``, ``CSEResNetBottleneck``, ``cse_resnet50_hashing``),
  ``src/train_cse_resnet_sketchy_ext.py`` (what ``model_best.pth.tar`` is saved with) and
  ``src/test_cse_resnet_sketchy_zeroshot.py`` / ``src/test_cse_resnet_tuberlin_zeroshot.py`` (how it is read and
  which output is the retrieval feature);
* github.com/curiosity654/ClusterRetr ``src/models/ResnetModel.py`` and ``src/models/senet.py`` (the same model
  classes and key names), ``src/train_cse_resnet_sketchy_ext.py`` (the same checkpoint dict) and
  ``src/test_cse_resnet_sketchy_zeroshot_itq.py`` (the same feature).

A ``model_best.pth.tar`` is ``{"epoch", "arch", "state_dict", "best_acc1", "optimizer"}``; ``state_dict`` is an
``nn.DataParallel`` model, so every key starts with ``module.``. Its tensors, and where they go here
(``H`` = ``num_hashing``, 512 or 64; ``N`` = seen classes, Sketchy-Ext 100 (split 2: 104), TU-Berlin-Ext 220):

  module.original_model.layer0.conv1.weight [64, 3, 7, 7]      -> trunk.conv1.weight
  module.original_model.layer0.bn1.*                           -> trunk.bn1.*
  module.original_model.layer{1-4}.{i}.conv{1,2,3}.weight,
      .bn{1,2,3}.*, .downsample.{0,1}.*                        -> trunk.layer{1-4}.{i}.(same name)
  module.original_model.layer{1-4}.{i}.se_module.fc1.{weight [C/16, C], bias}
                                                               -> trunk.layer{1-4}.{i}.se.fc1.*
  module.original_model.layer{1-4}.{i}.se_module.fc2.weight [C, C/16 + 1]
                                                               -> se.fc2.weight = [:, :C/16] (the SE weights)
                                                                  se.domain_weight = [:, C/16] (the tag column)
  module.original_model.layer{1-4}.{i}.se_module.fc2.bias      -> trunk.layer{1-4}.{i}.se.fc2.bias
  module.original_model.second_last_linear.{weight [H, 2048], bias}
                                                               -> proj.* (the embedding: SAKE's "hashing" output)
  module.original_model.last_linear.{weight [1000, H], bias}   -> imagenet_head.* (the distillation head)
  module.linear.{weight [N, H], bias}                          -> the class head: ``info.classifier``

Their SE block concatenates the tag y (0 sketch, 1 photo) to the squeezed vector before fc2, which is the study's
``fc2(s) + y * domain_weight``. Their trunk is Cadene's (stride on the first 1x1 conv, ceil-mode max-pool), so the
backbone is built with ``layout="cadene"``. Their retrieval feature is ``second_last_linear`` of the 7x7 average pool
at 224 px, L2-normalised: the study's ``embedding`` (un-normalised; ``evaluate_features`` normalises). BatchNorm's
``num_batches_tracked`` counters are optional (PyTorch before 0.4.1 did not save them; an eval forward never reads
them); every other tensor of the file must have a place here and every place a tensor, with its exact shape.

Their loaders (SAKE ``src/Sketchy.py``) read images as RGB and resize them to 224 x 224 with ImageNet mean/std, the
study's ``sake`` transform convention at ``image_size=224``.
"""
from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from .. import paths
from ..data.benchmarks import BENCHMARKS, get_benchmark
from ..data.lists import read_class_ids
from ..data.splits import load_split_classes
from .cse_resnet import CSEResNet50Backbone, build_cse_resnet50, detect_layout

TORCH_MIN = (2, 4)  # torch.load(weights_only=True) refuses every non-tensor global from 2.4 on
SHOWN_KEYS = 6  # keys named in an error message (the count is always given)
_HASH = "original_model.second_last_linear"
_IMAGENET = "original_model.last_linear"
_CLASSES = "linear"


@dataclass
class CheckpointInfo:
    """What a released checkpoint holds besides the backbone."""

    source: str
    epoch: int | None
    best_acc1: float | None  # the authors' seen-class validation top-1 (%) of the saved epoch
    num_hashing: int  # the embedding size (their hashing layer's outputs)
    n_classes: int  # outputs of the class head: the seen classes it was trained on
    imagenet_head: bool  # the file holds the ImageNet (distillation) head, loaded into backbone.imagenet_head
    tensors: int  # tensors of the state dict, every one consumed
    arch: str | None = None
    classifier: nn.Linear | None = field(default=None, repr=False)  # the class head, loaded

    def summary(self) -> dict:
        """The plain fields (no module), e.g. for a results file or the command line."""
        return {k: getattr(self, k) for k in ("source", "epoch", "best_acc1", "num_hashing", "n_classes",
                                               "imagenet_head", "tensors", "arch")}


# ---------------------------------------------------------------- reading the file
def _check_torch() -> None:
    found = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
    if found < TORCH_MIN:
        raise RuntimeError(f"reading released checkpoints safely needs torch >= {'.'.join(map(str, TORCH_MIN))} "
                           f"(torch.load weights_only=True), found {torch.__version__}")


def _load_file(path: str | os.PathLike) -> object:
    _check_torch()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        if "weights_only" in text or "Weights only load failed" in text:
            found = re.search(r"Unsupported (global|operand)[^.;]*?GLOBAL [\w.]+|Unsupported [^.\n]*", text)
            reason = found.group(0).strip() if found else "a global that is not allowed"
            raise ValueError(f"{path}: refused: unpickling it would run code that is not a tensor's ({reason}); "
                             f"only checkpoints of tensors and plain values are read (torch.load weights_only=True)"
                             ) from None
        raise ValueError(f"{path}: not a torch checkpoint file ({_first_line(err)})") from None
    except Exception as err:  # a truncated or foreign file fails in many ways inside torch.load
        raise ValueError(f"{path}: not a torch checkpoint file ({_first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def _no_state_dict(path, obj) -> ValueError:
    if not isinstance(obj, Mapping):
        return ValueError(f"{path}: holds a {type(obj).__name__}, not a checkpoint dict with a 'state_dict'")
    keys = sorted(map(str, obj))
    hint = ("; it looks like a zssbir run checkpoint: open it with zssbir.study.runs.open_run"
            if {"model", "config"} <= set(keys) else "")
    shown = ", ".join(keys[:SHOWN_KEYS]) + (f", ... ({len(keys)} keys)" if len(keys) > SHOWN_KEYS else "")
    return ValueError(f"{path}: no 'state_dict' in the checkpoint (its keys: {shown or 'none'}){hint}")


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The checkpoint dict of a ``model_best.pth.tar`` (``state_dict``, ``epoch``, ``best_acc1``, ...), read with
    ``torch.load(weights_only=True)``: a file that needs code to unpickle is refused (ValueError), and so is a
    file without ``state_dict`` (the message lists the keys it has)."""
    obj = _load_file(path)
    if not isinstance(obj, Mapping) or not isinstance(obj.get("state_dict"), Mapping):
        raise _no_state_dict(path, obj)
    return dict(obj)


# ---------------------------------------------------------------- the key mapping
def authors_key(study_key: str) -> str:
    """The authors' key (without ``module.``) of a study key: a backbone key or ``classifier.*`` (their
    ``linear``). ``se.domain_weight`` has none of its own: it is the last column of ``se_module.fc2.weight``."""
    head, _, rest = study_key.partition(".")
    if head == "classifier":
        return f"{_CLASSES}.{rest}"
    if head == "proj":
        return f"{_HASH}.{rest}"
    if head == "imagenet_head":
        return f"{_IMAGENET}.{rest}"
    if head != "trunk":
        raise ValueError(f"no authors' key for {study_key!r}")
    if rest.startswith(("conv1.", "bn1.")):
        return f"original_model.layer0.{rest}"
    return "original_model." + rest.replace(".se.", ".se_module.")


def _expected(backbone: CSEResNet50Backbone, classifier: nn.Linear) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{authors' key: (study key, shape in the authors' file)} for every tensor the authors' model saves."""
    out = {}
    study = dict(backbone.state_dict())
    study.update({f"classifier.{k}": v for k, v in classifier.state_dict().items()})
    for key, value in study.items():
        if key == "trunk.stride_in_1x1" or key.endswith(".se.domain_weight"):
            continue
        shape = tuple(value.shape)
        if key.endswith(".se.fc2.weight"):
            shape = (shape[0], shape[1] + 1)  # the tag column
        out[authors_key(key)] = (key, shape)
    return out


def _optional(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def _names(keys, prefix: dict[str, str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(prefix.get(k, "") + k for k in keys[:SHOWN_KEYS])
    return shown + (f" ... ({len(keys)} in all)" if len(keys) > SHOWN_KEYS else "")


def _count(keys, one: str, many: str) -> str:
    return f"{len(keys)} {one if len(keys) == 1 else many}"


def _shape(t) -> str:
    return "[" + ", ".join(map(str, t)) + "]"


# ---------------------------------------------------------------- the seen classes of a data set
def seen_class_count(dataset: str, data_root: str | os.PathLike | None = None) -> int | None:
    """Seen classes of a dataset id: its committed split file, else its seen class-id file on disk; None if
    neither is there (then nothing is checked)."""
    bench = get_benchmark(dataset)
    if (paths.splits_dir() / dataset / "seen.txt").is_file():
        return len(load_split_classes(dataset).seen)
    class_file = bench.class_file("train", data_root)
    return len(read_class_ids(class_file)) if class_file.is_file() else None


def _datasets_with(n: int) -> list[str]:
    out = []
    for dataset_id in sorted(BENCHMARKS):
        try:
            if (paths.splits_dir() / dataset_id / "seen.txt").is_file() and \
                    len(load_split_classes(dataset_id).seen) == n:
                out.append(dataset_id)
        except (OSError, ValueError):
            continue
    return out


# ---------------------------------------------------------------- loading
def _state_of(path_or_state) -> tuple[str, dict, Mapping]:
    """(source name, checkpoint dict, state dict) of a path, a checkpoint dict or a bare state dict."""
    if isinstance(path_or_state, (str, os.PathLike)):
        source = str(path_or_state)
        obj = _load_file(path_or_state)
    else:
        source, obj = "checkpoint", path_or_state
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        return source, dict(obj), obj["state_dict"]
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return source, {}, obj  # a bare state dict: diagnosed below (an ImageNet SE-ResNet50 file, say)
    raise _no_state_dict(source, obj)


def _diagnose_other(source: str, sd: Mapping) -> ValueError:
    """The message for a state dict that is not SAKE's / ClusterRetri's model."""
    try:
        layout = detect_layout(dict(sd))
    except ValueError:
        layout = None
    if layout in ("timm", "cadene"):
        return ValueError(f"{source}: this is an ImageNet SE-ResNet50 ({layout} key layout), not a SAKE/ClusterRetri "
                          f"checkpoint: use it as `pretrained:` (build_cse_resnet50(pretrained=...))")
    if layout == "zssbir":
        return ValueError(f"{source}: this is the study's own cse_resnet50 state dict, not a SAKE/ClusterRetri "
                          f"checkpoint: use it as `pretrained:`")
    return ValueError(f"{source}: not a SAKE/ClusterRetri checkpoint: expected module.original_model.layer0.conv1."
                      f"weight, module.{_HASH}.weight and module.{_CLASSES}.weight; its first keys: {list(sd)[:4]}")


def load_authors_checkpoint(path_or_state, *, dataset: str | None = None, embed_dim: int | None = 512,
                            data_root: str | os.PathLike | None = None,
                            image_size: int = 224) -> tuple[CSEResNet50Backbone, CheckpointInfo]:
    """The study's ``cse_resnet50`` backbone (Cadene layout, eval mode) holding SAKE's / ClusterRetri's trained
    weights, and a :class:`CheckpointInfo` (epoch, best_acc1, num_hashing, n_classes, the class head loaded into
    ``info.classifier``).

    ``path_or_state``: a ``model_best.pth.tar`` file (read by :func:`read_checkpoint`'s rules), the checkpoint
    dict or its ``state_dict``. ``embed_dim``: the hashing size asked for (SAKE's 512-d model; 64 for the 64-bit
    one); None takes what the file holds. ``dataset``: a dataset id; its seen classes must be the class head's.
    Every tensor is consumed and every parameter filled, shapes checked: otherwise a one-line ValueError naming
    the keys (see the module docstring for the mapping).
    """
    source, ckpt, raw = _state_of(path_or_state)
    prefix, sd = {}, {}
    for key, value in raw.items():
        bare = key[len("module."):] if key.startswith("module.") else key
        if bare in sd:
            raise ValueError(f"{source}: the key {bare} appears both with and without 'module.'")
        prefix[bare], sd[bare] = key[: len(key) - len(bare)], value
    if not any(k.startswith("original_model.") for k in sd):
        raise _diagnose_other(source, sd)
    pre = next(iter(prefix.values()), "")
    hashing = sd.get(f"{_HASH}.weight")
    if hashing is None:
        head = sd.get(f"{_IMAGENET}.weight")
        if head is not None and head.ndim == 2 and head.shape[1] == 2048:
            raise ValueError(f"{source}: a SAKE CSEResnetModel_KD checkpoint (2048-d pooled features, no hashing layer "
                             f"{pre}{_HASH}): not supported; the released SAKE/ClusterRetri models are "
                             f"CSEResnetModel_KDHashing")
        raise ValueError(f"{source}: missing {pre}{_HASH}.weight (the hashing layer that gives the embedding)")
    if hashing.ndim != 2 or hashing.shape[1] != 2048:
        raise ValueError(f"{source}: {pre}{_HASH}.weight is {_shape(hashing.shape)}, expected [num_hashing, 2048]")
    num_hashing = int(hashing.shape[0])
    if embed_dim is not None and num_hashing != embed_dim:
        raise ValueError(f"{source}: holds a {num_hashing}-d hashing layer ({pre}{_HASH}.weight "
                         f"{_shape(hashing.shape)}), not the {embed_dim}-d one asked for: load it with "
                         f"embed_dim={num_hashing} (or embed_dim=None to take what the file holds)")
    classes = sd.get(f"{_CLASSES}.weight")
    if classes is None or classes.ndim != 2:
        raise ValueError(f"{source}: missing {pre}{_CLASSES}.weight (the seen-class head [n_classes, {num_hashing}])"
                         if classes is None else
                         f"{source}: {pre}{_CLASSES}.weight is {_shape(classes.shape)}, expected "
                         f"[n_classes, {num_hashing}]")
    n_classes = int(classes.shape[0])
    if dataset is not None:
        seen = seen_class_count(dataset, data_root)
        if seen is not None and seen != n_classes:
            match = _datasets_with(n_classes)
            fits = f" ({' or '.join(match)} has {n_classes})" if match else ""
            raise ValueError(f"{source}: its class head {pre}{_CLASSES}.weight has {n_classes} outputs, one per seen "
                             f"class of the data set it was trained on{fits}, but {dataset} has {seen} seen classes: "
                             f"pass the dataset id it was trained on")
    has_imagenet = f"{_IMAGENET}.weight" in sd or f"{_IMAGENET}.bias" in sd
    backbone = build_cse_resnet50(embed_dim=num_hashing, image_size=image_size, imagenet_head=has_imagenet,
                                  layout="cadene")
    classifier = nn.Linear(num_hashing, n_classes)
    expected = _expected(backbone, classifier)
    leftover = set(sd) - set(expected)
    if leftover:
        raise ValueError(f"{source}: {_count(leftover, 'tensor has', 'tensors have')} no place in the study's "
                         f"cse_resnet50: "
                         f"{_names(leftover, prefix)}")
    missing = [k for k in expected if k not in sd and not _optional(k)]
    if missing:
        raise ValueError(f"{source}: {_count(missing, 'tensor is', 'tensors are')} missing: "
                         f"{_names(missing, {k: pre for k in missing})}")
    wrong = [k for k in expected if k in sd and tuple(sd[k].shape) != expected[k][1]]
    if wrong:
        shown = "; ".join(f"{prefix[k]}{k} is {_shape(sd[k].shape)}, expected {_shape(expected[k][1])}"
                          for k in sorted(wrong)[:SHOWN_KEYS])
        more = f" ... ({len(wrong)} in all)" if len(wrong) > SHOWN_KEYS else ""
        raise ValueError(f"{source}: wrong shapes: {shown}{more}")
    own = dict(backbone.state_dict())
    own.update({f"classifier.{k}": v for k, v in classifier.state_dict().items()})
    weights = {}
    for key, (study_key, _) in expected.items():
        value = sd.get(key, own[study_key])  # only optional counters can be absent
        if study_key.endswith(".se.fc2.weight"):
            weights[study_key[: -len("fc2.weight")] + "domain_weight"] = value[:, -1]
            value = value[:, :-1]
        weights[study_key] = value
    weights["trunk.stride_in_1x1"] = own["trunk.stride_in_1x1"]
    backbone.load_state_dict({k: v for k, v in weights.items() if not k.startswith("classifier.")}, strict=True)
    classifier.load_state_dict({k[len("classifier."):]: v for k, v in weights.items() if k.startswith("classifier.")},
                               strict=True)
    backbone.backbone_name = "cse_resnet50"
    info = CheckpointInfo(source=source, epoch=_plain(ckpt.get("epoch")),
                          best_acc1=_plain(ckpt.get("best_acc1"), float), num_hashing=num_hashing, n_classes=n_classes,
                          imagenet_head=has_imagenet, tensors=len(sd),
                          arch=ckpt.get("arch") if isinstance(ckpt.get("arch"), str) else None,
                          classifier=classifier.eval())
    return backbone.eval(), info


def _plain(value, kind=int):
    """A number saved as a Python number or a 0-d tensor (SAKE's best_acc1 is a tensor) -> int/float or None."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    return kind(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
