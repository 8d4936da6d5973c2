"""Class programs of the synthetic benchmark: parts of a shared vocabulary in a fixed arrangement.

A class program is an arrangement (stacked, side by side, radial, nested, grid, on a stick) of
shapes from ``drawing.SHAPES``, optionally with stroke attachments (antennae, legs, arms, tail) from
``drawing.STROKES``, each part with a class-level fill texture and hue. Every class is a distinct
composition (``signature``), so unseen classes are new combinations of parts seen in training.
Under the appearance rule ``"instance"`` (``APPEARANCES``) the generators re-dress every instance's parts
(``dress_instance``): hues and fills then say nothing about the class, only the shapes do.
Names are arbitrary English words (labels, not depictions), shuffled by the seed.

Programs are built one by one from ``np.random.default_rng([seed, _CLASS_TAG, index, attempt])``,
so the first k classes do not depend on how many are requested.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .drawing import ISOTROPIC, SHAPES, STROKES, Part, part_paths

NAMES = (
    "lantern", "robot", "kite", "snowman", "cactus", "lollipop", "rocket", "flower", "castle", "owl",
    "jellyfish", "beetle", "windmill", "tower", "cupcake", "crown", "umbrella", "balloon", "mushroom", "tree",
    "house", "clock", "bell", "drum", "teapot", "vase", "candle", "shield", "anchor", "key",
    "fish", "bird", "turtle", "crab", "spider", "snail", "octopus", "butterfly", "ladybug", "boat",
    "tractor", "bus", "planet", "comet", "lighthouse", "pagoda", "tent", "igloo", "cake", "pizza",
    "donut", "pretzel", "chandelier", "lamp", "fan", "radio", "camera", "totem", "scarecrow", "trophy",
    "medal", "cannon", "bucket", "basket", "sled", "hat", "boot", "glove", "acorn", "pinecone",
    "cherry", "apple", "pear", "lemon", "carrot", "pumpkin", "starfish", "cloud", "kettle", "trumpet",
)
MAX_CLASSES = len(NAMES)
ARRANGEMENTS = ("stacked", "side_by_side", "radial", "nested", "grid", "on_a_stick")
ATTACHMENTS = ("antennae", "legs", "arms", "tail")
_CLASS_TAG, _NAME_TAG, _UNSEEN_TAG = 101, 102, 103
# where a photo's hues, fills and stroke thickness come from: the class program (its parts' colours, with an odd
# colour variant now and then) or each instance (drawn anew per photo, independent of the class)
APPEARANCES = ("class", "instance")
_ADJECTIVE = {"solid": "plain", "gradient": "shaded", "stripes": "striped", "dots": "dotted", "checker": "checked"}


@dataclass(frozen=True)
class ClassProgram:
    """A class: its name, arrangement, parts (object frame, z-order) and a readable summary."""

    index: int  # position in the vocabulary (seeds every instance of the class)
    name: str
    arrangement: str
    parts: tuple[Part, ...]
    summary: str
    signature: tuple  # the main structure (arrangement and its parts); unique within a vocabulary
    extras: tuple = ()  # attachments (kind, stroke, count), if any

    def describe(self) -> str:
        return f"{self.name}: {self.summary}"

    @property
    def shape_summary(self) -> str:
        """The summary without its fills clause: what every instance shares under ``appearance="instance"``."""
        return self.summary.split("; fills: ")[0]

    def caption(self, appearance: str = "class") -> str:
        """What the class's instances share under ``appearance`` (the text tower's caption of the class)."""
        check_appearance(appearance)
        return self.summary if appearance == "class" else self.shape_summary

    @property
    def part_kinds(self) -> frozenset[str]:
        return frozenset(p.kind for p in self.parts)


def _shape_params(kind: str, rng: np.random.Generator) -> tuple[float, ...]:
    if kind == "rectangle":
        return (float(rng.choice([0.0, 0.0, 0.25, 0.45])),)
    if kind == "star":
        return (float(rng.integers(5, 8)), float(rng.uniform(0.4, 0.55)))
    if kind == "ring":
        return (float(rng.uniform(0.45, 0.65)),)
    if kind == "blob":
        return tuple(float(v) for k in range(3) for v in (rng.uniform(0.06, 0.2), rng.uniform(0, 2 * np.pi)))
    return ()


def _aspect(kind: str, rng: np.random.Generator, lo: float = 0.7, hi: float = 1.35) -> float:
    """h / w of a shape: 1 for isotropic kinds, clearly not 1 for ellipses, else in [lo, hi]."""
    if kind in ISOTROPIC:
        return 1.0
    if kind == "ellipse":
        return float(rng.choice([rng.uniform(0.5, 0.7), rng.uniform(1.4, 1.8)]))
    return float(rng.uniform(lo, hi))


def _shape(kind: str, x: float, y: float, r: float, rng: np.random.Generator, aspect: float | None = None,
           angle: float = 0.0) -> Part:
    """A shape of half-width r (height r * aspect); fill and colour are assigned later."""
    a = _aspect(kind, rng) if aspect is None else aspect
    return Part(kind, x, y, r, r * a, angle, _shape_params(kind, rng))


def _stroke(kind: str, anchor: tuple[float, float], length: float, angle: float, rng: np.random.Generator,
            amplitude: float | None = None) -> Part:
    """A stroke starting at ``anchor`` and heading along ``angle`` (degrees, y down)."""
    half = length / 2
    d = np.array([np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))])
    params = {"zigzag": (float(rng.integers(3, 6)),), "wave": (float(rng.uniform(1.5, 2.5)),),
              "curl": (float(rng.uniform(1.3, 2.0)),)}.get(kind, ())
    amp = {"line": 0.0, "arc": 0.35, "curl": 0.5}.get(kind, 0.12) if amplitude is None else amplitude
    x, y = np.asarray(anchor) + d * half
    return Part(kind, float(x), float(y), half, length * amp if kind != "curl" else half, angle, params)


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _pick(rng: np.random.Generator, options, n: int = 1, distinct: bool = True) -> list:
    return [str(v) for v in rng.choice(options, size=n, replace=not distinct)]


def _stacked(rng):
    kinds = _pick(rng, SHAPES, int(rng.integers(2, 4)))
    sizes = sorted(rng.uniform(0.45, 1.0, len(kinds)), reverse=bool(rng.random() < 0.75))
    parts, y = [], 1.0
    for kind, r in zip(kinds, sizes):
        p = _shape(kind, 0.0, 0.0, 0.55 * r, rng)
        y -= p.h * 0.9
        parts.append(Part(p.kind, 0.0, y, p.w, p.h, 0.0, p.params))
        y -= p.h * 0.9
    return parts, " on top of ".join(reversed(kinds)), tuple(kinds)


def _side_by_side(rng):
    kinds = _pick(rng, SHAPES, int(rng.integers(2, 4)))
    base = rng.random() < 0.5  # bottom-aligned, else centred
    parts, x = [], -1.0
    for kind in kinds:
        p = _shape(kind, 0.0, 0.0, 0.5 * rng.uniform(0.6, 1.0), rng)
        x += p.w * 0.95
        parts.append(Part(p.kind, x, 0.6 - p.h if base else 0.0, p.w, p.h, 0.0, p.params))
        x += p.w * 0.95
    bar = rng.random() < 0.35
    if bar:  # a connecting bar behind the shapes
        parts.insert(0, _stroke("line", (parts[0].x, parts[0].y), parts[-1].x - parts[0].x, 0.0, rng))
    # instances may be mirrored, so "a beside b" and "b beside a" are the same structure
    text = " beside ".join(kinds) + (" joined by a bar" if bar else "")
    return parts, text, (min(tuple(kinds), tuple(kinds[::-1])), bar)


def _radial(rng):
    centre = _pick(rng, [k for k in SHAPES if k != "ellipse"])[0]  # petals sit on a round-ish centre
    count = int(rng.choice([4, 5, 6, 8]))
    r0 = rng.uniform(0.3, 0.42)
    parts = [_shape(centre, 0.0, 0.0, r0, rng, aspect=1.0)]
    offset = rng.uniform(0, 360 / count)
    if rng.random() < 0.35:
        petal = _pick(rng, ("line", "zigzag", "wave"))[0]
        for i in range(count):
            a = offset + 360 * i / count
            d = np.array([np.cos(np.deg2rad(a)), np.sin(np.deg2rad(a))])
            parts.insert(0, _stroke(petal, tuple(d * r0 * 0.9), 0.95 - r0, a, rng))
        return parts, f"{count} {petal} rays around {_a(centre)}", (centre, petal, count)
    petal = _pick(rng, ("ellipse", "triangle", "circle", "diamond", "rectangle", "star"))[0]
    pr = rng.uniform(0.16, 0.24)
    proto = _shape(petal, 0, 0, pr, rng, aspect=rng.uniform(0.45, 0.7) if petal not in ISOTROPIC else 1.0)
    for i in range(count):
        a = offset + 360 * i / count
        d = np.array([np.cos(np.deg2rad(a)), np.sin(np.deg2rad(a))]) * (r0 + proto.w * 0.85)
        rot = a + 90 if petal == "triangle" else a
        w, h = (proto.h, proto.w) if petal == "triangle" else (proto.w, proto.h)
        parts.insert(0, Part(petal, float(d[0]), float(d[1]), w, h, rot, proto.params))
    return parts, f"{count} {petal} petals around {_a(centre)}", (centre, petal, count)


def _circumradius(part: Part) -> float:
    return float(max(np.linalg.norm(pts - (part.x, part.y), axis=1).max() for pts, _, _ in part_paths(part)))


_INSCRIBED = {"circle": 1.0, "ellipse": 1.0, "rectangle": 1.0, "hexagon": 0.85, "blob": 0.7, "diamond": 0.65,
              "ring": 0.5, "triangle": 0.45, "star": 0.4}


def _nested(rng):
    kinds = _pick(rng, SHAPES, int(rng.integers(2, 4)))
    outer = _shape(kinds[0], 0.0, 0.0, 0.9, rng, aspect=_aspect(kinds[0], rng, 0.8, 1.0))
    parts, room, cy = [outer], min(outer.w, outer.h) * _INSCRIBED[kinds[0]], outer.h * 0.3 * (kinds[0] == "triangle")
    for kind in kinds[1:]:
        p = _shape(kind, 0.0, cy, 1.0, rng, aspect=_aspect(kind, rng, 0.8, 1.2))
        k = rng.uniform(0.6, 0.8) * room / _circumradius(p)
        p = Part(p.kind, 0.0, cy, p.w * k, p.h * k, 0.0, p.params)
        parts.append(p)
        room = min(p.w, p.h) * _INSCRIBED[kind]
    return parts, " inside ".join(reversed(kinds)), tuple(kinds)


def _grid(rng):
    body_kind = _pick(rng, ("rectangle", "ellipse", "hexagon", "blob", "circle"))[0]
    cell = _pick(rng, ("circle", "rectangle", "diamond", "star", "triangle", "ring"))[0]
    rows, cols = [(2, 2), (2, 3), (3, 2), (3, 3), (1, 3)][int(rng.integers(5))]
    body = _shape(body_kind, 0.0, 0.0, 0.9, rng, aspect=_aspect(body_kind, rng, 0.7, 1.1))
    inner = 0.75 if body_kind == "rectangle" else 0.55
    sx, sy = body.w * inner, body.h * inner
    r = 0.7 * min(sx / cols, sy / rows)
    parts = [body]
    proto = _shape(cell, 0, 0, r, rng, aspect=1.0)
    for i in range(rows):
        for j in range(cols):
            x = -sx + sx * (2 * j + 1) / cols
            y = -sy + sy * (2 * i + 1) / rows
            parts.append(Part(cell, x, y, proto.w, proto.h, 0.0, proto.params))
    return parts, f"{rows}x{cols} grid of {cell}s on {_a(body_kind)}", (body_kind, cell, rows, cols)


def _on_a_stick(rng):
    head_kind = _pick(rng, SHAPES)[0]
    stick_kind = _pick(rng, ("line", "line", "zigzag", "wave"))[0]
    head = _shape(head_kind, 0.0, -0.45, rng.uniform(0.4, 0.52), rng)
    top = head.y + head.h * 0.7
    parts = [_stroke(stick_kind, (0.0, top), 1.0 - top, 90.0, rng, amplitude=0.06), head]
    base = _pick(rng, ("none", "rectangle", "triangle", "ellipse"))[0]
    if base != "none":
        parts.insert(0, Part(base, 0.0, 1.0, 0.35, 0.12, 0.0, _shape_params(base, rng)))
    text = f"{head_kind} on {_a(stick_kind)} stick" + ("" if base == "none" else f" on {_a(base)} base")
    return parts, text, (head_kind, stick_kind, base)


_BUILDERS = {"stacked": _stacked, "side_by_side": _side_by_side, "radial": _radial, "nested": _nested,
             "grid": _grid, "on_a_stick": _on_a_stick}


def _attach(parts: list[Part], rng: np.random.Generator) -> tuple[list[Part], str, tuple]:
    """Maybe add stroke attachments to the outside of the main structure (placed behind it)."""
    if rng.random() < 0.45:
        return parts, "", ()
    kind = _pick(rng, ATTACHMENTS)[0]
    stroke = _pick(rng, STROKES)[0]
    shapes = [p for p in parts if not p.is_stroke]
    top, bottom = min(shapes, key=lambda p: p.y - p.h), max(shapes, key=lambda p: p.y + p.h)
    right = max(shapes, key=lambda p: p.x + p.w)
    length = rng.uniform(0.35, 0.55)
    if kind == "antennae":
        spots = [((s * top.w * 0.4, top.y - top.h * 0.8), -90 + s * 25) for s in (-1, 1)]
    elif kind == "legs":
        n = int(rng.integers(2, 4))
        xs = np.linspace(-0.5, 0.5, n) * bottom.w
        spots = [((bottom.x + x, bottom.y + bottom.h * 0.8), 90 + 15 * x) for x in xs]
    elif kind == "arms":
        centre_y = (top.y - top.h + bottom.y + bottom.h) / 2
        mid = min(shapes, key=lambda p: abs(p.y - centre_y))
        spots = [((mid.x - mid.w * 0.85, mid.y), 160), ((mid.x + mid.w * 0.85, mid.y), 20)]
    else:
        spots = [((right.x + right.w * 0.85, right.y), float(rng.uniform(-20, 20)))]
    extra = [_stroke(stroke, (float(a[0]), float(a[1])), length, ang, rng) for a, ang in spots]
    return extra + parts, f"with {len(extra)} {stroke} {kind if len(extra) > 1 or kind == 'tail' else kind[:-1]}", \
        (kind, stroke, len(extra))


def _normalised(parts: list[Part], extent: float = 0.95) -> list[Part]:
    """Scale and centre the composition so its outline fits [-extent, extent]^2."""
    pts = np.concatenate([q for p in parts for q, _, _ in part_paths(p)])
    lo, hi = pts.min(0), pts.max(0)
    k = 2 * extent / max(hi - lo)
    c = (lo + hi) / 2
    return [Part(p.kind, (p.x - c[0]) * k, (p.y - c[1]) * k, p.w * k, p.h * k, p.angle, p.params, p.fill, p.hue,
                 p.hue2, p.tex, p.thick * k) for p in parts]


def _dress(parts: list[Part], rng: np.random.Generator) -> tuple[list[Part], str]:
    """Class-level hues, fills and stroke thickness; returns the parts and a fills description."""
    h0 = rng.uniform(0, 1)
    palette = [(h0 + d) % 1.0 for d in (0.0, rng.uniform(0.4, 0.6), rng.uniform(0.2, 0.3))]
    thick = rng.uniform(0.05, 0.08)
    out, seen, start = [], {}, int(rng.integers(len(palette)))
    for p in parts:
        key = (p.kind, p.w, p.h, p.params)  # repeated parts (petals, cells, legs) look alike
        if key not in seen:
            fills = ("solid", "gradient") if p.is_stroke else ("solid", "gradient", "stripes", "dots", "checker")
            hue = palette[(start + len(seen)) % len(palette)]  # neighbouring part groups differ in hue
            seen[key] = (str(rng.choice(fills)), hue, float(rng.uniform(0, 1)),
                         (float(rng.uniform(8, 14)), float(rng.uniform(0, 180))))
        fill, hue, hue2, tex = seen[key]
        out.append(Part(p.kind, p.x, p.y, p.w, p.h, p.angle, p.params, fill, hue, hue2, tex,
                        thick if p.is_stroke else 0.0))
    fills = sorted({_ADJECTIVE[f] for f, *_ in seen.values()})
    return out, ", ".join(fills)


def dress_instance(parts, rng: np.random.Generator) -> list[Part]:
    """The parts re-dressed from ``rng``: hues, fills and stroke thickness drawn anew (one instance's appearance
    under ``appearance="instance"``; repeated parts still look alike)."""
    return _dress(list(parts), rng)[0]


def check_appearance(appearance: object) -> str:
    if appearance not in APPEARANCES:
        raise ValueError(f"appearance must be one of {', '.join(APPEARANCES)} (where hues and fills come from: the "
                         f"class or each instance), got {appearance!r}")
    return appearance


def _program(index: int, name: str, seed: int, attempt: int, stream: int = _CLASS_TAG) -> ClassProgram:
    rng = np.random.default_rng([seed, stream, index, attempt])
    arrangement = str(rng.choice(ARRANGEMENTS))
    parts, text, sig = _BUILDERS[arrangement](rng)
    parts, extra, sig_extra = _attach(parts, rng)
    parts, fills = _dress(_normalised(parts), rng)
    summary = f"{arrangement.replace('_', ' ')}: {text}" + (f", {extra}" if extra else "") + f"; fills: {fills}"
    return ClassProgram(index, name, arrangement, tuple(parts), summary, (arrangement, sig), sig_extra)


def compose_program(index: int, name: str, seed: int, attempt: int = 0, *, stream: int = _CLASS_TAG) -> ClassProgram:
    """One class program drawn from the random stream ``[seed, stream, index, attempt]``.

    ``class_vocabulary`` draws the benchmark's classes from stream ``_CLASS_TAG`` (the default); other
    generators (the pretraining corpus, ``synthetic_pretrain``) pass their own stream.
    """
    return _program(index, name, seed, attempt, stream)


def class_names(n_classes: int, seed: int) -> list[str]:
    if not 1 <= n_classes <= MAX_CLASSES:
        raise ValueError(f"n_classes must be between 1 and {MAX_CLASSES} (the number of class names), got {n_classes}")
    order = np.random.default_rng([seed, _NAME_TAG]).permutation(MAX_CLASSES)
    return [NAMES[i] for i in order[:n_classes]]


def class_vocabulary(n_classes: int, seed: int = 0) -> list[ClassProgram]:
    """The first ``n_classes`` class programs for ``seed``: distinct compositions, unique names.

    Two classes never share their main structure (``signature``), attachments aside.
    """
    programs: list[ClassProgram] = []
    taken: set[tuple] = set()
    for index, name in enumerate(class_names(n_classes, seed)):
        attempt = 0
        while (program := _program(index, name, seed, attempt)).signature in taken:
            attempt += 1
        taken.add(program.signature)
        programs.append(program)
    return programs


def choose_unseen(programs: list[ClassProgram], n_unseen: int, seed: int, tries: int = 200) -> list[int]:
    """Indices of the unseen classes, drawn by the seed.

    Among random draws, the first whose part kinds all occur in some seen class is taken (else
    the draw covering most kinds), so unseen classes are new compositions of seen parts.
    """
    rng = np.random.default_rng([seed, _UNSEEN_TAG])
    best, best_missing = None, None
    for _ in range(tries):
        unseen = sorted(int(i) for i in rng.permutation(len(programs))[:n_unseen])
        seen_kinds = frozenset().union(*(p.part_kinds for p in programs if p.index not in unseen))
        missing = len(frozenset().union(*(programs[i].part_kinds for i in unseen)) - seen_kinds)
        if best is None or missing < best_missing:
            best, best_missing = unseen, missing
        if missing == 0:
            break
    return best
