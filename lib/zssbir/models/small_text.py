"""The small text tower of the miniature CLIP (issue 13): captions of class programs -> the image embedding space.

On real data DMWA encodes its class prompts with CLIP's frozen text tower, trained contrastively with CLIP's
image tower so that a class's text lands near its photos. The miniature does the same at its own scale:
``training.pretrain`` trains this encoder together with the small image backbone on the pretraining corpus,
each photo against the captions of all corpus classes (CLIP's loss with the class captions as the texts). A
caption is a class program's readable summary (``ClassProgram.summary``: arrangement, parts, attachments,
fills), never its name, so the caption of an unseen benchmark class means something to it.

  caption -> lower-case words (letters and digits) -> ids in the pretraining's word list (unknown words: one id)
  -> word + position embeddings -> ``depth`` pre-norm transformer layers -> LayerNorm
  -> mean over the caption's words -> Linear(width -> embed_dim)

The saved file (``text.pt`` next to the pretraining's ``backbone.pt``) holds the word list, the settings and the
weights: ``load_small_text_encoder`` rebuilds it.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

WORD = re.compile(r"[a-z0-9]+")
PAD, UNKNOWN = "<pad>", "<unknown>"


def caption_words(caption: str) -> list[str]:
    return WORD.findall(caption.lower())


def build_vocabulary(captions: Sequence[str]) -> list[str]:
    """The word list of a set of captions: padding and unknown first, then the words in sorted order."""
    return [PAD, UNKNOWN] + sorted({w for c in captions for w in caption_words(c)})


class SmallTextEncoder(nn.Module):
    def __init__(self, vocabulary: Sequence[str], embed_dim: int = 512, width: int = 128, depth: int = 2,
                 heads: int = 4, max_words: int = 48):
        super().__init__()
        if list(vocabulary[:2]) != [PAD, UNKNOWN]:
            raise ValueError(f"a word list starts with {PAD!r} and {UNKNOWN!r} (build_vocabulary makes one)")
        self.vocabulary = list(vocabulary)
        self.index = {w: i for i, w in enumerate(self.vocabulary)}
        self.settings = {"embed_dim": embed_dim, "width": width, "depth": depth, "heads": heads,
                         "max_words": max_words}
        self.embed_dim, self.max_words = embed_dim, max_words
        self.words = nn.Embedding(len(self.vocabulary), width, padding_idx=0)
        self.positions = nn.Parameter(torch.zeros(1, max_words, width))
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, embed_dim)
        nn.init.normal_(self.words.weight, std=0.02)
        nn.init.trunc_normal_(self.positions, std=0.02)

    def tokenize(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Word ids [N, L] and their mask [N, L] (True on words); captions longer than ``max_words`` are cut."""
        rows = [[self.index.get(w, 1) for w in caption_words(c)][:self.max_words] or [1] for c in captions]
        length = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), length, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r)
        return ids, ids != 0

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.words(ids) + self.positions[:, :ids.shape[1]]
        x = self.norm(self.blocks(x, src_key_padding_mask=~mask))
        m = mask.unsqueeze(-1).to(x.dtype)
        return self.proj((x * m).sum(1) / m.sum(1).clamp_min(1.0))

    def encode(self, captions: Sequence[str]) -> torch.Tensor:
        """Embeddings [N, embed_dim] (un-normalised) of the captions."""
        ids, mask = self.tokenize(captions)
        device = self.proj.weight.device
        return self(ids.to(device), mask.to(device))

    def unknown_words(self, captions: Sequence[str]) -> list[str]:
        return sorted({w for c in captions for w in caption_words(c) if w not in self.index})

    def file_state(self) -> dict:
        return {"vocabulary": self.vocabulary, "settings": self.settings, "state_dict": self.state_dict()}


def load_small_text_encoder(path: str | Path) -> SmallTextEncoder:
    """The frozen text tower saved by the pretraining (``text.pt``), in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the miniature's text tower is built by the pretraining "
                                "(`make pretrain`), next to its backbone.pt")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or not {"vocabulary", "settings", "state_dict"} <= set(state):
        raise ValueError(f"{path} is not a small text tower file (word list, settings and weights)")
    try:
        encoder = SmallTextEncoder(state["vocabulary"], **state["settings"])
        encoder.load_state_dict(state["state_dict"])
    except (RuntimeError, TypeError, ValueError) as err:  # weights of other settings, unknown settings
        raise ValueError(f"{path} does not hold a text tower of its own settings ({str(err).splitlines()[0]}); "
                         "rebuild it with `make pretrain`") from None
    return encoder.requires_grad_(False).eval()


def contrastive_logits(images: torch.Tensor, texts: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """CLIP's logits: cosine similarity of every image to every text, times exp(logit_scale) (capped at 100)."""
    scale = logit_scale.exp().clamp(max=100.0)
    return scale * F.normalize(images, dim=-1) @ F.normalize(texts, dim=-1).t()
