"""The one front door to every image backbone, and the output contract they share.

Every backbone is an ``nn.Module`` whose ``forward(images, domain=None)`` takes

  images  float Tensor [B, 3, H, W], already normalised by the backbone's preprocessing
  domain  long Tensor [B] with 0 = sketch, 1 = photo, or None

and returns a :class:`BackboneOutput`:

  embedding        [B, D]    the global embedding, NOT L2-normalised (D = ``embed_dim``)
  tokens           [B, N, W] local tokens: ViT patch tokens, or a CNN's flattened last feature map
  logits_imagenet  [B, 1000] or None: the ImageNet head used for SAKE's distillation (CSE-ResNet50)

and carries the attributes ``embed_dim`` (D), ``token_dim`` (W), ``image_size``, ``preprocess`` and
``transform_convention``. ``preprocess`` is either ``{"train": callable, "eval": callable}`` (PIL image
-> tensor, the backbone's own preprocessing, e.g. open_clip's) or None, meaning: build the transforms
with ``zssbir.data.transforms.build_transform(domain, image_size, transform_convention, train)``;
``zssbir.models.factory.transforms_for`` makes that choice from a run's settings.

Backbones (``build_backbone(name, ...)``):

  "small"             the CPU default, trained from scratch: conv stem + 2 transformer layers (small.py)
  "cse_resnet50"      SAKE's CSE-ResNet50, domain-conditional squeeze-excitation (cse_resnet.py)
  "clip:<model>"      an open_clip image tower, e.g. "clip:ViT-B-32", "clip:ViT-B-16" (clip_towers.py)

Only the small and CSE backbones use the domain tag (the small one only if asked); CLIP ignores it.
Sub-modules are imported lazily, so ``import zssbir.models`` does not import open_clip or timm.
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

DOMAIN_SKETCH, DOMAIN_PHOTO = 0, 1


@dataclass
class BackboneOutput:
    """What every backbone returns (see the module docstring for the shapes)."""

    embedding: torch.Tensor
    tokens: torch.Tensor
    logits_imagenet: torch.Tensor | None = None


# name -> "module:function". A name ending in ":" is a prefix: "clip:" matches "clip:ViT-B-32",
# and the builder receives the rest of the name as its first argument.
BACKBONES: dict[str, str] = {
    "small": "zssbir.models.small:build_small",
    "cse_resnet50": "zssbir.models.cse_resnet:build_cse_resnet50",
    "clip:": "zssbir.models.clip_towers:build_clip_backbone",
}


def known_backbones() -> list[str]:
    """The names ``build_backbone`` accepts ("clip:<model>" stands for any open_clip ViT model)."""
    return [n + "<open_clip model name>" if n.endswith(":") else n for n in BACKBONES]


def _resolve(name: str) -> tuple[Callable[..., nn.Module], tuple]:
    if not isinstance(name, str):
        raise ValueError(f"backbone name must be a string, got {name!r}; known: {known_backbones()}")
    if name in BACKBONES and not name.endswith(":"):
        target, args = BACKBONES[name], ()
    else:
        prefix = next((p for p in BACKBONES if p.endswith(":") and name.startswith(p)), None)
        if prefix is None or not name[len(prefix):]:
            raise ValueError(f"unknown backbone {name!r}; known backbones: {known_backbones()}")
        target, args = BACKBONES[prefix], (name[len(prefix):],)
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func), args


def build_backbone(name: str, *, embed_dim: int = 512, pretrained: str | None = None,
                   image_size: int | None = None, **kwargs) -> nn.Module:
    """Build a backbone by name; see the module docstring for the names and the output contract.

    ``pretrained``: None = random initialisation. For "clip:<model>" an open_clip tag (e.g. "openai")
    or a local checkpoint file; for "cse_resnet50" a local state-dict file (ImageNet SE-ResNet50 in
    timm or Cadene layout, or a saved CSE backbone); the small backbone has no pretrained weights.
    ``image_size``: None = the backbone's native size (small 64, CSE 224, CLIP its config's size).
    Further keyword arguments are backbone-specific; unknown ones raise a ValueError listing the
    accepted ones.
    """
    builder, args = _resolve(name)
    params = inspect.signature(builder).parameters
    accepted = [p for p in params if p not in ("model_name", "embed_dim", "pretrained", "image_size")]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"backbone {name!r} does not accept {unknown}; "
                         f"accepted keyword arguments: {['embed_dim', 'pretrained', 'image_size'] + accepted}")
    if not isinstance(embed_dim, int) or embed_dim < 1:
        raise ValueError(f"embed_dim must be a positive int, got {embed_dim!r}")
    model = builder(*args, embed_dim=embed_dim, pretrained=pretrained, image_size=image_size, **kwargs)
    model.backbone_name = name
    return model


def check_domain(domain: torch.Tensor | None, batch: int, required: bool, who: str) -> torch.Tensor | None:
    """Validate a domain tag tensor (long [B], values 0 sketch / 1 photo)."""
    if domain is None:
        if required:
            raise ValueError(f"{who} is domain-conditional: pass domain=Tensor[B] (0 sketch, 1 photo)")
        return None
    if not isinstance(domain, torch.Tensor) or domain.shape != (batch,):
        raise ValueError(f"{who}: domain must be a Tensor of shape [{batch}], got "
                         f"{getattr(domain, 'shape', type(domain))}")
    if domain.is_floating_point() or (domain.numel() and not bool(((domain == 0) | (domain == 1)).all())):
        raise ValueError(f"{who}: domain must hold integers 0 (sketch) or 1 (photo)")
    return domain


def trainable_parameters(model: nn.Module) -> list[str]:
    """Names of the parameters that require grad (handy to check a freezing mode)."""
    return [n for n, p in model.named_parameters() if p.requires_grad]
