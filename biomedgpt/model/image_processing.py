"""Image preprocessing for BiomedGPT with PIL and numpy only (no torch: the ONNX serving path uses it too).

As in OFA/BiomedGPT: convert to RGB, resize to a square `image_size` with bicubic interpolation, scale to
[0, 1], normalize with mean = std = 0.5 (so pixels land in [-1, 1]), channels first. The ResNet stem then
turns an image of side S into (S / 16)^2 patch tokens (256 px -> 256 tokens, 384 px -> 576).
Torchvision is not used: it does not import beside torch 2.13 on the project machines.

`preprocess_one` computes exactly those values with less work (the serving path runs it per request):
- a gray image (mode L, a 2-D array, or an RGB image whose three channels are equal, as the API's decoder makes
  of gray uploads) is resized as one channel, a third of the work: Pillow's 8-bit bicubic filter treats each
  channel alike, so the result equals each channel of the RGB resize;
- the uint8 -> float step is one lookup per pixel in a 256-entry table computed with the same float32
  operations (x / 255, - mean, / std), written straight into a preallocated (3, S, S) float32 array (or the
  caller's `out`): the values are bit-identical to the formula's, with no intermediate float arrays.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

CONFIG_NAME = "preprocessor_config.json"


@dataclass(kw_only=True)
class ImageProcessorConfig:
    image_size: int = 256
    """Side of the square the image is resized to; a multiple of 16 (the stem's stride)."""
    mean: float = 0.5
    """Subtracted from [0, 1] pixels (every channel)."""
    std: float = 0.5
    """Divides the centred pixels (every channel)."""
    max_pixels: int = 64_000_000
    """Larger inputs are refused (decompression-bomb guard)."""

    def __post_init__(self) -> None:
        if self.image_size <= 0 or self.image_size % 16:
            raise ValueError(f"image_size must be a positive multiple of 16, got {self.image_size}")
        if self.std <= 0:
            raise ValueError(f"std must be positive, got {self.std}")


def to_rgb_uint8(image: Image.Image | np.ndarray) -> Image.Image:
    """Any supported image to an 8-bit RGB PIL image.

    Arrays: uint8 as is; uint16 scaled by 65535 / 255; floats are taken as [0, 1] and clipped; (H, W) is
    grayscale, (H, W, 1|3|4) channels-last.
    """
    if isinstance(image, Image.Image):
        if image.mode in _INTEGER_GRAY_MODES:
            return to_rgb_uint8(_integer_gray(image))
        return image.convert("RGB")
    return Image.fromarray(_uint8_array(image)).convert("RGB")


_INTEGER_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I")


def _integer_gray(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.uint16 if image.mode != "I" else np.int64)


def _uint8_array(image: np.ndarray) -> np.ndarray:
    """An image array -> uint8 (H, W) or (H, W, 3|4), as `to_rgb_uint8` converts arrays."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(f"expected an (H, W) or (H, W, 3|4) image array, got shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return (array.astype(np.float32) / 257.0).round().astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        return np.clip(array, 0, 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError("image array has NaN or infinite values")
        return (np.clip(array, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    raise ValueError(f"unsupported image dtype {array.dtype}")


def _gray_uint8(image: Image.Image | np.ndarray) -> Image.Image | None:
    """The 8-bit gray (mode L) image whose value `to_rgb_uint8(image)` has in every channel, or None when
    `image` is not gray (then its RGB conversion is resized)."""
    if isinstance(image, Image.Image):
        if image.mode == "L":
            return image
        if image.mode in _INTEGER_GRAY_MODES:
            return Image.fromarray(_uint8_array(_integer_gray(image)))
        if image.mode != "RGB":
            return None
        array = np.asarray(image)
    else:
        array = _uint8_array(image)
        if array.ndim == 2:
            return Image.fromarray(array)
    if array.shape[-1] == 3 and _is_gray(array):
        return Image.fromarray(np.ascontiguousarray(array[..., 0]))
    return None


def _is_gray(rgb: np.ndarray) -> bool:
    """Whether the three channels of an (H, W, 3) uint8 array are equal (a sparse look first: colour images
    differ almost at once)."""
    sample = rgb[::17, ::17]
    if not (
        np.array_equal(sample[..., 0], sample[..., 1]) and np.array_equal(sample[..., 0], sample[..., 2])
    ):
        return False
    return np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])


class BiomedGPTImageProcessor:
    """Images -> (B, 3, S, S) float32 arrays normalized to [-1, 1]."""

    def __init__(self, config: ImageProcessorConfig | None = None, **kwargs: object) -> None:
        self.config = config or ImageProcessorConfig(**kwargs)
        # uint8 value -> normalized float32, by the formula's own float32 operations: bit-identical results.
        self._table = (
            np.arange(256, dtype=np.float32) / np.float32(255.0) - np.float32(self.config.mean)
        ) / (np.float32(self.config.std))

    @property
    def image_size(self) -> int:
        return self.config.image_size

    def preprocess_one(self, image: Image.Image | np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
        """One image -> (3, S, S) float32 in [-1, 1] (into `out` when given: a C-contiguous float32 array of
        that shape, e.g. a row of a batch)."""
        if isinstance(image, Image.Image):
            width, height = image.size
        else:
            height, width = np.asarray(image).shape[:2]
        if width * height > self.config.max_pixels:
            raise ValueError(
                f"image of {width}x{height} pixels exceeds the limit of {self.config.max_pixels}"
            )
        size = self.config.image_size
        if out is None:
            out = np.empty((3, size, size), dtype=np.float32)
        elif out.shape != (3, size, size) or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous float32 array of shape (3, {size}, {size})")
        gray = _gray_uint8(image)
        if gray is not None:
            resized = np.asarray(gray.resize((size, size), Image.Resampling.BICUBIC))
            np.take(self._table, resized, out=out[0])
            out[1] = out[0]
            out[2] = out[0]
            return out
        rgb = to_rgb_uint8(image)
        resized = np.asarray(rgb.resize((size, size), Image.Resampling.BICUBIC))  # (S, S, 3) uint8
        np.take(self._table, np.ascontiguousarray(resized.transpose(2, 0, 1)), out=out)
        return out

    def __call__(self, images: list[Image.Image | np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
        """A list of images (None = no image for that sample) -> pixels (B, 3, S, S) and has-image mask (B,)."""
        size = self.config.image_size
        pixels = np.zeros((len(images), 3, size, size), dtype=np.float32)
        present = np.zeros(len(images), dtype=bool)
        for i, image in enumerate(images):
            if image is not None:
                pixels[i] = self.preprocess_one(image)
                present[i] = True
        return pixels, present

    def save_pretrained(self, directory: str | Path) -> Path:
        path = Path(directory) / CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"processor_class": "BiomedGPTImageProcessor", **asdict(self.config)}
        path.write_text(json.dumps(payload, indent=2) + "\n")
        return path

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> BiomedGPTImageProcessor:
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"no {CONFIG_NAME} in {directory}")
        payload = json.loads(path.read_text())
        payload.pop("processor_class", None)
        return cls(ImageProcessorConfig(**payload))
