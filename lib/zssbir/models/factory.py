"""Build a method's model and its data transforms from a TrainConfig (one place for both)."""
from __future__ import annotations

from typing import Callable

from torch import nn

from ..config import TrainConfig

METHODS = ("clusterretri",)


def build_model(config: TrainConfig, n_classes: int) -> nn.Module:
    """The trainable model of ``config.method``: its ``forward(batch)`` returns the loss terms (with "total") and it has
    ``embed(images, domains) -> features``."""
    from .backbones import build_backbone

    if config.method not in METHODS:
        raise ValueError(f"unknown method {config.method!r}; known: {METHODS}")
    if config.method == "clusterretri":
        from .clusterretri import ClusterRetri

        if config.method_params:
            raise ValueError(f"clusterretri takes no method_params, got {sorted(config.method_params)}; "
                             "its options are lambda_da, lambda_kd, teacher_weights, kd_temperature")
        kwargs = dict(config.backbone_params, **({"imagenet_head": True} if config.lambda_kd > 0 else {}))
        backbone = build_backbone(config.backbone, embed_dim=config.embed_dim, pretrained=config.pretrained,
                                  image_size=config.image_size, **kwargs)
        teacher = None
        if config.lambda_kd > 0:
            from .cse_resnet import build_imagenet_teacher

            teacher = build_imagenet_teacher(config.teacher_weights)
        return ClusterRetri(backbone, n_classes, lambda_da=config.lambda_da, lambda_kd=config.lambda_kd,
                            teacher=teacher, kd_temperature=config.kd_temperature)
    raise AssertionError("unreachable")


def transforms_for(model: nn.Module, config: TrainConfig, train: bool) -> dict[str, Callable]:
    """{domain: PIL -> tensor}: the backbone's own preprocessing (open_clip), else ``config.transform``."""
    from .backbones import backbone_transform

    return {d: backbone_transform(model.backbone, d, train=train and config.augment, convention=config.transform)
            for d in ("sketch", "photo")}
