"""Image transforms, named after the code base whose preprocessing they follow (benchmarks.md §5).

  sake      sketch and photo resized to a square; ImageNet mean/std (SAKE, DSN, ClusterRetri)
  zse_sbir  sketch: white border cropped, padded to a white square, resized; photo resized;
            mean = std = 0.5 (ZSE-SBIR)
  sem_pcyc  sketch inverted (white strokes on black), both resized, no normalisation (Sem-PCYC)
  clip      both padded to a square and resized; CLIP's own mean/std (what Sketch-LVM should use)
Training augmentation (``train=True``) follows SAKE: flip, scale 0.7-1.3, rotation up to 30
degrees, translation up to 10/224 of the side; sketches are filled with white, photos with black.
A backbone that brings its own preprocessing (open_clip) passes that callable to the Dataset instead.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from PIL import Image, ImageOps
from torchvision import transforms as T

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
CONVENTIONS = ("sake", "zse_sbir", "sem_pcyc", "clip")
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


def build_transform(domain: str, image_size: int, convention: str = "sake", train: bool = False) -> Callable:
    """PIL RGB image -> normalised float tensor (3, image_size, image_size)."""
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
    steps.append(T.Resize((image_size, image_size), antialias=True))
    if train:
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

