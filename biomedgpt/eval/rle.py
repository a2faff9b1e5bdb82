"""Run-length encoding of binary masks (COCO's uncompressed RLE: column-major counts, starting with zeros).

Used in predictions files and API responses; pure numpy.
"""

from __future__ import annotations

import numpy as np


def mask_to_rle(mask: np.ndarray) -> dict:
    """(H, W) bool -> {"size": [H, W], "counts": [zeros, ones, zeros, ...]} in column-major order."""
    flat = np.asarray(mask, dtype=bool).flatten(order="F")
    changes = np.flatnonzero(np.diff(np.concatenate([[False], flat, [False]]).astype(np.int8)))
    runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    if flat.size and flat[-1]:
        runs = runs[:-1]  # the sentinel closes the last run of ones; no trailing zero run
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(r) for r in runs]}


def rle_to_mask(rle: dict) -> np.ndarray:
    """Inverse of `mask_to_rle`."""
    height, width = rle["size"]
    flat = np.zeros(height * width, dtype=bool)
    position, value = 0, False
    for count in rle["counts"]:
        if value:
            flat[position : position + count] = True
        position += count
        value = not value
    if position > flat.size:
        raise ValueError(f"RLE counts sum to {position}, more than {height}x{width}")
    return flat.reshape((height, width), order="F")
