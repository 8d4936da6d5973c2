"""Image backbones (one constructor, one output contract) and the CLIP text tower.

    from . import build_backbone
    net = build_backbone("small")                       # CPU default, random init
    out = net(images, domain)                           # BackboneOutput(embedding, tokens, logits_imagenet)

Heavy dependencies (open_clip, timm) are imported only when a backbone that needs them is built.
"""
from .backbones import (BACKBONES, DOMAIN_PHOTO, DOMAIN_SKETCH, BackboneOutput,
                        build_backbone, known_backbones, trainable_parameters)


def __getattr__(name):  # lazy access to the CLIP helpers without importing open_clip up front
    if name in ("build_text_encoder", "build_clip_towers", "class_prompts", "register_tiny_clip", "TextEncoder"):
        from . import clip_towers

        return getattr(clip_towers, name)
    if name in ("build_imagenet_teacher",):
        from . import cse_resnet

        return getattr(cse_resnet, name)
    raise AttributeError(f"module 'zssbir.models' has no attribute {name!r}")


__all__ = ["BACKBONES", "DOMAIN_PHOTO", "DOMAIN_SKETCH", "BackboneOutput", "build_backbone",
           "known_backbones", "trainable_parameters", "build_text_encoder", "build_clip_towers", "class_prompts",
           "register_tiny_clip", "TextEncoder", "build_imagenet_teacher"]
