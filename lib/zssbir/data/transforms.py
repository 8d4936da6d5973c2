"""Image transforms, named after the code base whose preprocessing they follow (benchmarks.md §5).

  sake      sketch and photo resized to a square; ImageNet mean/std (SAKE, DSN, ClusterRetri)
  zse_sbir  sketch: white border cropped, padded to a white square, resized; photo resized;
            mean = std = 0.5 (ZSE-SBIR)
  sem_pcyc  sketch inverted (white strokes on black), both resized, no normalisation (Sem-PCYC)
  clip      both padded to a square and resized; CLIP's own mean/std (what Sketch-LVM should use)
Training augmentation (``train=True``), ``augmentation``:
  authors   as SAKE's and ClusterRetri's released dataloaders (``random_transform``; see docs/fidelity.md):
            on the raw image, before resizing, with probability 0.7 an affine whose parts each apply with
            probability 0.5: horizontal flip, separate x and y scale in [0.7, 1.3], rotation up to 30
            degrees, translation up to 10 px in x and y; black fill for both domains. (Their skimage warp
            turns about the image corner; here it turns about the centre.)
  study     this study's earlier choice: after resizing, always a flip with probability 0.5 and a
            torchvision RandomAffine (rotation 30 degrees, translation 10/224 of the side, one scale in
            [0.7, 1.3]); sketches filled with white, photos with black.
A backbone that brings its own preprocessing (open_clip) passes that callable to the Dataset instead.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision import transforms as T

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
CONVENTIONS = ("sake", "zse_sbir", "sem_pcyc", "clip")
AUGMENTATIONS = ("authors", "study")
DOMAINS = ("sketch", "photo")


def crop_white_border(img: Image.Image, threshold: int = 250) -> Image.Image:
    """Crop to the bounding box of pixels darker than ``threshold``; blank images are kept whole."""
    grey = np.asarray(img.convert("L"))
    ys, xs = np.nonzero(grey < threshold)
    if len(xs) == 0:
        return img
    return img.crop((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))


def pad_to_square(img: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    w, h = img.size
    side = max(w, h)
    if w == h:
        return img
    canvas = Image.new(img.mode, (side, side), fill if img.mode == "RGB" else fill[0])
    canvas.paste(img, ((side - w) // 2, (side - h) // 2))
    return canvas


class AuthorsAugmentation:
    """SAKE's ``random_transform`` (see the module docstring): PIL image -> PIL image, drawing from torch's
    RNG (seeded per DataLoader worker)."""

    def __init__(self, p_any: float = 0.7, p_each: float = 0.5, scale: tuple[float, float] = (0.7, 1.3),
                 degrees: float = 30.0, translate_px: float = 10.0, fill: tuple[int, int, int] = (0, 0, 0)):
        self.p_any, self.p_each, self.scale, self.degrees = p_any, p_each, scale, degrees
        self.translate_px, self.fill = translate_px, fill

    def __repr__(self) -> str:
        return (f"AuthorsAugmentation(p_any={self.p_any}, p_each={self.p_each}, scale={self.scale}, "
                f"degrees={self.degrees}, translate_px={self.translate_px}, fill={self.fill})")

    def _u(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand(()))

    def _fires(self) -> bool:
        return float(torch.rand(())) < self.p_each

    def __call__(self, img: Image.Image) -> Image.Image:
        if float(torch.rand(())) >= self.p_any:
            return img
        if self._fires():
            img = ImageOps.mirror(img)
        sx, sy = (self._u(*self.scale), self._u(*self.scale)) if self._fires() else (1.0, 1.0)
        angle = np.deg2rad(self._u(-self.degrees, self.degrees)) if self._fires() else 0.0
        tx, ty = ((self._u(-self.translate_px, self.translate_px), self._u(-self.translate_px, self.translate_px))
                  if self._fires() else (0.0, 0.0))
        if (sx, sy, angle, tx, ty) == (1.0, 1.0, 0.0, 0.0, 0.0):
            return img
        # forward map about the centre c: x' = R S (x - c) + c + t; PIL wants the inverse (output -> input)
        w, h = img.size
        c = np.array([w / 2, h / 2])
        forward = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) @ np.diag([sx, sy])
        inverse = np.linalg.inv(forward)
        offset = c - inverse @ (c + np.array([tx, ty]))
        coeffs = (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])
        return img.transform(img.size, Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR,
                             fillcolor=self.fill if img.mode == "RGB" else self.fill[0])


def build_transform(domain: str, image_size: int, convention: str = "sake", train: bool = False,
                    augmentation: str = "study") -> Callable:
    """PIL RGB image -> normalised float tensor (3, image_size, image_size); ``train`` adds ``augmentation``."""
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augmentation!r}; expected one of {AUGMENTATIONS}")
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; expected one of {DOMAINS}")
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown transform convention {convention!r}; expected one of {CONVENTIONS}")
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8, got {image_size!r}")
    white = (255, 255, 255)
    fill = white if domain == "sketch" else (0, 0, 0)
    steps: list[Callable] = []
    if convention == "zse_sbir" and domain == "sketch":
        steps += [crop_white_border, lambda im: pad_to_square(im, white)]
    if convention == "clip":
        steps.append(lambda im: pad_to_square(im, fill))
    if convention == "sem_pcyc" and domain == "sketch":
        steps.append(ImageOps.invert)
        fill = (0, 0, 0)
    if train and augmentation == "authors":
        steps.append(AuthorsAugmentation())
    steps.append(T.Resize((image_size, image_size), antialias=True))
    if train and augmentation == "study":
        steps += [T.RandomHorizontalFlip(),
                  T.RandomAffine(degrees=30, translate=(10 / 224, 10 / 224), scale=(0.7, 1.3), fill=fill)]
    steps.append(T.ToTensor())
    if convention == "sake":
        steps.append(T.Normalize(IMAGENET_MEAN, IMAGENET_STD))
    elif convention == "zse_sbir":
        steps.append(T.Normalize((0.5,) * 3, (0.5,) * 3))
    elif convention == "clip":
        steps.append(T.Normalize(CLIP_MEAN, CLIP_STD))
    return T.Compose(steps)

