"""Image helpers of the converters: load png/jpg with skip-on-failure, downscale, gray detection.

``ImageReader`` wraps ``imageio.load_image`` (Pillow, with its pixel-count guard against
decompression bombs): a missing or corrupt file is logged in the ``SkipLog`` and gives None, so one
bad image never stops a conversion. ``fit_image`` / ``fit_mask`` implement ``--max-side``.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

from biomedgpt.ingest.converters.common import SkipLog


def fit_image(pixels: np.ndarray, max_side: int | None) -> np.ndarray:
    """Downscale so the longer side is at most `max_side` (Lanczos; uint16 through float)."""
    height, width = pixels.shape[:2]
    if max_side is None or max(height, width) <= max_side:
        return pixels
    from PIL import Image

    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if pixels.dtype == np.uint8:
        return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS))
    resized = Image.fromarray(pixels.astype(np.float32)).resize(size, Image.Resampling.LANCZOS)
    info = np.iinfo(pixels.dtype) if pixels.dtype.kind in "ui" else None
    values = np.asarray(resized)
    return np.clip(np.rint(values), info.min, info.max).astype(pixels.dtype) if info else values


def fit_mask(mask: np.ndarray, image_shape: tuple[int, ...]) -> np.ndarray:
    """Nearest-neighbour resize of a mask to the (H, W) of an image `fit_image` resized."""
    if mask.shape == tuple(image_shape[:2]):
        return mask
    from biomedgpt.ingest.volumes import resample_mask

    return resample_mask(mask, (int(image_shape[0]), int(image_shape[1])))


def gray_if_equal(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 3) whose three channels are equal (gray saved as RGB, common for X-ray JPEGs) -> (H, W)."""
    if (
        pixels.ndim == 3
        and np.array_equal(pixels[..., 0], pixels[..., 1])
        and np.array_equal(pixels[..., 0], pixels[..., 2])
    ):
        return np.ascontiguousarray(pixels[..., 0])
    return pixels


class ImageReader:
    """Load png/jpg files for samples; a failure is logged as a skip and gives None, never raises.

    Keeps the last few decoded images, since VQA datasets ask many questions about one image.
    """

    def __init__(self, skips: SkipLog, *, root: Path, max_side: int | None, cache_size: int = 16) -> None:
        self.skips, self.root, self.max_side = skips, root, max_side
        self._cache: OrderedDict[Path, np.ndarray | tuple[str, str]] = OrderedDict()
        self._cache_size = cache_size

    def read(self, path: Path, *, item: str | None = None) -> np.ndarray | None:
        """The image at `path`, or None after logging why (missing or unreadable)."""
        if path not in self._cache:
            self._cache[path] = self._load(path)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        result = self._cache[path]
        if isinstance(result, tuple):
            self.skips.add(item or self.relative(path), *result)
            return None
        return result

    def relative(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def _load(self, path: Path) -> np.ndarray | tuple[str, str]:
        from biomedgpt.ingest.imageio import load_image

        if not path.is_file():
            return "missing image", self.relative(path)
        try:
            pixels = load_image(path).pixels
        except Exception as err:  # Pillow raises many types for corrupt files; all mean "unreadable"
            return "unreadable image", f"{self.relative(path)}: {type(err).__name__}: {err}"
        return fit_image(gray_if_equal(pixels), self.max_side)
