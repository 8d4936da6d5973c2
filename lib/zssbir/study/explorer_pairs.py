"""The DMWA pair view of ``06_explore``: ``PairProbe`` computes the weight list of a batch of training pairs as
training does, and for one pair its local and global scores, its weight and the local block's token-to-token
attention; ``attention_figure`` draws that attention over both images. Runs open as in ``explorer``."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from ..runtime import resolve_device
from . import runs
from .explorer import open_for_exploring


class PairProbe:
    """DMWA's weight list on a batch of training pairs (``dmwa_analysis.probe_weights``: one batch, evaluation
    transforms, as a training step computes it) and, per pair, what its local block attends to."""

    def __init__(self, run: runs.TrainedRun, *, n: int = 32, seed: int = 0, device: str = "auto"):
        from .dmwa_analysis import probe_weights

        if run.config.method != "dmwa":
            raise ValueError(f"run {run.name} is a {run.config.method} run: the pair view needs a DMWA run "
                             "(settings file study/dmwa.yaml, trained by notebook 04_dmwa)")
        self.run, self.device = run, resolve_device(device)
        self.model = run.model.eval().to(self.device)
        self.frame, self.quads = probe_weights(self.model, run.config, n=n, seed=seed, device=self.device)
        self.frame["rank by w"] = self.frame["w"].rank(ascending=False, method="first").astype(int)

    @classmethod
    def open(cls, run_config: str | Path, overrides: dict | None = None, *, device: str = "auto",
             trained_by: str = "04_dmwa", if_code_changed: str = "refuse", **kwargs) -> PairProbe:
        return cls(open_for_exploring(run_config, overrides, device=device, trained_by=trained_by,
                                      if_code_changed=if_code_changed), device=device, **kwargs)

    def __len__(self) -> int:
        return len(self.frame)

    def extremes(self, n: int) -> list[int]:
        """Rows of the ``n`` lowest and ``n`` highest weighted pairs (lowest first)."""
        order = self.frame["w"].argsort().to_numpy()
        return list(dict.fromkeys([int(i) for i in order[:n]] + [int(i) for i in order[::-1][:n][::-1]]))

    def pair(self, row: int) -> dict:
        """Pair ``row`` of the list: its images, a_loc, a_glob, w, rank in the list, and the local block's
        attention (``models.dmwa.token_attention``) with the token grid side."""
        from ..models.dmwa import token_attention

        if not 0 <= int(row) < len(self):
            raise ValueError(f"pair {row} is out of range: the list holds {len(self)} pairs, 0..{len(self) - 1}")
        r = self.frame.iloc[int(row)]
        s, p = self.quads.sketches[int(r["sketch"])], self.quads.photos[int(r["photo"])]
        images = torch.stack([s["image"], p["image"]]).to(self.device)
        with torch.no_grad():
            tokens = self.model.backbone(images, torch.tensor([0, 1], device=self.device)).tokens.float().cpu()
        att = {k: v[0].numpy() for k, v in token_attention(tokens[:1], tokens[1:], self.model.params.attention_temperature).items()}
        side = int(round(np.sqrt(tokens.shape[1])))
        return {"row": int(row), "class": r["class"], "paired": bool(r["paired"]), "a_loc": float(r["a_loc"]),
                "a_glob": float(r["a_glob"]), "w": float(r["w"]), "rank": int(r["rank by w"]), "n": len(self),
                "sketch": self.quads.sketches.load_image(int(r["sketch"])),
                "photo": self.quads.photos.load_image(int(r["photo"])),
                "grid": side if side * side == tokens.shape[1] else None, **att}

    def ink(self) -> pd.Series:
        """Per pair of the list, its sketch's ink: the share of dark pixels (grey level below 128), a rough count of
        how many strokes and parts the sketch has."""
        return pd.Series([float((np.asarray(self.quads.sketches.load_image(int(s)).convert("L")) < 128).mean())
                          for s in self.frame["sketch"]], index=self.frame.index, name="sketch ink")

    def sentence(self, pair: dict) -> str:
        return (f"pair {pair['row']} ({pair['class']}, {'drawn from this photo' if pair['paired'] else 'same class'}): "
                f"a_loc {pair['a_loc']:.3f}, a_glob {pair['a_glob']:.3f}, w {pair['w']:.3f} "
                f"(rank {pair['rank']} of {pair['n']} by weight; the list's mean is 1).")


def stripe_share(pair: dict) -> float:
    """The share of a pair's sketch tokens whose most-attended photo token is the same one (the most common): near
    1 / (photo tokens) when each part of the sketch looks at its own spot, near 1 when the attention matrix is one
    vertical stripe (every sketch token looks at the same photo token)."""
    top = np.asarray(pair["sketch_to_photo"]).argmax(1)
    return float(np.bincount(top).max() / len(top))


def attention_figure(pair: dict, token: int | None = None):
    """The local block of one pair as heat maps over both images: each sketch token's score (cosine with what it
    gathers from the photo), where one sketch token (``token``; default: the most focused one) attends in the photo,
    each photo token's score, and the whole sketch-to-photo attention matrix."""
    att = pair["sketch_to_photo"]
    if token is None:
        token = int(att.max(1).argmax())
    if not 0 <= token < len(att):
        raise ValueError(f"sketch token {token} is out of range 0..{len(att) - 1}")
    g = pair["grid"]
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
    overlays = [(pair["sketch"], pair["sketch_score"], "sketch: token score"),
                (pair["photo"], att[token], f"photo: attention of sketch token {token}"),
                (pair["photo"], pair["photo_score"], "photo: token score")]
    for ax, (img, values, title) in zip(axes, overlays):
        ax.imshow(img)
        if g:
            w, h = img.size
            ax.imshow(values.reshape(g, g), cmap="magma", alpha=0.55, extent=(0, w, h, 0), interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
    if g:
        w, h = pair["sketch"].size
        y, x = divmod(token, g)
        axes[0].add_patch(plt.Rectangle((x * w / g, y * h / g), w / g, h / g, fill=False, color="cyan", lw=2))
    im = axes[3].imshow(att, cmap="magma", aspect="auto")
    axes[3].set(xlabel="photo token", ylabel="sketch token", title="sketch-to-photo attention")
    axes[3].title.set_fontsize(8)
    fig.colorbar(im, ax=axes[3], fraction=0.046)
    fig.suptitle(f"{pair['class']}: a_loc {pair['a_loc']:.3f}, a_glob {pair['a_glob']:.3f}, w {pair['w']:.3f} "
                 f"(rank {pair['rank']} of {pair['n']})", fontsize=9)
    fig.tight_layout()
    return fig
