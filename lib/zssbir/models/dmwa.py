"""DMWA, reconstructed from its abstract (Su et al., arXiv 2511.00925; see docs/dmwa.md for every choice).

Modules of the abstract, as built here:
  1. uni-modal features: one visual backbone shared by sketches and photos gives a global embedding g
     and patch tokens; a frozen CLIP text tower encodes "a sketch of a {c}" / "a photo of a {c}" for the
     seen classes once, and a trained linear map projects them to the embedding width (training only);
  2. multi-level weighting, per (anchor sketch, positive photo) pair, without gradient, every step:
       local  a_loc: cross-attention of sketch patch tokens over photo patch tokens and back; the
              mean cosine between each token and what it attends to, mapped to [0, 1]; with
              ``local_text`` the tokens are pooled by their relevance to the class text instead of
              uniformly;
       global a_glob: "text" (1 + mean(cos(g_s, t^s_y), cos(g_p, t^p_y))) / 2, "pair" (1 + cos(g_s, g_p)) / 2,
              or "text+pair" (their mean);
       w = B * softmax((beta * a_loc + (1 - beta) * a_glob) / tau): mean(w) = 1, well-aligned pairs
       weigh more; ``weighting`` "none" (w = 1), "local" (beta = 1), "global" (beta = 0), "both";
  3. weighted quadruplet loss (``losses.weighted_quadruplet``), plus a text-anchored classification
     term lambda_cls * CE(cos(g, t_c) / T) over the seen classes that trains the text projection.
Retrieval uses the global embedding only (L2-normalised downstream), so the text tower is not needed
at test time and unseen class names are never read.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data.quadruplets import ROLES
from . import losses

WEIGHTINGS = ("none", "local", "global", "both")
GLOBAL_SCORES = ("text", "pair", "text+pair")
EMPHASES = ("aligned", "misaligned")
PROJECTION_INITS = ("auto", "identity", "random")


@dataclass
class DMWAParams:
    """DMWA's options (TrainConfig.method_params); unknown keys are refused."""

    weighting: str = "both"          # none | local | global | both: which aggregation blocks weigh the loss
    beta: float = 0.5                # share of the local score when weighting = both
    tau: float = 0.2                 # softmax temperature of the weight list (smaller = more uneven weights)
    global_score: str = "text"       # text | pair | text+pair (global block, see module docstring)
    local_text: bool = False         # pool the local scores by the tokens' relevance to the class text
    text_tokens: bool = False        # with local_text: relevance to the best-matching token of the prompt, not its pooled embedding
    emphasis: str = "aligned"        # aligned: well-aligned pairs weigh more (the paper) | misaligned: the inverse
    text_projection: str = "auto"    # auto | identity | random init of the text projection; auto = identity on CLIP backbones
    attention_temperature: float = 0.1  # temperature of the token cross-attention (cosine logits)
    loss: str = "quadruplet"         # quadruplet (two hinges) | balanced (one hinge) | triplet
    margin_cross: float = 0.2        # margin against the negative of the other domain (photo for a sketch anchor)
    margin_same: float = 0.2         # margin against the negative of the same domain
    margin: float = 0.2              # margin of the balanced single-hinge form
    balance: float = 0.5             # balanced form: share of the same-domain negative
    symmetric: bool = False          # add the photo-anchor term
    distance: str = "cosine"         # cosine | euclidean, on L2-normalised embeddings
    lambda_quad: float = 1.0         # weight of the quadruplet loss
    lambda_cls: float = 1.0          # weight of the text-anchored classification term
    text_temperature: float = 0.05   # temperature of the text-anchored logits
    text_model: str | None = None    # open_clip model of the text tower, or "pretrain" (the miniature's); None: see text_tower_choice
    text_pretrained: str | None = None  # its tag or checkpoint; None: the backbone's ``pretrained`` if CLIP, else random
    text_seed: int = 0               # seed of a randomly initialised text tower (no weights available)
    center_text: bool = True         # subtract the mean over the seen classes from the text embeddings

    def __post_init__(self):
        _check_choice("weighting", self.weighting, WEIGHTINGS)
        _check_choice("global_score", self.global_score, GLOBAL_SCORES)
        _check_choice("emphasis", self.emphasis, EMPHASES)
        _check_choice("text_projection", self.text_projection, PROJECTION_INITS)
        if self.text_tokens and not self.local_text:
            raise ValueError("DMWA text_tokens=True refines local_text: set local_text=True as well")
        _check_choice("loss", self.loss, losses.QUADRUPLET_FORMS)
        _check_choice("distance", self.distance, losses.DISTANCES)
        if not 0.0 <= self.beta <= 1.0 or not 0.0 <= self.balance <= 1.0:
            raise ValueError(f"beta and balance must be in [0, 1], got beta={self.beta}, balance={self.balance}")
        for name in ("tau", "attention_temperature", "text_temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, values: dict | None) -> DMWAParams:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values or {}) - known)
        if unknown:
            raise ValueError(f"unknown DMWA method_params {unknown}; known: {sorted(known)}")
        return cls(**(values or {}))

    @property
    def beta_effective(self) -> float | None:
        return {"none": None, "local": 1.0, "global": 0.0, "both": self.beta}[self.weighting]


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"DMWA {name} must be one of {choices}, got {value!r}")


def token_attention(sketch_tokens: torch.Tensor, photo_tokens: torch.Tensor, temperature: float = 0.1
                    ) -> dict[str, torch.Tensor]:
    """The local block's token cross-attention, from tokens [B, N, W] and [B, M, W]:
    ``sketch_to_photo`` [B, N, M] (each sketch token's softmax over the photo tokens of cosine / temperature),
    ``photo_to_sketch`` [B, M, N], and each token's cosine with what it gathers, ``sketch_score`` [B, N] and
    ``photo_score`` [B, M] (what ``cross_attention_score`` pools)."""
    s, p = F.normalize(sketch_tokens.float(), dim=-1), F.normalize(photo_tokens.float(), dim=-1)
    sim = s @ p.transpose(1, 2) / temperature                               # [B, N, M]
    s_att, p_att = torch.softmax(sim, dim=2), torch.softmax(sim.transpose(1, 2), dim=2)
    s_gathered = s_att @ p                                                  # [B, N, W]
    p_gathered = p_att @ s                                                  # [B, M, W]
    return {"sketch_to_photo": s_att, "photo_to_sketch": p_att,
            "sketch_score": F.cosine_similarity(s, s_gathered, dim=-1),     # [B, N]
            "photo_score": F.cosine_similarity(p, p_gathered, dim=-1)}      # [B, M]


def cross_attention_score(sketch_tokens: torch.Tensor, photo_tokens: torch.Tensor, temperature: float = 0.1,
                          sketch_pool: torch.Tensor | None = None, photo_pool: torch.Tensor | None = None) -> torch.Tensor:
    """Local aggregation: a_loc in [0, 1] per pair from tokens [B, N, W] and [B, M, W].

    Each sketch token attends over the photo tokens (softmax of cosine / temperature) and is compared
    (cosine) with what it gathers; likewise photo -> sketch. Token scores are pooled by ``*_pool``
    ([B, N] and [B, M], rows summing to 1; uniform if None); a_loc = (1 + mean of both directions) / 2.
    """
    att = token_attention(sketch_tokens, photo_tokens, temperature)
    s_score, p_score = att["sketch_score"], att["photo_score"]
    s_mean = (s_score * sketch_pool).sum(1) if sketch_pool is not None else s_score.mean(1)
    p_mean = (p_score * photo_pool).sum(1) if photo_pool is not None else p_score.mean(1)
    return (1.0 + 0.5 * (s_mean + p_mean)) / 2.0


def global_score(g_sketch: torch.Tensor, g_photo: torch.Tensor, t_sketch: torch.Tensor, t_photo: torch.Tensor,
                 kind: str = "text") -> torch.Tensor:
    """Global aggregation: a_glob in [0, 1] per pair from global embeddings [B, D] and the class texts [B, D]."""
    _check_choice("global_score", kind, GLOBAL_SCORES)
    text = (1.0 + 0.5 * (F.cosine_similarity(g_sketch, t_sketch, dim=-1)
                         + F.cosine_similarity(g_photo, t_photo, dim=-1))) / 2.0
    pair = (1.0 + F.cosine_similarity(g_sketch, g_photo, dim=-1)) / 2.0
    return {"text": text, "pair": pair, "text+pair": 0.5 * (text + pair)}[kind]


def weight_list(a_loc: torch.Tensor | None, a_glob: torch.Tensor | None, beta: float | None, tau: float,
                emphasis: str = "aligned") -> torch.Tensor:
    """w = B * softmax(s * (beta * a_loc + (1 - beta) * a_glob) / tau), so mean(w) = 1; s = +1 when well-aligned
    pairs weigh more (``emphasis`` "aligned", the paper's reading), -1 for the inverse ("misaligned");
    beta None gives w = 1."""
    _check_choice("emphasis", emphasis, EMPHASES)
    ref = a_loc if a_loc is not None else a_glob
    if beta is None:
        return torch.ones_like(ref)
    score = (beta * a_loc if beta > 0 else 0.0) + ((1.0 - beta) * a_glob if beta < 1 else 0.0)
    sign = 1.0 if emphasis == "aligned" else -1.0
    return ref.shape[0] * torch.softmax(sign * score / tau, dim=0)


def _token_projection(backbone: nn.Module) -> nn.Module:
    """The linear map that takes the backbone's tokens into its embedding space (for ``local_text``)."""
    for name in ("proj", "head"):  # small backbone: proj (W -> D); CLIP with project_tokens: head (clip_dim -> D)
        layer = getattr(backbone, name, None)
        if isinstance(layer, nn.Linear) and layer.in_features == backbone.token_dim:
            return layer
    raise ValueError(f"local_text needs a backbone whose tokens map into its embedding space "
                     f"(small, or clip with project_tokens=True); {type(backbone).__name__} has none")


class DMWA(nn.Module):
    def __init__(self, backbone: nn.Module, text_sketch: torch.Tensor, text_photo: torch.Tensor,
                 params: DMWAParams | None = None, text_sketch_tokens: tuple[torch.Tensor, torch.Tensor] | None = None,
                 text_photo_tokens: tuple[torch.Tensor, torch.Tensor] | None = None, text_in_image_space: bool = False):
        super().__init__()
        self.params = params or DMWAParams()
        if text_sketch.shape != text_photo.shape or text_sketch.ndim != 2:
            raise ValueError(f"text embeddings must be two [classes, text_dim] tensors of one shape, got "
                             f"{tuple(text_sketch.shape)} and {tuple(text_photo.shape)}")
        self.backbone = backbone
        # frozen CLIP text embeddings of the seen classes (kept in the checkpoint), and their trained projection
        self.register_buffer("text_sketch", text_sketch.float().clone())
        self.register_buffer("text_photo", text_photo.float().clone())
        self.text_proj = nn.Linear(text_sketch.shape[1], backbone.embed_dim, bias=False)
        init = self.params.text_projection
        if init == "auto":  # keep a shared image-text space (CLIP's, the miniature's) at the start when widths allow
            joint = getattr(backbone, "clip_dim", None) or text_in_image_space
            init = "identity" if joint and text_sketch.shape[1] == backbone.embed_dim else "random"
        if init == "identity":
            if text_sketch.shape[1] != backbone.embed_dim:
                raise ValueError(f"text_projection='identity' needs text width {text_sketch.shape[1]} = embed_dim "
                                 f"{backbone.embed_dim}; use 'random' or embed_dim={text_sketch.shape[1]}")
            with torch.no_grad():
                self.text_proj.weight.copy_(torch.eye(backbone.embed_dim))
        if self.params.local_text:
            _token_projection(backbone)
        if self.params.text_tokens:
            if text_sketch_tokens is None or text_photo_tokens is None:
                raise ValueError("text_tokens=True needs the prompts' token embeddings (encode_class_texts(..., "
                                 "tokens=True))")
            # per class: token embeddings [C, L, text_dim] of the prompt's words and their mask [C, L]
            self.register_buffer("text_sketch_tokens", text_sketch_tokens[0].float().clone())
            self.register_buffer("text_sketch_mask", text_sketch_tokens[1].bool().clone())
            self.register_buffer("text_photo_tokens", text_photo_tokens[0].float().clone())
            self.register_buffer("text_photo_mask", text_photo_tokens[1].bool().clone())

    @property
    def n_classes(self) -> int:
        return self.text_sketch.shape[0]

    def embed(self, images: torch.Tensor, domains: torch.Tensor) -> torch.Tensor:
        """Retrieval features: the global embedding (un-normalised)."""
        return self.backbone(images, domains).embedding

    def classify(self, images: torch.Tensor, domains: torch.Tensor) -> torch.Tensor:
        """Seen-class logits: the text-anchored classification term's (sketches against the sketch prompts,
        photos against the photo prompts), for the authors' selection rule."""
        emb = self.embed(images, domains).float()
        texts = self.class_texts()
        t = torch.where((domains == 0)[:, None, None], texts[0][None], texts[1][None])
        return F.cosine_similarity(emb[:, None], t.float(), dim=-1) / self.params.text_temperature

    def class_texts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected class texts [C, D] for sketches and photos. CLIP embeddings of prompts that differ in
        one word share a large common part (cosine 0.8-0.9 between classes), so by default it is removed
        (``center_text``) and the rest L2-normalised before the (bias-free) projection."""
        out = []
        for t in (self.text_sketch, self.text_photo):
            if self.params.center_text and t.shape[0] > 1:
                t = t - t.mean(0, keepdim=True)
            out.append(self.text_proj(F.normalize(t, dim=1)))
        return out[0], out[1]

    @torch.no_grad()
    def alignment(self, g_sketch, g_photo, tok_sketch, tok_photo, labels, texts) -> dict[str, torch.Tensor]:
        """a_loc, a_glob and the weight list w of the (sketch_i, photo_i) pairs; no gradient flows."""
        p = self.params
        t_s, t_p = (t.detach().float()[labels] for t in texts)
        tok_s, tok_p = tok_sketch.detach().float(), tok_photo.detach().float()
        pools = (None, None)
        if p.local_text and p.text_tokens:
            proj = _token_projection(self.backbone)
            pools = tuple(torch.softmax(self._token_relevance(proj(tok), domain, labels) / p.attention_temperature, dim=1)
                          for tok, domain in ((tok_s, "sketch"), (tok_p, "photo")))
        elif p.local_text:
            proj = _token_projection(self.backbone)
            pools = tuple(torch.softmax(F.cosine_similarity(proj(tok), t[:, None], dim=-1) / p.attention_temperature,
                                        dim=1) for tok, t in ((tok_s, t_s), (tok_p, t_p)))
        a_loc = cross_attention_score(tok_s, tok_p, p.attention_temperature, *pools)
        a_glob = global_score(g_sketch.detach().float(), g_photo.detach().float(), t_s, t_p, p.global_score)
        return {"a_loc": a_loc, "a_glob": a_glob,
                "w": weight_list(a_loc, a_glob, p.beta_effective, p.tau, p.emphasis)}

    def _token_relevance(self, image_tokens: torch.Tensor, domain: str, labels: torch.Tensor) -> torch.Tensor:
        """[B, N]: each image token's cosine with the best-matching word token of its class prompt (projected
        like the pooled text)."""
        words = self.text_proj(F.normalize(getattr(self, f"text_{domain}_tokens")[labels], dim=-1))  # [B, L, D]
        mask = getattr(self, f"text_{domain}_mask")[labels]                                           # [B, L]
        cos = F.normalize(image_tokens, dim=-1) @ F.normalize(words.float(), dim=-1).transpose(1, 2)  # [B, N, L]
        return cos.masked_fill(~mask[:, None, :], -2.0).amax(dim=2)

    def _parts(self, batch: dict):
        n = batch["image"].shape[0]
        if n % 4:
            raise ValueError(f"a DMWA batch holds 4 equal parts {ROLES} (data.quadruplets.stack_quadruplets), "
                             f"got {n} images")
        out = self.backbone(batch["image"], batch["domain"])
        chunk = lambda x: dict(zip(ROLES, x.split(n // 4)))  # noqa: E731
        return out, chunk(out.embedding), chunk(out.tokens), chunk(batch["label"])

    @torch.no_grad()
    def weigh(self, batch: dict) -> dict[str, torch.Tensor]:
        """The weight list (and a_loc, a_glob) of a quadruplet batch, as training computes it."""
        _, emb, tok, lab = self._parts(batch)
        return self.alignment(emb["sketch"], emb["photo"], tok["sketch"], tok["photo"], lab["sketch"],
                              self.class_texts())

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """Loss terms of a quadruplet batch ('total' is what to minimise; 'stat_*' are only monitored)."""
        p = self.params
        out, emb, tok, lab = self._parts(batch)
        texts = self.class_texts()
        align = self.alignment(emb["sketch"], emb["photo"], tok["sketch"], tok["photo"], lab["sketch"], texts)
        quad = losses.weighted_quadruplet(emb["sketch"], emb["photo"], emb["neg_photo"], emb["neg_sketch"], align["w"],
                                          symmetric=p.symmetric, form=p.loss, margin_cross=p.margin_cross,
                                          margin_same=p.margin_same, margin=p.margin, balance=p.balance,
                                          distance=p.distance)
        # text-anchored classification: sketches against the sketch prompts, photos against the photo prompts
        t = torch.where((batch["domain"] == 0)[:, None, None], texts[0][None], texts[1][None])     # [4P, C, D]
        logits = F.cosine_similarity(out.embedding.float()[:, None], t.float(), dim=-1) / p.text_temperature
        cls = losses.cross_entropy(logits, batch["label"])
        w = align["w"]
        return {"quad": quad, "cls": cls, "total": p.lambda_quad * quad + p.lambda_cls * cls,
                "stat_a_loc": align["a_loc"].mean(), "stat_a_glob": align["a_glob"].mean(),
                "stat_w_min": w.min(), "stat_w_max": w.max(), "stat_w_std": w.std(unbiased=False)}


def text_tower_choice(backbone: str, pretrained: str | None, params: DMWAParams) -> tuple[str, str | None]:
    """(text tower, its weights): the image tower's CLIP when the backbone is one; the miniature's small text
    tower (``"pretrain"``, trained with the small backbone by ``make pretrain``) when the small backbone starts
    from that pretraining; else the tiny random CLIP config (the class prompts then act as fixed random class
    codes, see docs/dmwa.md)."""
    from ..config import MINIATURE_PRETRAININGS
    from .clip_towers import TINY_CLIP_NAME

    if params.text_model is not None:
        return params.text_model, params.text_pretrained
    if backbone.startswith("clip:"):
        return backbone[len("clip:"):], params.text_pretrained or pretrained
    if backbone == "small" and pretrained in MINIATURE_PRETRAININGS:
        return pretrained, None
    return TINY_CLIP_NAME, params.text_pretrained


def miniature_class_texts(class_names: Sequence[str], dataset: str | None,
                          weights: str = "pretrain") -> torch.Tensor:
    """The miniature text tower's (frozen) embeddings [C, D] of the classes' captions (their programs' summaries,
    ``data.synthetic_pretrain.benchmark_captions``); the tower is the ``text.pt`` of the pretraining ``weights``
    names (``config.MINIATURE_PRETRAININGS``)."""
    from ..data.synthetic_pretrain import benchmark_captions
    from .named_weights import resolve_weights
    from .small_text import load_small_text_encoder

    if dataset is None:
        raise ValueError("the miniature's text tower captions a procedural benchmark's classes: name the data set")
    encoder = load_small_text_encoder(Path(resolve_weights(weights)).with_name("text.pt"))
    with torch.no_grad():
        return encoder.encode(benchmark_captions(dataset, list(class_names))).float()


def encode_class_texts(class_names: Sequence[str], model_name: str, pretrained: str | None,
                       seed: int = 0, tokens: bool = False, dataset: str | None = None) -> tuple:
    """Frozen CLIP text embeddings [C, text_dim] of the sketch and photo prompts of ``class_names``; with
    ``tokens`` also each prompt's word-token embeddings and mask (``TextEncoder.encode_class_tokens``), as
    (sketch, photo, sketch tokens, photo tokens).

    A randomly initialised tower (pretrained None) is built under ``seed`` without touching the
    global RNG, so the same names always give the same codes. ``model_name="pretrain"`` is the miniature's
    small text tower (``miniature_class_texts``): one caption per class serves both domains."""
    from ..config import MINIATURE_PRETRAININGS
    from .clip_towers import build_text_encoder

    if model_name in MINIATURE_PRETRAININGS:
        if tokens:
            raise ValueError("DMWA text_tokens=True needs a CLIP text tower's token embeddings; the miniature's small "
                             "text tower gives pooled caption embeddings only: set text_tokens=False")
        texts = miniature_class_texts(class_names, dataset, model_name)
        return texts, texts.clone()

    import logging

    quiet = logging.getLogger().level if pretrained is None else None
    if quiet is not None:  # open_clip warns that a random tower has no weights: that is the point here
        logging.getLogger().setLevel(logging.ERROR)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = build_text_encoder(model_name, pretrained)
    finally:
        if quiet is not None:
            logging.getLogger().setLevel(quiet)
    names = list(class_names)
    pooled = (encoder.encode_classes(names, "sketch").cpu(), encoder.encode_classes(names, "photo").cpu())
    if not tokens:
        return pooled
    return pooled + tuple(tuple(x.cpu() for x in encoder.encode_class_tokens(names, d)) for d in ("sketch", "photo"))
