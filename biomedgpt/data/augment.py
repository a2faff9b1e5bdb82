"""Training-time image augmentation: mild random crops and intensity jitter, for small corpora that a model
would otherwise memorise (the demo corpus has 226 training images for VQA and classification).

What is safe to change depends on the task:
- no flips or rotations anywhere: VQA asks about laterality ("which side is the lesion on?");
- crops only where the target does not name positions (captions, reports, VQA, classification): boxes, masks
  and image codes would have to move with the pixels;
- intensity jitter (contrast, brightness, gamma) everywhere: it changes no geometry.
Deterministic per (seed, epoch, sample) through the `random.Random` the formatter passes in.
"""

from __future__ import annotations

import random

import numpy as np

GEOMETRIC_TASKS = frozenset({"grounding", "detection", "segmentation", "image_infilling"})
MIN_CROP = 0.8
"""Smallest crop side, as a fraction of the image side."""
JITTER = 0.15
"""Largest relative change of contrast and brightness; gamma varies in [1 - JITTER, 1 + JITTER]."""


def random_crop(image: np.ndarray, rng: random.Random, *, min_side: float = MIN_CROP) -> np.ndarray:
    """A random window of `min_side..1` times each side (aspect kept within the same range), anywhere inside."""
    height, width = image.shape[:2]
    crop_h = max(1, round(height * rng.uniform(min_side, 1.0)))
    crop_w = max(1, round(width * rng.uniform(min_side, 1.0)))
    top = rng.randint(0, height - crop_h)
    left = rng.randint(0, width - crop_w)
    return image[top : top + crop_h, left : left + crop_w]


def jitter_intensity(image: np.ndarray, rng: random.Random, *, amount: float = JITTER) -> np.ndarray:
    """uint8 -> uint8 with random contrast (about the mean), brightness and gamma."""
    x = image.astype(np.float32) / 255.0
    mean = float(x.mean())
    x = (x - mean) * rng.uniform(1 - amount, 1 + amount) + mean + rng.uniform(-amount, amount) * 0.5
    x = np.clip(x, 0.0, 1.0) ** rng.uniform(1 - amount, 1 + amount)
    return (x * 255.0 + 0.5).astype(np.uint8)


def augment(image: np.ndarray, task: str, rng: random.Random) -> np.ndarray:
    """The training view of a uint8 image for `task` (before the resize to the model's input side)."""
    if task not in GEOMETRIC_TASKS:
        image = random_crop(image, rng)
    return jitter_intensity(image, rng)
