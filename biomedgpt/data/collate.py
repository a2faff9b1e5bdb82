"""Pixels and batches: images to the model's input size and normalization, formatted samples to padded tensors.

Used by the streaming pipeline (`biomedgpt.data.pipeline`) inside DataLoader workers. The pixel path reproduces
`BiomedGPTImageProcessor` bit for bit (tested), with numpy instead of torch for the copies (faster per sample).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info

from biomedgpt.tasks import get_task

PIXEL_MEAN = np.float32(0.5)
PIXEL_STD = np.float32(0.5)
"""OFA's normalization: [0, 1] pixels -> (x - 0.5) / 0.5, i.e. [-1, 1] (BiomedGPTImageProcessor's default)."""


def to_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8, converted as `to_rgb_uint8` does but without expanding gray to RGB."""
    if image.dtype == np.uint8 and (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        return image
    if image.dtype == np.uint16 and image.ndim == 2:
        return (image.astype(np.float32) / 257.0).round().astype(np.uint8)
    from biomedgpt.model.image_processing import to_rgb_uint8

    return np.asarray(to_rgb_uint8(image))


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W[, 3]) -> (size, size[, 3]) with bicubic resampling, as the model's processor does.

    Gray images are resized as one channel and expanded later: a third of the work of resizing RGB,
    and the same values (the channels of gray-as-RGB are identical).
    """
    from PIL import Image

    if image.shape[0] == size and image.shape[1] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC))


def normalize_into(image: np.ndarray, out: np.ndarray) -> np.ndarray:
    """uint8 (S, S[, 3]) -> `out` (C, S, S) float32 in [-1, 1], written in place.

    The same float32 operations in the same order as BiomedGPTImageProcessor (x / 255, - mean, / std),
    so the values are bit-identical; done once, straight into the batch tensor. A gray image fills
    every channel of `out` (C = 1 or 3); an RGB one needs C = 3.
    """
    planes = [image] if image.ndim == 2 else [image[..., c] for c in range(3)]
    if len(planes) > out.shape[0]:
        raise ValueError(f"an RGB image needs 3 output channels, got {out.shape[0]}")
    for c, plane in enumerate(planes):
        np.divide(plane, np.float32(255.0), out=out[c], dtype=np.float32)
        np.subtract(out[c], PIXEL_MEAN, out=out[c])
        np.divide(out[c], PIXEL_STD, out=out[c])
    for c in range(len(planes), out.shape[0]):
        out[c] = out[0]
    return out


def image_to_pixels(image: np.ndarray, size: int) -> np.ndarray:
    """Any schema image -> (3, size, size) float32 in [-1, 1], as the model's processor makes it."""
    out = np.empty((3, size, size), dtype=np.float32)
    return normalize_into(resize_square(to_uint8(image), size), out)


# ---------------------------------------------------------------------------------------------
# Collation


def _new_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Uninitialized; in a DataLoader worker, in shared memory already (saves the copy on send)."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    storage = torch.UntypedStorage._new_shared(nbytes)  # as torch's default_collate does
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


def _pack_pixels(samples: Sequence[dict[str, Any]], image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """patch_images (B, 3, S, S) float32 normalized (zeros without an image) and patch_masks (B,).

    When no image of the batch is RGB (the usual case for medical images), the pixels are stored
    once, (B, 1, S, S), and returned expanded to (B, 3, S, S) with a channel stride of 0: the same
    values, a third of the memory to fill and to send from a worker. Such a view is read-only in
    place: call `.contiguous()` before writing into it.
    """
    gray = all(s["image"] is None or s["image"].ndim == 2 for s in samples)
    stored = _new_tensor((len(samples), 1 if gray else 3, image_size, image_size), torch.float32)
    patch_masks = torch.zeros(len(samples), dtype=torch.bool)
    images = stored.numpy()  # filled with numpy: no torch intra-op threads in a data worker
    for i, sample in enumerate(samples):
        if sample["image"] is None:
            images[i] = 0.0
        else:
            normalize_into(sample["image"], images[i])
            get_task(sample["task"]).transform_pixels(images[i])  # image infilling blanks the middle
            patch_masks[i] = True
    return stored.expand(-1, 3, -1, -1), patch_masks


def collate(samples: Sequence[dict[str, Any]], *, pad_token_id: int, image_size: int) -> dict[str, Any]:
    """Formatted samples -> a batch for `BiomedGPTForConditionalGeneration`.

    input_ids/attention_mask (B, T) right-padded; patch_images (B, 3, S, S) float32 (zeros where a
    sample has no image; see `_pack_pixels` for gray batches) and patch_masks (B,) False there;
    labels (B, L) = target ids, -100 on padding and where a sample's loss_mask is False (the model
    shifts them right for its inputs); code_masks (B,) True where the target is image codes; plus
    keys, tasks and orig_sizes (lists).
    """
    count = len(samples)
    prompt_len = max(len(s["input_ids"]) for s in samples)
    target_len = max(len(s["target_ids"]) for s in samples)
    input_ids = torch.full((count, prompt_len), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((count, prompt_len), dtype=torch.long)
    labels = torch.full((count, target_len), -100, dtype=torch.long)
    for i, sample in enumerate(samples):
        ids, target = sample["input_ids"], sample["target_ids"]
        input_ids[i, : len(ids)] = torch.as_tensor(ids)
        attention_mask[i, : len(ids)] = 1
        row = torch.as_tensor(target)
        if sample.get("loss_mask") is not None:
            row = row.masked_fill(~torch.as_tensor(sample["loss_mask"], dtype=torch.bool), -100)
        labels[i, : len(target)] = row
    patch_images, patch_masks = _pack_pixels(samples, image_size)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "patch_images": patch_images,
        "patch_masks": patch_masks,
        "labels": labels,
        "code_masks": torch.tensor([bool(s["code_mask"]) for s in samples]),
        "keys": [s["key"] for s in samples],
        "tasks": [s["task"] for s in samples],
        "orig_sizes": [s["orig_size"] for s in samples],
    }


class Collator:
    """`collate` with its settings bound (picklable, for wds.batched and DataLoader workers)."""

    def __init__(self, *, pad_token_id: int, image_size: int) -> None:
        self.pad_token_id, self.image_size = pad_token_id, image_size

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return collate(samples, pad_token_id=self.pad_token_id, image_size=self.image_size)


# ---------------------------------------------------------------------------------------------
# The dataset
