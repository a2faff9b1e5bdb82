"""Image infilling: ` what is the image in the middle part?` -> the `<code>` grid of the hidden middle.

As in OFA's `process_pure_image`: the central half of the normalized input image (rows and columns
S/4 .. 3S/4 of the S x S input) is set to 0, and the target is the image-VQ codes of that middle
part (OFA precomputes them for a 128 px middle of a 256 px image). Here the middle of the ORIGINAL
image (its central half in each axis) is resized to S/2 x S/2, i.e. the size the masked region has
in the model's input, and encoded with the image VQ tokenizer, `biomedgpt.tokenization.image_vq.ImageTokenizer`
(its committed weights: `tokenizers/image-vq-v1`):

    ImageTokenizer.load_default() -> tokenizer;  encode(images: uint8 (B, H, W, 3)) -> int (B, h*w)

The module imports torch, so it is imported on first use; when its weights cannot be found, the task raises
`TaskUnavailableError` (the pipeline counts such samples as "unavailable" and skips them).
Codes are decoded with the "codes" constraint. `biomedgpt eval` reports no metric for this task yet
(`metrics` is empty).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from biomedgpt.data.schema import Sample
from biomedgpt.tasks.base import (
    TargetTooLongError,
    Task,
    TaskUnavailableError,
    layout_of,
    require_module,
    strip_output,
)

VQ_MODULE = "biomedgpt.tokenization.image_vq"


_LOADED: list[Any] = []


def image_tokenizer() -> Any:
    """The default image VQ tokenizer, loaded once per process; `TaskUnavailableError` when its weights
    cannot be found (not cached, so weights that appear later are picked up)."""
    if not _LOADED:
        module = require_module(
            VQ_MODULE, task="image_infilling", what="ImageTokenizer for the <code> targets"
        )
        try:
            _LOADED.append(module.ImageTokenizer.load_default())
        except FileNotFoundError as err:
            raise TaskUnavailableError(f"task image_infilling needs the image VQ weights: {err}") from err
    return _LOADED[0]


def middle_bounds(size: int) -> tuple[int, int]:
    """[start, stop) of the central half of a side of `size` pixels (OFA: 64..192 of 256)."""
    return size // 4, size // 4 + size // 2


def middle_crop(image: np.ndarray, *, out_size: int) -> np.ndarray:
    """The central half of `image` in each axis as (out_size, out_size, 3) uint8 RGB."""
    from PIL import Image

    from biomedgpt.model.image_processing import to_rgb_uint8

    height, width = image.shape[:2]
    y0, y1 = middle_bounds(height)
    x0, x1 = middle_bounds(width)
    rgb = to_rgb_uint8(image[y0:y1, x0:x1])
    return np.array(rgb.resize((out_size, out_size), Image.Resampling.BICUBIC))  # writable, for torch


class ImageInfillingTask(Task):
    name = "image_infilling"
    prompt = " what is the image in the middle part?"
    train_templates = (
        prompt,
        " fill in the missing middle of the image.",
        " what belongs in the masked center?",
        " reconstruct the hidden central region.",
        " complete the middle of this image.",
        " what was removed from the center of the image?",
    )
    eval_templates = (
        " restore the blanked-out center of the picture.",
        " predict the content of the masked middle region.",
        " generate the missing central patch.",
    )
    constraint = "codes"

    def check_available(self) -> None:
        image_tokenizer()

    def build_target(
        self, sample: Sample, tokenizer: Any, *, image_size: int | None = None, max_tokens: int | None = None
    ) -> list[int]:
        if image_size is None:
            raise ValueError("image infilling targets depend on the model's input size: pass image_size")
        if sample.image is None:
            raise ValueError(f"image infilling sample {sample.key!r} has no image")
        crop = middle_crop(sample.image, out_size=image_size // 2)
        codes = np.asarray(image_tokenizer().encode(crop[None]))[0]  # (h*w,)
        layout = layout_of(tokenizer)
        ids = [*(layout.code_id(int(c)) for c in codes), layout.eos_id]
        if max_tokens is not None and len(ids) > max_tokens:
            raise TargetTooLongError(
                f"the middle part takes {len(ids)} tokens ({len(codes)} codes + eos); max_tokens is {max_tokens}"
            )
        return ids

    def transform_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Blank the central half of the (C, S, S) normalized input (0 = mid-gray), as OFA does."""
        y0, y1 = middle_bounds(pixels.shape[1])
        x0, x1 = middle_bounds(pixels.shape[2])
        pixels[:, y0:y1, x0:x1] = 0.0
        return pixels

    def postprocess(
        self, ids: Any, tokenizer: Any, *, image_size: int, orig_size: tuple[int, int] | None = None
    ) -> dict[str, Any]:
        """{"codes": code indices, as an (h, w) grid when their count is a square}."""
        layout = layout_of(tokenizer)
        codes = np.array([layout.code_index(t) for t in strip_output(ids, layout) if layout.is_code(t)])
        side = math.isqrt(codes.size)
        return {"codes": codes.reshape(side, side) if side * side == codes.size and side else codes}


TASK = ImageInfillingTask()
