"""open_clip image and text towers ("clip:<model>" backbones and the frozen class-prompt encoder).

Everything goes through open_clip's own front door (``create_model_and_transforms``) and its own
preprocessing: never a fork of CLIP, never ImageNet statistics.

Image tower (``build_clip_backbone``), for open_clip ViT models (``VisionTransformer``):
  embedding  CLIP's projected pooled output (class token after ``ln_post``, ``@ proj``; width =
             CLIP's ``embed_dim``, e.g. 512 for ViT-B-32/16), then ``Linear(clip_dim -> embed_dim)``;
             ``project=False`` uses it as is (then ``embed_dim`` must equal CLIP's dimension).
  tokens     the patch tokens after ``ln_post``. With ``project_tokens=True`` (default) they are also
             multiplied by CLIP's ``proj`` (the same matrix as the class token), so they live in the
             joint image-text space, with width = CLIP's text-embedding width: what DMWA's local block
             needs to compare tokens with text embeddings. ``project_tokens=False`` gives the raw
             transformer width (768 for ViT-B).
  domain     accepted and ignored (one tower shared by sketches and photos).
  train_mode "full" (everything trains), "layernorm" (only the tower's LayerNorm weights and biases,
             as Sketch-LVM tunes), "frozen" (none); the new projection always trains.
  preprocess ``{"train", "eval"}`` = open_clip's returned train/val transforms for this model and
             tag (CLIP mean/std, the model's size and interpolation).

Text tower (``build_text_encoder``): frozen CLIP text embeddings of a list of prompts, with open_clip's
tokenizer. It loads from the same tag or file as the image tower (one CLIP checkpoint holds both);
``build_clip_towers`` loads the checkpoint once and returns both.

``pretrained``: None (random init), an open_clip tag for that model (checked against
``open_clip.list_pretrained_tags_by_model`` before anything is fetched; fetching needs the internet
or a warm huggingface cache), or a local checkpoint file (a full CLIP state dict, as
``torch.save(model.state_dict())`` or open_clip's training checkpoints write).
``register_tiny_clip()`` adds a tiny ViT config ("zssbir-tiny-vit") for smoke runs without weights.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
from torch import nn

from .backbones import BackboneOutput, check_domain

TRAIN_MODES = ("full", "layernorm", "frozen")
HEAD_INITS = ("auto", "identity", "random")  # auto: identity when embed_dim equals CLIP's output width
TINY_CLIP_NAME = "zssbir-tiny-vit"
TINY_CLIP_CONFIG = {  # open_clip model-config schema; heads = width // head_width = 2 in both towers
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "head_width": 32, "layers": 2},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".npz", ".ckpt")


def register_tiny_clip() -> str:
    """Add the tiny "zssbir-tiny-vit" config to open_clip's model registry (idempotent); return its name."""
    import open_clip
    from open_clip import factory

    if TINY_CLIP_NAME not in open_clip.list_models():
        registry = getattr(factory, "_MODEL_CONFIGS", None)
        if isinstance(registry, dict):
            registry[TINY_CLIP_NAME] = copy.deepcopy(TINY_CLIP_CONFIG)
        else:  # public route: a config file whose stem is the model name
            import json
            import tempfile

            path = Path(tempfile.mkdtemp(prefix="zssbir_open_clip_")) / f"{TINY_CLIP_NAME}.json"
            path.write_text(json.dumps(TINY_CLIP_CONFIG))
            open_clip.add_model_config(path)
    return TINY_CLIP_NAME


def _check_model_name(model_name: str) -> str:
    import open_clip

    name = model_name.replace("/", "-")
    if name == TINY_CLIP_NAME:
        register_tiny_clip()
    if name not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {model_name!r}; known models: {open_clip.list_models()} "
                         f"(and {TINY_CLIP_NAME!r} for smoke runs)")
    return name


def resolve_pretrained(model_name: str, pretrained: str | os.PathLike | None) -> tuple[str | None, dict]:
    """Check ``pretrained`` without fetching anything: return (tag or file path or None, tag config)."""
    import open_clip

    if pretrained is None:
        return None, {}
    value = os.fspath(pretrained)
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    what = (f"pass an open_clip pretrained tag for {model_name!r} (one of {tags}), e.g. 'openai' for ViT-B-32, "
            f"or the path of an existing local checkpoint file")
    if os.path.isfile(value):
        return value, {}
    looks_like_path = os.sep in value or "/" in value or value.startswith(("~", ".")) or \
        value.lower().endswith(_CHECKPOINT_SUFFIXES)
    if os.path.exists(value) or looks_like_path:
        raise FileNotFoundError(f"CLIP checkpoint file not found: {value} (not a file); {what}.")
    if not open_clip.is_pretrained_cfg(model_name, value):
        raise ValueError(f"unknown pretrained tag {value!r} for open_clip model {model_name!r}; available tags: "
                         f"{tags}; or pass the path of an existing local checkpoint file.")
    return value, open_clip.get_pretrained_cfg(model_name, value)


def create_clip(model_name: str, pretrained: str | None = None, image_size: int | None = None,
                quick_gelu: bool | None = None, cache_dir: str | None = None):
    """open_clip's (model, train transform, eval transform), with the checks and errors of this module.

    ``quick_gelu``: None = what the tag was trained with (e.g. True for OpenAI weights), False for a
    file; pass True for a local copy of OpenAI's weights.
    """
    import open_clip

    name = _check_model_name(model_name)
    source, tag_cfg = resolve_pretrained(name, pretrained)
    if quick_gelu is None:
        quick_gelu = bool(tag_cfg.get("quick_gelu", False))
    try:
        return open_clip.create_model_and_transforms(name, pretrained=source, force_quick_gelu=quick_gelu,
                                                     force_image_size=image_size, cache_dir=cache_dir)
    except RuntimeError as err:
        if tag_cfg and "download" in str(err).lower():
            raise RuntimeError(f"could not fetch open_clip weights {name!r}/{source!r} ({err}). Without internet, "
                               "fetch them once on a connected machine (huggingface cache, or cache_dir=...) or "
                               "pass pretrained=<local checkpoint file>.") from err
        raise


class ClipImageBackbone(nn.Module):
    """An open_clip ViT image tower with the common backbone contract (see module docstring)."""

    transform_convention = "clip"

    def __init__(self, visual: nn.Module, preprocess: dict, embed_dim: int = 512, project: bool = True,
                 project_tokens: bool = True, train_mode: str = "full", head_init: str = "auto"):
        super().__init__()
        from open_clip.transformer import VisionTransformer

        if not isinstance(visual, VisionTransformer) or visual.attn_pool is not None or visual.pool_type != "tok":
            raise ValueError("clip backbones need an open_clip ViT image tower with class-token pooling "
                             f"(got {type(visual).__name__}); use e.g. clip:ViT-B-32 or clip:ViT-B-16")
        self.visual = visual
        self.visual.output_tokens = True
        clip_dim = visual.output_dim
        if not project and embed_dim != clip_dim:
            raise ValueError(f"project=False keeps CLIP's {clip_dim}-d output, but embed_dim={embed_dim}; "
                             f"pass embed_dim={clip_dim} or project=True")
        self.head = nn.Linear(clip_dim, embed_dim) if project else nn.Identity()
        if project and head_init not in HEAD_INITS:
            raise ValueError(f"head_init must be one of {HEAD_INITS}, got {head_init!r}")
        if project and (head_init == "identity" or (head_init == "auto" and embed_dim == clip_dim)):
            if embed_dim != clip_dim:
                raise ValueError(f"head_init='identity' needs embed_dim = CLIP's {clip_dim}, got {embed_dim}")
            with torch.no_grad():  # start in CLIP's own image-text space
                self.head.weight.copy_(torch.eye(clip_dim))
                self.head.bias.zero_()
        self.project_tokens = project_tokens
        self.embed_dim, self.clip_dim = embed_dim, clip_dim
        self.token_dim = clip_dim if project_tokens else visual.transformer.width
        self.image_size = int(visual.image_size[0])
        self.preprocess = preprocess
        self.set_train_mode(train_mode)

    def set_train_mode(self, train_mode: str) -> None:
        """Which tower parameters train: "full", "layernorm" (LayerNorm only) or "frozen"."""
        if train_mode not in TRAIN_MODES:
            raise ValueError(f"train_mode must be one of {TRAIN_MODES}, got {train_mode!r}")
        self.train_mode = train_mode
        for p in self.visual.parameters():
            p.requires_grad_(train_mode == "full")
        if train_mode == "layernorm":
            for m in self.visual.modules():
                if isinstance(m, nn.LayerNorm):
                    for p in m.parameters():
                        p.requires_grad_(True)
        for p in self.head.parameters():
            p.requires_grad_(True)

    def forward(self, images: torch.Tensor, domain: torch.Tensor | None = None) -> BackboneOutput:
        check_domain(domain, images.shape[0], False, "clip backbone")  # accepted, ignored
        pooled, tokens = self.visual(images)
        if self.project_tokens:
            tokens = tokens @ self.visual.proj
        return BackboneOutput(embedding=self.head(pooled), tokens=tokens)


def build_clip_backbone(model_name: str, *, embed_dim: int = 512, pretrained: str | None = None,
                        image_size: int | None = None, train_mode: str = "full", project: bool = True,
                        project_tokens: bool = True, quick_gelu: bool | None = None,
                        cache_dir: str | None = None, head_init: str = "auto") -> ClipImageBackbone:
    """The "clip:<model_name>" backbone (the text tower is dropped; see ``build_clip_towers``)."""
    model, pp_train, pp_eval = create_clip(model_name, pretrained, image_size, quick_gelu, cache_dir)
    return ClipImageBackbone(model.visual, {"train": pp_train, "eval": pp_eval}, embed_dim, project,
                             project_tokens, train_mode, head_init)


def class_prompts(class_names: list[str], domain: str) -> list[str]:
    """["a sketch of a {c}"] or ["a photo of a {c}"], underscores in class names read as spaces."""
    if domain not in ("sketch", "photo"):
        raise ValueError(f"domain must be 'sketch' or 'photo', got {domain!r}")
    return [f"a {domain} of a {c.replace('_', ' ')}" for c in class_names]


class TextEncoder:
    """Frozen CLIP text tower: ``encoder(prompts) -> Tensor[n, text_dim]`` (un-normalised).

    Deliberately not an ``nn.Module``: it never trains, so it stays out of the model's parameters,
    optimisers and checkpoints. Encode the class prompts once and keep the tensor (e.g. as a buffer).
    """

    def __init__(self, clip_model: nn.Module, tokenizer, model_name: str):
        clip_model.visual = nn.Identity()  # the image tower is not needed here
        self.model = clip_model.eval().requires_grad_(False)
        self.tokenizer, self.model_name = tokenizer, model_name
        proj = getattr(clip_model, "text_projection", None)
        self.text_dim = int(proj.shape[1]) if isinstance(proj, torch.Tensor) else int(clip_model.text.output_dim)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> "TextEncoder":
        self.model.to(device)
        return self

    @torch.no_grad()
    def __call__(self, prompts: list[str]) -> torch.Tensor:
        if isinstance(prompts, str):
            prompts = [prompts]
        tokens = self.tokenizer(list(prompts)).to(self.device)
        return self.model.encode_text(tokens).float()

    encode = __call__

    def encode_classes(self, class_names: list[str], domain: str) -> torch.Tensor:
        return self(class_prompts(class_names, domain))

    @torch.no_grad()
    def encode_class_tokens(self, class_names: list[str], domain: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The prompts' token embeddings after the final LayerNorm, projected like the pooled text:
        ([C, L, text_dim], mask [C, L] of the word tokens between start and end token), L = the longest prompt."""
        final_norm = getattr(self.model, "ln_final", None)
        projection = getattr(self.model, "text_projection", None)
        if final_norm is None or projection is None:
            raise ValueError(f"{self.model_name}: token embeddings need an open_clip CLIP text tower with ln_final "
                             "and text_projection")
        tokens = self.tokenizer(class_prompts(class_names, domain)).to(self.device)
        captured = {}
        handle = final_norm.register_forward_hook(lambda module, inputs, output: captured.setdefault("x", output))
        try:
            self.model.encode_text(tokens)
        finally:
            handle.remove()
        x = captured["x"].float()
        x = projection(x) if isinstance(projection, nn.Linear) else x @ projection.float()
        end = tokens.argmax(dim=1)                      # the end token has the largest id in CLIP's vocabulary
        positions = torch.arange(tokens.shape[1], device=tokens.device)[None]
        mask = (positions >= 1) & (positions < end[:, None])
        length = int(end.max())
        return x[:, :length].cpu(), mask[:, :length].cpu()


def build_text_encoder(model_name: str, pretrained: str | None = None, quick_gelu: bool | None = None,
                       cache_dir: str | None = None) -> TextEncoder:
    """The frozen text tower of ``model_name`` loaded from ``pretrained`` (same tag/file as the image tower)."""
    import open_clip

    model, _, _ = create_clip(model_name, pretrained, None, quick_gelu, cache_dir)
    name = model_name.replace("/", "-")
    return TextEncoder(model, open_clip.get_tokenizer(name), name)


def build_clip_towers(model_name: str, *, embed_dim: int = 512, pretrained: str | None = None,
                      image_size: int | None = None, train_mode: str = "full", project: bool = True,
                      project_tokens: bool = True, quick_gelu: bool | None = None,
                      cache_dir: str | None = None, head_init: str = "auto") -> tuple[ClipImageBackbone, TextEncoder]:
    """Image backbone and frozen text encoder from ONE load of the checkpoint."""
    import open_clip

    model, pp_train, pp_eval = create_clip(model_name, pretrained, image_size, quick_gelu, cache_dir)
    backbone = ClipImageBackbone(model.visual, {"train": pp_train, "eval": pp_eval}, embed_dim, project,
                                 project_tokens, train_mode, head_init)
    name = model_name.replace("/", "-")
    return backbone, TextEncoder(model, open_clip.get_tokenizer(name), name)
