"""Structured outputs drawn on the input image: a mask as a coloured, semi-transparent overlay; boxes as outlines.

Everything stays at the input's size (the engines return masks and boxes in input pixels), so what the user
sees lines up with what they uploaded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

MASK_COLOUR = (255, 48, 48)
BOX_COLOURS = ((255, 200, 0), (0, 220, 255), (120, 255, 80), (255, 80, 220), (255, 140, 0))


def overlay_mask(
    image: Image.Image, mask: np.ndarray, *, colour: tuple[int, int, int] = MASK_COLOUR, alpha: float = 0.45
) -> Image.Image:
    """`image` with the pixels where `mask` is true tinted by `colour` at opacity `alpha`, plus a solid edge."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match the image's {rgb.shape[:2]}")
    tint = np.asarray(colour, dtype=np.float32)
    out = rgb.copy()
    out[mask] = (1.0 - alpha) * rgb[mask] + alpha * tint
    out[_edge(mask)] = tint  # the outline keeps a faint mask visible on a busy image
    return Image.fromarray(out.round().astype(np.uint8))


def _edge(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4-neighbour outside the mask (image borders count as outside)."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def mask_area(mask: np.ndarray) -> str:
    """The mask's area in pixels and as a share of the image, for the text next to the overlay."""
    mask = np.asarray(mask, dtype=bool)
    pixels = int(mask.sum())
    share = 100.0 * pixels / max(mask.size, 1)
    return f"{pixels} px ({share:.1f}% of the image)"


def draw_boxes(image: Image.Image, boxes: Sequence[tuple[Sequence[float], str]]) -> Image.Image:
    """`image` with each (x0, y0, x1, y1) box outlined and its label (if any) written above it."""
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    width = max(1, round(max(out.size) / 200))  # visible on a 64 px thumbnail and on a 2000 px radiograph
    for i, (box, label) in enumerate(boxes):
        colour = BOX_COLOURS[i % len(BOX_COLOURS)]
        x0, y0, x1, y1 = (float(v) for v in box)
        x0, x1 = sorted((x0, x1))
        y0, y1 = sorted((y0, y1))
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=width)
        if label:
            draw.text((x0 + width, max(0.0, y0 - 11)), label, fill=colour)
    return out
