"""The live explorer's images (``explorer_widgets``): a query's top photos and its PQ cell as framed PIL tiles,
a few milliseconds where a matplotlib figure takes a second."""
from __future__ import annotations

from PIL import Image, ImageDraw

from ..viz import palette_colour
from .explorer import Comparison, Explorer, Ranking


def tiles_image(images, frames, captions=None, *, ncols: int = 4, tile: int = 84, border: int = 4) -> Image.Image:
    """Images in a grid of ``tile`` px squares framed by colour (``frames``: a colour name per image) with a caption
    line under each: what the live explorer shows (PIL, a few ms, where a matplotlib figure takes a second)."""
    from PIL import ImageFont

    n = max(1, len(images))
    rows = -(-n // ncols)
    cap = 14 if captions else 0
    out = Image.new("RGB", (ncols * (tile + 2 * border + 4), rows * (tile + 2 * border + 4 + cap)), "white")
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    for i, (img, colour) in enumerate(zip(images, frames)):
        r, c = divmod(i, ncols)
        x, y = c * (tile + 2 * border + 4), r * (tile + 2 * border + 4 + cap)
        draw.rectangle([x, y, x + tile + 2 * border - 1, y + tile + 2 * border - 1], fill=colour)
        out.paste(img.convert("RGB").resize((tile, tile), Image.BICUBIC), (x + border, y + border))
        if captions:
            draw.text((x + 1, y + tile + 2 * border + 1), str(captions[i])[:18], fill="black", font=font)
    return out


def ranking_image(explorer: Explorer, ranking: Ranking, **kwargs) -> Image.Image:
    """The top photos of one list, framed green (the query's class) or red (the palette's relevance colours),
    captioned with rank and class."""
    names = explorer.class_names
    return tiles_image([explorer.photo(int(j)) for j in ranking.top],
                       [palette_colour("relevance", bool(ok)) for ok in ranking.relevant],
                       [f"{i + 1}. {names[explorer.photo_labels[j]]}" for i, j in enumerate(ranking.top)], **kwargs)


def cell_image(explorer: Explorer, shown: Comparison, n: int = 8, **kwargs) -> Image.Image:
    """Up to ``n`` photos of the query's PQ cell, framed green when of the query's class."""
    members = shown.cell.members[:n]
    names = explorer.class_names
    return tiles_image([explorer.photo(int(j)) for j in members],
                       [palette_colour("relevance", bool(explorer.photo_labels[j] == shown.query.label))
                        for j in members],
                       [names[explorer.photo_labels[j]] for j in members], **kwargs)
