"""Part vocabulary of the synthetic benchmark and the geometry of one drawn instance.

Conventions:
  * object frame: a class program's parts fit in about [-1, 1]^2, y points DOWN (image convention);
  * a part is a unit shape or stroke (``unit_paths``) scaled by its half-extents (w, h), rotated by
    ``angle`` degrees (standard rotation matrix in the y-down frame, i.e. clockwise on screen) and
    moved to its centre (x, y);
  * instance frame: normalised image coordinates in [0, 1]^2 (multiply by the pixel size to draw);
  * a path is ``(points (N, 2), closed, hole)``; a ring is an outer path plus a hole path.
Class-level structure lives in ``Part``; ``make_instance`` turns a class's parts into one posed,
jittered, coloured instance (``PartShape`` list) that both the photo and the sketches are drawn from.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass
from typing import Sequence

import numpy as np

SHAPES = ("circle", "ellipse", "rectangle", "triangle", "star", "ring", "blob", "diamond", "hexagon")
STROKES = ("line", "zigzag", "wave", "arc", "curl")
FILLS = ("solid", "gradient", "stripes", "dots", "checker")
ISOTROPIC = frozenset({"circle", "ring", "star", "hexagon"})  # w == h by construction

OBJECT_HALF = 0.42  # half the image an unscaled object spans (object frame [-1, 1] -> [0.08, 0.92])

Path = tuple[np.ndarray, bool, bool]  # points (N, 2), closed, hole


@dataclass(frozen=True)
class Part:
    """One part of a class program (class-level structure, object frame)."""

    kind: str  # a SHAPES or STROKES name
    x: float
    y: float
    w: float  # half-extent along the part's own u axis (strokes: half-length)
    h: float  # half-extent along v (strokes: amplitude)
    angle: float = 0.0  # degrees
    params: tuple[float, ...] = ()  # kind-specific geometry (see ``unit_paths``)
    fill: str = "solid"  # texture of shapes (strokes: solid or gradient)
    hue: float = 0.0  # primary hue in [0, 1)
    hue2: float = 0.5  # secondary hue (stripes, dots, checks)
    tex: tuple[float, float] = (10.0, 0.0)  # texture frequency (cycles per image width), angle (deg)
    thick: float = 0.0  # stroke thickness in object units (shapes: 0)

    @property
    def is_stroke(self) -> bool:
        return self.kind in STROKES


@dataclass
class PartShape:
    """One part of one instance, in normalised image coordinates."""

    kind: str
    is_stroke: bool
    paths: list[Path]
    centre: np.ndarray  # (2,)
    axes: np.ndarray  # (2, 2): columns = the part's u and v half-axes in image coordinates
    fill: str
    rgb: tuple[float, float, float]
    rgb2: tuple[float, float, float]
    tex: tuple[float, float]
    thick: float  # stroke thickness, normalised (shapes: 0)


def _circle(n: int = 64, r: float = 1.0) -> np.ndarray:
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _rounded_rect(radius: float) -> np.ndarray:
    if radius <= 0:
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float)
    pts = []
    t = np.linspace(0, np.pi / 2, 6)
    for (cx, cy), start in zip([(1, 1), (-1, 1), (-1, -1), (1, -1)], [0, 0.5, 1.0, 1.5]):
        a = t + start * np.pi
        pts.append(np.stack([cx * (1 - radius) + radius * np.cos(a), cy * (1 - radius) + radius * np.sin(a)], 1))
    return np.concatenate(pts)


def _star(points: int, inner: float) -> np.ndarray:
    t = np.arange(2 * points) * np.pi / points - np.pi / 2
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _blob(harmonics: Sequence[float]) -> np.ndarray:
    t = np.linspace(0.0, 2 * np.pi, 72, endpoint=False)
    r = np.ones_like(t)
    for k, (amp, phase) in enumerate(zip(harmonics[0::2], harmonics[1::2]), start=2):
        r += amp * np.cos(k * t + phase)
    r /= r.max()
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _stroke(kind: str, params: Sequence[float]) -> np.ndarray:
    """Open unit strokes run from u = -1 (the anchor end) to u = +1."""
    if kind == "line":
        return np.array([[-1.0, 0.0], [1.0, 0.0]])
    if kind == "zigzag":
        teeth = int(params[0]) if params else 4
        u = np.linspace(-1, 1, 2 * teeth + 1)
        v = np.zeros_like(u)
        v[1:-1] = np.where(np.arange(1, 2 * teeth) % 2 == 1, -1.0, 1.0)
        return np.stack([u, v], 1)
    if kind == "wave":
        periods = params[0] if params else 2.0
        u = np.linspace(-1, 1, 48)
        return np.stack([u, np.sin(np.pi * periods * (u + 1))], 1)
    if kind == "arc":
        t = np.linspace(np.pi, 2 * np.pi, 32)
        return np.stack([np.cos(t), np.sin(t)], 1)
    if kind == "curl":  # a straight run ending in an inward spiral
        turns = params[0] if params else 1.75
        t = np.linspace(0.0, 2 * np.pi * turns, int(28 * turns))
        r = 0.6 * (1 - 0.85 * t / t[-1])
        spiral = np.stack([0.4 - r * np.cos(t), -r * np.sin(t)], 1)
        return np.concatenate([[[-1.0, 0.0]], spiral])
    raise ValueError(f"unknown stroke kind {kind!r}; expected one of {STROKES}")


def unit_paths(kind: str, params: Sequence[float] = ()) -> list[Path]:
    """The outline paths of a unit part (shapes fill [-1, 1]^2; strokes run along u in [-1, 1]).

    params: rectangle (corner radius,), star (points, inner radius), ring (hole radius,),
    blob (amp2, phase2, amp3, phase3, ...), zigzag (teeth,), wave (periods,), curl (turns,).
    """
    if kind in STROKES:
        return [(_stroke(kind, params), False, False)]
    if kind in ("circle", "ellipse"):
        return [(_circle(), True, False)]
    if kind == "ring":
        hole = params[0] if params else 0.55
        return [(_circle(), True, False), (_circle(r=hole), True, True)]
    if kind == "rectangle":
        return [(_rounded_rect(params[0] if params else 0.0), True, False)]
    if kind == "triangle":
        return [(np.array([[0.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]), True, False)]
    if kind == "diamond":
        return [(np.array([[0.0, -1.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]), True, False)]
    if kind == "hexagon":
        return [(_circle(6), True, False)]
    if kind == "star":
        points, inner = (params[0], params[1]) if len(params) >= 2 else (5, 0.45)
        return [(_star(int(points), inner), True, False)]
    if kind == "blob":
        return [(_blob(params or (0.15, 0.0)), True, False)]
    raise ValueError(f"unknown part kind {kind!r}; expected one of {SHAPES + STROKES}")


def rotation(degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])


def part_paths(part: Part) -> list[Path]:
    """The part's outline paths in the object frame."""
    lin = rotation(part.angle) @ np.diag([part.w, part.h])
    return [(pts @ lin.T + (part.x, part.y), closed, hole) for pts, closed, hole in unit_paths(part.kind, part.params)]


def _colour(hue: float, rng: np.random.Generator) -> tuple[float, float, float]:
    sat, val = rng.uniform(0.5, 0.95), rng.uniform(0.55, 0.95)
    return colorsys.hsv_to_rgb((hue + rng.normal(0, 0.025)) % 1.0, sat, val)


def _jittered(part: Part, rng: np.random.Generator) -> Part:
    """Proportions jitter: sizes, offsets and angle of one part vary a little per instance."""
    k = np.exp(rng.normal(0, 0.07))
    kw, kh = (k, k) if part.kind in ISOTROPIC else (k * np.exp(rng.normal(0, 0.05)), k * np.exp(rng.normal(0, 0.05)))
    dx, dy = rng.normal(0, 0.025, 2)
    return Part(part.kind, part.x + dx, part.y + dy, part.w * kw, part.h * kh, part.angle + rng.normal(0, 4),
                part.params, part.fill, part.hue, part.hue2, part.tex, part.thick)


def make_instance(parts: Sequence[Part], rng: np.random.Generator) -> list[PartShape]:
    """Pose (flip, small rotation, scale, translation), jitter and colour a class's parts.

    Consumes ``rng`` in a fixed order, so the same generator state gives the same instance.
    """
    flip = -1.0 if rng.random() < 0.5 else 1.0
    rot = float(np.clip(rng.normal(0, 7), -15, 15))
    scale = rng.uniform(0.8, 1.0)
    shift = 0.5 + rng.uniform(-0.06, 0.06, 2)
    hue_shift = rng.uniform(0, 1) if rng.random() < 0.15 else 0.0  # an odd colour variant now and then
    pose = OBJECT_HALF * scale * rotation(rot) @ np.diag([flip, 1.0])
    shapes = []
    for part in parts:
        p = _jittered(part, rng)
        paths = [(pts @ pose.T + shift, closed, hole) for pts, closed, hole in part_paths(p)]
        axes = pose @ rotation(p.angle) @ np.diag([p.w, p.h])
        shapes.append(PartShape(
            kind=p.kind, is_stroke=p.is_stroke, paths=paths, centre=pose @ (p.x, p.y) + shift, axes=axes,
            fill=p.fill, rgb=_colour(p.hue + hue_shift, rng), rgb2=_colour(p.hue2 + hue_shift, rng),
            tex=p.tex, thick=p.thick * OBJECT_HALF * scale))
    return shapes


def supersample(size: int) -> int:
    """Drawing scale factor for anti-aliasing: draw at size * factor, downsample with LANCZOS."""
    return int(max(2, min(4, round(256 / size))))
