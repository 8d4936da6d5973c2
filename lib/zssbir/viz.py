"""Plots of the study: image grids (more join as the methods land). Functions return Figures."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image


def image_grid(images: Sequence[Image.Image | np.ndarray], titles: Sequence[str] | None = None, ncols: int = 8,
               size: float = 1.4, row_labels: Sequence[str] | None = None, suptitle: str | None = None):
    """Images in rows of ``ncols``; ``row_labels`` name each row on its left."""
    n = len(images)
    if n == 0:
        raise ValueError("image_grid needs at least one image")
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * size * 1.1), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([]), ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        if k < n:
            ax.imshow(images[k], cmap="gray" if np.ndim(images[k]) == 2 else None)
            if titles is not None:
                ax.set_title(titles[k], fontsize=7)
    if row_labels is not None:
        for r, label in enumerate(row_labels[:nrows]):
            axes[r, 0].set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig
