"""The small CPU backbone, trained from scratch: a convolutional stem, then a 2-layer transformer.

Why this shape: on the synthetic benchmark a plain 4-block CNN at 48 px learned well in two minutes
on a CPU, while a 4-layer ViT with a patch-embedding stem learned nothing in the same time. A conv
stem gives the convolutional inductive bias; the transformer layers on top give patch tokens that
the DMWA blocks can attend over, like a ViT's.

  image [B, 3, S, S]
  -> stages: (3x3 conv stride 2, BN, ReLU, 3x3 conv, BN, ReLU) with widths (*stem_channels, width);
     64 px with 3 stages -> an 8x8 map, 48 px -> 6x6
  -> N = h*w tokens of width W, [CLS] prepended, learned positional embeddings (bicubic-interpolated
     when the input size differs from ``image_size``)
  -> ``depth`` pre-norm transformer encoder layers (``heads`` heads), final LayerNorm
  -> global feature: ``pool="cls+mean"`` (default) = (CLS + mean of the patch tokens) / 2; "cls" or
     "mean" alone are options. The mean path hands the conv stem a direct gradient, which is what
     made the CNN learn fast; the CLS path lets attention weigh the patches.
  -> embedding = Linear(W -> embed_dim); tokens = the N patch tokens [B, N, W] after the final norm.

Cost: forward + backward of 64 images at 64 px is about 21 GFLOP and took 0.12 s on this project's
2-core AMD EPYC CPU when idle (0.06 s at 48 px); 627k parameters with the defaults.

The domain tag is ignored unless ``domain_embedding=True``, which adds a learned (zero-initialised)
per-domain vector to the CLS token.

Pretrained start (issue 13, the miniature of ImageNet): ``pretrained`` is a ``backbone.pt`` of
``zssbir.training.pretrain`` (classification of a corpus of classes no benchmark uses). With
``imagenet_head=True`` the backbone also gives ``logits_imagenet`` over the corpus classes from a linear head
initialised with the pretraining's ``head.pt`` (next to ``backbone.pt``), the student side of SAKE's
distillation; ``build_small_teacher`` is the frozen teacher (backbone + head as pretrained).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import BackboneOutput, check_domain

POOLS = ("cls", "mean", "cls+mean")


def _stage(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class SmallBackbone(nn.Module):
    transform_convention = "sake"
    preprocess = None  # use zssbir.data.transforms.build_transform(..., "sake")

    def __init__(self, embed_dim: int = 512, image_size: int = 64, width: int = 128, depth: int = 2,
                 heads: int = 4, stem_channels: tuple[int, ...] = (32, 64), pool: str = "cls+mean",
                 mlp_ratio: float = 2.0, dropout: float = 0.0, domain_embedding: bool = False,
                 teacher_classes: int = 0):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        if width % heads:
            raise ValueError(f"width ({width}) must be divisible by heads ({heads})")
        channels = (3, *stem_channels, width)
        stride = 2 ** (len(channels) - 1)
        if image_size % stride or image_size // stride < 2:
            raise ValueError(f"image_size {image_size} must be a multiple of {stride} (the stem's stride) "
                             f"and give at least a 2x2 map; e.g. 48 or 64 with {len(channels) - 1} stages")
        self.embed_dim, self.token_dim, self.image_size, self.pool = embed_dim, width, image_size, pool
        self.grid = image_size // stride
        self.stem = nn.Sequential(*[_stage(a, b) for a, b in zip(channels[:-1], channels[1:])])
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid ** 2, width))
        self.domain_embed = nn.Embedding(2, width) if domain_embedding else None
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=int(width * mlp_ratio), dropout=dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, embed_dim)
        # the student's head over the pretraining corpus's classes (SAKE's distillation), when asked for
        self.imagenet_head = nn.Linear(embed_dim, teacher_classes) if teacher_classes else None
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.domain_embed is not None:
            nn.init.zeros_(self.domain_embed.weight)

    def _pos_embed(self, h: int, w: int) -> torch.Tensor:
        if (h, w) == (self.grid, self.grid):
            return self.pos_embed
        cls, grid = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        grid = grid.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)], dim=1)

    def forward(self, images: torch.Tensor, domain: torch.Tensor | None = None) -> BackboneOutput:
        domain = check_domain(domain, images.shape[0], self.domain_embed is not None, "small backbone "
                              "with domain_embedding=True")
        x = self.stem(images)                                   # [B, W, h, w]
        b, _, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)                        # [B, N, W]
        cls = self.cls_token.expand(b, -1, -1)
        if self.domain_embed is not None:
            cls = cls + self.domain_embed(domain).unsqueeze(1)
        x = torch.cat([cls, x], dim=1) + self._pos_embed(h, w)
        x = self.norm(self.blocks(x))
        cls_out, tokens = x[:, 0], x[:, 1:]
        if self.pool == "cls":
            pooled = cls_out
        elif self.pool == "mean":
            pooled = tokens.mean(dim=1)
        else:
            pooled = 0.5 * (cls_out + tokens.mean(dim=1))
        embedding = self.proj(pooled)
        logits = self.imagenet_head(embedding) if self.imagenet_head is not None else None
        return BackboneOutput(embedding=embedding, tokens=tokens, logits_imagenet=logits)


class SmallTeacher(nn.Module):
    """The frozen pretrained small backbone and its corpus-class head: ``forward(images) -> logits``."""

    def __init__(self, backbone: SmallBackbone, head: nn.Linear):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.requires_grad_(False).eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images).embedding)


def _head_file(pretrained: str) -> dict[str, torch.Tensor]:
    from .weights import read_state_dict

    path = Path(pretrained).with_name("head.pt")
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: distillation from the small pretrained backbone needs the "
                                "pretraining's head.pt next to its backbone.pt; rebuild both with `make pretrain`")
    head = read_state_dict(path)
    if set(head) != {"weight", "bias"} or head["weight"].ndim != 2:
        raise ValueError(f"{path} is not a linear head's state dict (weight [classes, dim], bias)")
    return head


def build_small(*, embed_dim: int = 512, pretrained: str | None = None, image_size: int | None = None,
                width: int = 128, depth: int = 2, heads: int = 4, stem_channels: tuple[int, ...] = (32, 64),
                pool: str = "cls+mean", mlp_ratio: float = 2.0, dropout: float = 0.0,
                domain_embedding: bool = False, imagenet_head: bool = False) -> SmallBackbone:
    """The "small" backbone (random init; ``pretrained`` may only be a file saved from this backbone).
    ``imagenet_head=True`` needs ``pretrained``: the head starts as the pretraining's (see the module docstring)."""
    head = None
    if imagenet_head:
        if pretrained is None:
            raise ValueError("the small backbone's distillation head (lambda_kd > 0) starts from the pretraining's "
                             "head: set pretrained (e.g. pretrained: pretrain, built by `make pretrain`)")
        head = _head_file(pretrained)
    model = SmallBackbone(embed_dim=embed_dim, image_size=image_size or 64, width=width, depth=depth, heads=heads,
                          stem_channels=tuple(stem_channels), pool=pool, mlp_ratio=mlp_ratio, dropout=dropout,
                          domain_embedding=domain_embedding, teacher_classes=len(head["weight"]) if head else 0)
    if pretrained is not None:
        from .weights import read_state_dict

        state = read_state_dict(pretrained)
        if head is not None:
            state.update({f"imagenet_head.{k}": v for k, v in head.items()})
        fit = "use the backbone settings it was saved with (embed_dim, width, depth, ...) or rebuild it"
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as err:  # a tensor of another shape
            raise ValueError(f"{pretrained} does not fit this small backbone ({str(err).splitlines()[-1].strip()}); "
                             f"{fit}") from None
        if missing or unexpected:
            raise ValueError(f"{pretrained} does not fit this small backbone (missing {sorted(missing)[:4]}, "
                             f"unexpected {sorted(unexpected)[:4]}); {fit}")
    return model


def build_small_teacher(pretrained: str, **backbone_kwargs) -> SmallTeacher:
    """SAKE's frozen teacher on the miniature: the pretrained ``backbone.pt`` and its ``head.pt``."""
    backbone = build_small(pretrained=pretrained, **backbone_kwargs)
    head = _head_file(pretrained)
    linear = nn.Linear(head["weight"].shape[1], head["weight"].shape[0])
    linear.load_state_dict(head)
    return SmallTeacher(backbone, linear)
