"""Image preprocessing for BiomedGPT with PIL and numpy only (no torch: the ONNX serving path uses it too).

As in OFA/BiomedGPT: convert to RGB, resize to a square `image_size` with bicubic interpolation, scale to
[0, 1], normalize with mean = std = 0.5 (so pixels land in [-1, 1]), channels first. The ResNet stem then
turns an image of side S into (S / 16)^2 patch tokens (256 px -> 256 tokens, 384 px -> 576).
Torchvision is not used: it does not import beside torch 2.13 on the project machines.
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
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            return to_rgb_uint8(np.asarray(image).astype(np.uint16 if image.mode != "I" else np.int64))
        return image.convert("RGB")
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(f"expected an (H, W) or (H, W, 3|4) image array, got shape {array.shape}")
    if array.dtype == np.uint8:
        pass
    elif array.dtype == np.uint16:
        array = (array.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif np.issubdtype(array.dtype, np.integer):
        array = np.clip(array, 0, 255).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError("image array has NaN or infinite values")
        array = (np.clip(array, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    else:
        raise ValueError(f"unsupported image dtype {array.dtype}")
    pil = Image.fromarray(array)
    return pil.convert("RGB")


class BiomedGPTImageProcessor:
    """Images -> (B, 3, S, S) float32 arrays normalized to [-1, 1]."""

    def __init__(self, config: ImageProcessorConfig | None = None, **kwargs: object) -> None:
        self.config = config or ImageProcessorConfig(**kwargs)

    @property
    def image_size(self) -> int:
        return self.config.image_size

    def preprocess_one(self, image: Image.Image | np.ndarray) -> np.ndarray:
        if isinstance(image, Image.Image):
            width, height = image.size
        else:
            height, width = np.asarray(image).shape[:2]
        if width * height > self.config.max_pixels:
            raise ValueError(
                f"image of {width}x{height} pixels exceeds the limit of {self.config.max_pixels}"
            )
        rgb = to_rgb_uint8(image)
        size = self.config.image_size
        resized = rgb.resize((size, size), Image.Resampling.BICUBIC)
        array = np.asarray(resized, dtype=np.float32) / 255.0  # (S, S, 3) in [0, 1]
        array = (array - self.config.mean) / self.config.std
        return array.transpose(2, 0, 1)  # (3, S, S)

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
