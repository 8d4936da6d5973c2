"""Sketch rendering: wobbly black outlines of an instance's visible part contours on white.

``visible_runs`` resamples every part outline and cuts away the stretches hidden behind later
(nearer) shapes, once per instance; ``render_sketch`` then draws one hand-drawn-looking sketch from
those runs: strokes start at random points, overshoot or fall short of their ends, are sometimes
split, omitted or doubled, wobble, vary in width and darkness, and the whole drawing is slightly
warped (affine + keystone + smooth bend). Output: mode "L" (greyscale), white background.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .drawing import PartShape, rotation, supersample
from .drawing_photo import part_mask

STEP = 0.006  # outline resampling step, normalised image units
Run = tuple[np.ndarray, bool]  # points (N, 2) normalised, closed


def _resample(pts: np.ndarray, closed: bool, step: float = STEP) -> np.ndarray:
    if closed:
        pts = np.vstack([pts, pts[:1]])
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    n = max(2, int(np.ceil(s[-1] / step)) + 1)
    t = np.linspace(0.0, s[-1], n)
    if closed:
        t = t[:-1]
    return np.stack([np.interp(t, s, pts[:, 0]), np.interp(t, s, pts[:, 1])], axis=1)


def _split(q: np.ndarray, closed: bool, vis: np.ndarray) -> list[Run]:
    if vis.all():
        return [(q, closed)]
    if closed:  # start at a hidden point so that visible stretches do not wrap around
        k = int(np.argmin(vis))
        q, vis = np.roll(q, -k, axis=0), np.roll(vis, -k)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], vis.astype(np.int8), [0]])))
    return [(q[a:b], False) for a, b in zip(edges[0::2], edges[1::2]) if b - a >= 3]


def visible_runs(parts: Sequence[PartShape], res: int = 160) -> list[Run]:
    """Outline stretches not covered by a later shape (strokes never cover), in z-order."""
    label = np.zeros((res, res), np.int16)
    for i, part in enumerate(parts):
        if not part.is_stroke:
            label[np.asarray(part_mask(part, res)) > 127] = i + 1
    runs: list[Run] = []
    for i, part in enumerate(parts):
        for pts, closed, _ in part.paths:
            q = _resample(pts, closed)
            ij = np.clip((q * res).astype(int), 0, res - 1)
            runs += _split(q, closed, label[ij[:, 1], ij[:, 0]] <= i + 1)
    return runs


def _extend(q: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Over-shoot (along the tangent) or fall short at each end of an open stroke."""
    for end in (0, 1):
        if len(q) > 4 and rng.random() < 0.25:
            q = q[2:] if end == 0 else q[:-2]
        elif rng.random() < 0.6:
            a, b = (q[0], q[1]) if end == 0 else (q[-1], q[-2])
            d = (a - b) / (np.linalg.norm(a - b) + 1e-9) * rng.uniform(0.005, 0.03)
            q = np.vstack([a + d, q]) if end == 0 else np.vstack([q, a + d])
    return q


def _strokes(q: np.ndarray, closed: bool, rng: np.random.Generator) -> list[np.ndarray]:
    """How a person would draw one run: loops start anywhere and overlap or gap where they close."""
    if not closed:
        return [_extend(q, rng)]
    m = len(q)
    q = np.roll(q, -int(rng.integers(m)), axis=0)
    if m >= 12 and rng.random() < 0.3:
        k = int(rng.integers(m // 3, 2 * m // 3))
        return [_extend(q[:k + 1], rng), _extend(np.vstack([q[k:], q[:1]]), rng)]
    extra = int(rng.uniform(-0.04, 0.12) * m)
    loop = np.vstack([q, q[:max(1, extra + 1)]]) if extra >= 0 else q[:extra]
    return [_extend(loop, rng)]


def _wobble(q: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Displace a stroke along its normals by slow drift plus fast tremor, and shift it a little."""
    if len(q) < 2:
        return q
    seg = np.diff(q, axis=0)
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(seg, axis=1))])
    tangent = np.gradient(q, axis=0)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], 1) / (np.linalg.norm(tangent, axis=1, keepdims=True) + 1e-9)
    amp = rng.uniform(0.003, 0.009), rng.uniform(0.0008, 0.0025)
    freq, phase = rng.uniform(1.0, 3.0), rng.uniform(0, 2 * np.pi, 2)
    off = amp[0] * np.sin(2 * np.pi * freq * s + phase[0]) + amp[1] * np.sin(2 * np.pi * 8 * freq * s + phase[1])
    return q + normal * off[:, None] + rng.normal(0, 0.003, 2)


def _warp(rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """A slight global distortion of the whole drawing: affine, keystone and a smooth bend."""
    lin = rotation(rng.normal(0, 4)) @ (np.eye(2) + rng.normal(0, 0.05, (2, 2))) * rng.uniform(0.92, 1.08)
    shift = rng.normal(0, 0.02, 2)
    keystone = rng.normal(0, 0.12, 2)
    amp, freq, phase = rng.uniform(0, 0.012, 2), rng.uniform(0.5, 1.5, 2), rng.uniform(0, 2 * np.pi, 2)

    def warp(p: np.ndarray) -> np.ndarray:
        q = (p - 0.5) @ lin.T
        q = q / (1 + q @ keystone)[:, None]
        bend = amp * np.sin(2 * np.pi * freq * q[:, ::-1] + phase)
        return q + bend + 0.5 + shift

    return warp


def _draw(draw: ImageDraw.ImageDraw, pts: np.ndarray, width: float, ink: int, rng: np.random.Generator) -> None:
    """One stroke in chunks of varying width (pen pressure), joints rounded."""
    chunk = int(rng.integers(12, 30))
    for a in range(0, max(1, len(pts) - 1), chunk):
        seg = pts[a:a + chunk + 1]
        w = max(1, int(round(width * rng.uniform(0.75, 1.3))))
        draw.line([tuple(p) for p in seg], fill=ink, width=w, joint="curve")
        x, y = seg[-1]
        draw.ellipse([x - w / 2, y - w / 2, x + w / 2, y + w / 2], fill=ink)


def _omitted(strokes: Sequence[np.ndarray], rng: np.random.Generator, p: float = 0.15) -> set[int]:
    """Strokes left out: only minor ones (under a third of the longest), at most a quarter of them."""
    lengths = np.array([np.linalg.norm(np.diff(s, axis=0), axis=1).sum() for s in strokes])
    minor = np.flatnonzero((lengths < lengths.max() / 3) & (rng.random(len(strokes)) < p)) if len(strokes) else []
    return set(int(i) for i in minor[:len(strokes) // 4])


def render_sketch(runs: Sequence[Run], rng: np.random.Generator, size: int) -> Image.Image:
    """A greyscale (mode "L") sketch of size x size pixels drawn from ``visible_runs`` of an instance."""
    side = size * supersample(size)
    warp = _warp(rng)
    strokes = [s for q, closed in runs for s in _strokes(q, closed, rng)]
    omitted = _omitted(strokes, rng)
    width = max(1.0, size / 80) * side / size * rng.uniform(0.85, 1.2)
    img = Image.new("L", (side, side), 255)
    draw = ImageDraw.Draw(img)
    for i, stroke in enumerate(strokes):
        if i in omitted:
            continue
        ink = int(rng.uniform(0, 60))
        w = width * np.exp(rng.normal(0, 0.2))
        _draw(draw, warp(_wobble(stroke, rng)) * side, w, ink, rng)
        if rng.random() < 0.2:  # doubled: the stroke drawn again, slightly off
            _draw(draw, warp(_wobble(stroke, rng)) * side, w * 0.8, ink, rng)
    return img.resize((size, size), Image.LANCZOS)
