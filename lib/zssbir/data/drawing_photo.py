"""Photo rendering: filled, textured, shaded parts with a soft shadow on a cluttered background.

Drawn at ``supersample(size)`` times the output size, downsampled with LANCZOS, then blurred and
given sensor noise. Returns an RGB ``PIL.Image``. All randomness comes from the ``rng`` argument.
"""
from __future__ import annotations

import colorsys
from typing import Sequence

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from .drawing import PartShape, supersample


def _muted(rng: np.random.Generator, sat: tuple[float, float] = (0.05, 0.45)) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(*sat), rng.uniform(0.3, 0.95)))


def _background(rng: np.random.Generator, side: int) -> np.ndarray:
    """Gradient + low-frequency mottling (+ sometimes a floor or wallpaper stripes), float (S, S, 3)."""
    g = (np.arange(side, dtype=np.float32) + 0.5) / side
    yy, xx = np.meshgrid(g, g, indexing="ij")
    a = rng.uniform(0, 2 * np.pi)
    t = np.clip(0.5 + (xx - 0.5) * np.cos(a) + (yy - 0.5) * np.sin(a), 0, 1)[..., None]
    bg = _muted(rng) * (1 - t) + _muted(rng) * t
    if rng.random() < 0.45:  # a table or floor
        horizon = rng.uniform(0.55, 0.8)
        bg = np.where((yy > horizon + 0.03 * np.sin(6 * xx))[..., None], _muted(rng) * (0.7 + 0.3 * yy[..., None]), bg)
    if rng.random() < 0.3:  # wallpaper stripes
        phase = np.sin(2 * np.pi * rng.uniform(4, 10) * (xx * np.cos(a) - yy * np.sin(a)))
        bg = bg * (1 - rng.uniform(0.05, 0.15) * (phase[..., None] > 0))
    noise = rng.random((6, 6, 1)) * 0.75 + rng.random((6, 6, 3)) * 0.25  # mostly lightness, a little colour
    mottle = Image.fromarray((noise * 255).astype(np.uint8)).resize((side, side), Image.BICUBIC)
    bg = bg + (np.asarray(mottle, np.float32) / 255 - 0.5) * rng.uniform(0.1, 0.3)
    return np.clip(bg, 0, 1).astype(np.float32)


def _clutter(canvas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random background things (blocks, ellipses, polygons, bars) that are not the object, out of focus."""
    side = canvas.shape[0]
    img = Image.fromarray((canvas * 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 10))):
        col = tuple(int(v * 255) for v in _muted(rng, (0.1, 0.6)))
        cx, cy = rng.uniform(-0.1, 1.1, 2) * side
        rx, ry = rng.uniform(0.05, 0.3, 2) * side
        kind = rng.integers(4)
        if kind == 0:
            draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=col)
        elif kind == 1:
            draw.rectangle([cx - rx, cy - ry, cx + rx, cy + ry], fill=col)
        elif kind == 2:
            ang = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 7))))
            draw.polygon([(cx + rx * np.cos(t), cy + ry * np.sin(t)) for t in ang], fill=col)
        else:
            width = max(1, int(rng.uniform(0.01, 0.05) * side))
            draw.line([(cx - rx, cy - ry), (cx + rx, cy + ry)], fill=col, width=width)
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.004, 0.012) * side))
    return np.asarray(img, np.float32) / 255


def part_mask(part: PartShape, side: int) -> Image.Image:
    """The part's coverage at ``side`` x ``side`` pixels (mode L, 255 inside)."""
    mask = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(mask)
    for pts, _, hole in part.paths:
        xy = [tuple(p) for p in pts * side]
        if part.is_stroke:
            width = max(1, int(round(part.thick * side)))
            draw.line(xy, fill=255, width=width, joint="curve")
            for x, y in (xy[0], xy[-1]):
                draw.ellipse([x - width / 2, y - width / 2, x + width / 2, y + width / 2], fill=255)
        else:
            draw.polygon(xy, fill=0 if hole else 255)
    return mask


def _shadow(canvas: np.ndarray, masks: Sequence[Image.Image], rng: np.random.Generator) -> np.ndarray:
    side = canvas.shape[0]
    union = masks[0]
    for m in masks[1:]:
        union = ImageChops.lighter(union, m)
    shifted = Image.new("L", union.size, 0)
    shifted.paste(union, tuple(int(v) for v in rng.uniform(0.01, 0.04, 2) * side))
    soft = np.asarray(shifted.filter(ImageFilter.GaussianBlur(0.02 * side)), np.float32) / 255
    return canvas * (1 - rng.uniform(0.25, 0.5) * soft[..., None])


def _texture(part: PartShape, du: np.ndarray, dv: np.ndarray) -> np.ndarray:
    """Fill colour over a pixel region; du, dv are offsets along the part's (unit) axes, normalised units."""
    c1, c2 = np.array(part.rgb, np.float32), np.array(part.rgb2, np.float32)
    freq, ang = part.tex
    if part.fill == "gradient":
        ext = np.linalg.norm(part.axes[:, 1]) + 1e-6
        t = np.clip(0.5 + dv / (2 * ext), 0, 1)[..., None]
        return c1 * (1.25 - 0.6 * t)
    if part.fill in ("solid", "gradient") or part.is_stroke:
        return np.broadcast_to(c1, du.shape + (3,))
    a = np.deg2rad(ang)
    s, t = (du * np.cos(a) + dv * np.sin(a)) * freq, (dv * np.cos(a) - du * np.sin(a)) * freq
    if part.fill == "stripes":
        on = np.sin(2 * np.pi * s) > 0
    elif part.fill == "dots":
        on = (s - np.round(s)) ** 2 + (t - np.round(t)) ** 2 < 0.09
    else:  # checker
        on = (np.floor(s) + np.floor(t)) % 2 == 0
    return np.where(on[..., None], c2, c1)


def _paint(canvas: np.ndarray, part: PartShape, mask: Image.Image, light: np.ndarray) -> None:
    """Composite one textured, shaded part onto the canvas (in place, within its bounding box)."""
    side = canvas.shape[0]
    box = mask.getbbox()
    if box is None:
        return
    x0, y0, x1, y1 = box
    m = np.asarray(mask.crop(box), np.float32) / 255
    ys, xs = (np.arange(y0, y1, dtype=np.float32) + 0.5) / side, (np.arange(x0, x1, dtype=np.float32) + 0.5) / side
    dx, dy = xs[None, :] - part.centre[0], ys[:, None] - part.centre[1]
    axes = part.axes / (np.linalg.norm(part.axes, axis=0) + 1e-9)
    du, dv = dx * axes[0, 0] + dy * axes[1, 0], dx * axes[0, 1] + dy * axes[1, 1]
    colour = _texture(part, du, dv)
    ext = max(np.linalg.norm(part.axes, axis=0).max(), part.thick, 1e-3)
    lit = np.clip(1.0 + 0.3 * (dx * light[0] + dy * light[1]) / ext, 0.6, 1.3)
    pad = max(2, int(0.25 * ext * side))
    rim = mask.crop((x0 - pad, y0 - pad, x1 + pad, y1 + pad)).filter(ImageFilter.BoxBlur(pad // 2 + 1))
    rim = np.asarray(rim, np.float32)[pad:pad + y1 - y0, pad:pad + x1 - x0] / 255
    shade = (lit * (0.6 + 0.4 * rim))[..., None]
    glare = 0.0
    if not part.is_stroke:
        gx, gy = dx - light[0] * 0.35 * ext, dy - light[1] * 0.35 * ext
        glare = (0.35 * np.exp(-(gx ** 2 + gy ** 2) / (2 * (0.25 * ext) ** 2)))[..., None]
    colour = colour * shade
    colour = colour + glare * (1 - colour)
    region = canvas[y0:y1, x0:x1]
    region += (np.clip(colour, 0, 1) - region) * m[..., None]


def render_photo(parts: Sequence[PartShape], rng: np.random.Generator, size: int) -> Image.Image:
    """An RGB photo of the instance ``parts`` at ``size`` x ``size`` pixels."""
    side = size * supersample(size)
    canvas = _clutter(_background(rng, side), rng)
    masks = [part_mask(p, side) for p in parts]
    canvas = _shadow(canvas, masks, rng)
    a = rng.uniform(np.deg2rad(200), np.deg2rad(250))  # light from the upper left
    light = np.array([np.cos(a), np.sin(a)])  # unit vector towards the light
    for part, mask in zip(parts, masks):
        _paint(canvas, part, mask, light)
    img = Image.fromarray((np.clip(canvas, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")
    img = img.resize((size, size), Image.LANCZOS).filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 0.7) * size / 64))
    arr = np.asarray(img, np.float32) + rng.normal(0, rng.uniform(2, 8), (size, size, 3)).astype(np.float32)
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")
