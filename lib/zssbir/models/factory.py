"""Build a method's model and its data transforms from a TrainConfig (one place for both)."""
from __future__ import annotations

from typing import Callable, Sequence

from torch import nn

from ..config import TrainConfig

METHODS = ("clusterretri", "dmwa")


def build_model(config: TrainConfig, class_names: Sequence[str], *, for_training: bool = True) -> nn.Module:
    """The trainable model of ``config.method`` for the seen ``class_names`` (label order): its ``forward(batch)``
    returns the loss terms (with "total") and it has ``embed(images, domains) -> features``. With
    ``for_training=False`` (loading a trained run to evaluate it) ClusterRetri's distillation teacher and
    class mask are left out, so their files are not needed."""
    if config.method not in METHODS:
        raise ValueError(f"unknown method {config.method!r}; known: {METHODS}")
    n_classes = len(class_names)
    if config.method == "clusterretri":
        from .clusterretri import ClusterRetri

        if config.method_params:
            raise ValueError(f"clusterretri takes no method_params, got {sorted(config.method_params)}; "
                             "its options are lambda_da, lambda_kd, teacher_weights, kd_temperature")
        if config.lambda_kd > 0 and for_training and config.backbone == "small" and \
                config.pretrained != config.teacher_weights:
            raise ValueError("SAKE's distillation on the small backbone starts the student from its teacher: set "
                             "pretrained and teacher_weights to the same weights (e.g. both 'pretrain')")
        # the small backbone's distillation head is training-only (its size comes from the teacher's file)
        head = config.lambda_kd > 0 and (for_training or config.backbone != "small")
        backbone = _backbone(config, weights=for_training or config.backbone.startswith("clip:"),
                             **({"imagenet_head": True} if head else {}))
        teacher = class_mask = None
        if config.lambda_kd > 0 and for_training:
            teacher = _teacher(config)
        if config.lambda_kd_mask > 0 and for_training:
            from .class_mask import load_class_mask

            class_mask = load_class_mask(config.kd_mask, list(class_names))
        # a model built for evaluation needs neither the teacher nor the mask (nor their files)
        kd = config.lambda_kd if for_training else 0.0
        return ClusterRetri(backbone, n_classes, lambda_da=config.lambda_da, lambda_kd=kd, teacher=teacher,
                            kd_temperature=config.kd_temperature,
                            lambda_kd_mask=config.lambda_kd_mask if for_training else 0.0, class_mask=class_mask)
    if config.method == "dmwa":
        from ..config import MINIATURE_PRETRAININGS
        from .dmwa import DMWA, DMWAParams, encode_class_texts, text_tower_choice

        params = DMWAParams.from_dict(config.method_params)
        if config.lambda_da or config.lambda_kd:
            raise ValueError("lambda_da and lambda_kd are ClusterRetri's; set them to 0 for dmwa "
                             f"(got lambda_da={config.lambda_da}, lambda_kd={config.lambda_kd})")
        backbone = _backbone(config)
        text_model, text_pretrained = text_tower_choice(config.backbone, config.pretrained, params)
        texts = encode_class_texts(class_names, text_model, text_pretrained, seed=params.text_seed,
                                   tokens=params.text_tokens, dataset=config.dataset)
        return DMWA(backbone, texts[0], texts[1], params=params, text_sketch_tokens=texts[2] if len(texts) > 2 else None,
                    text_photo_tokens=texts[3] if len(texts) > 2 else None,
                    text_in_image_space=text_model in MINIATURE_PRETRAININGS)
    raise AssertionError("unreachable")


def _teacher(config: TrainConfig) -> nn.Module:
    """SAKE's frozen teacher: the pretrained small backbone with its corpus-class head, or the ImageNet SE-ResNet50."""
    from .named_weights import resolve_weights

    if config.backbone == "small":
        from .small import build_small_teacher

        return build_small_teacher(resolve_weights(config.teacher_weights), embed_dim=config.embed_dim,
                                   image_size=config.image_size, **config.backbone_params)
    from .cse_resnet import build_imagenet_teacher

    return build_imagenet_teacher(resolve_weights(config.teacher_weights))


def _backbone(config: TrainConfig, weights: bool = True, **extra) -> nn.Module:
    """The configured backbone, with its ``pretrained`` weights unless ``weights`` is False (a trained run's
    checkpoint holds them). open_clip towers keep their native input size (``config.image_size`` is for
    the others): forcing e.g. 64 px on a 224 px CLIP would interpolate its position embeddings silently."""
    from .named_weights import resolve_weights
    from .backbones import build_backbone

    size = None if config.backbone.startswith("clip:") else config.image_size
    pretrained = resolve_weights(config.pretrained) if weights else None
    return build_backbone(config.backbone, embed_dim=config.embed_dim, pretrained=pretrained, image_size=size,
                          **dict(config.backbone_params, **extra))


def transforms_for(model: nn.Module, config: TrainConfig, train: bool) -> dict[str, Callable]:
    """{domain: PIL -> tensor}: an open_clip tower's own preprocessing, else ``config.transform`` at
    ``config.image_size`` (with the training augmentation when ``train`` and ``config.augment``)."""
    from ..data.transforms import build_transform

    preprocess = getattr(model.backbone, "preprocess", None)
    if preprocess is not None:
        return {d: preprocess["train" if train and config.augment else "eval"] for d in ("sketch", "photo")}
    return {d: build_transform(d, config.image_size, config.transform, train=train and config.augment,
                               augmentation=config.augmentation) for d in ("sketch", "photo")}
