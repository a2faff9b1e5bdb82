"""Real image files in every format the API accepts, and in formats it refuses, for the upload tests (not a test
module). Small and generated here (DICOM comes from pydicom's bundled test files), so the tests stay offline."""

from __future__ import annotations

import io
import random
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

ACCEPTED_CONTENT_TYPES = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "WebP": "image/webp",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "TIFF-LZW": "image/tiff",
    "DICOM": "application/dicom",
}


def _rgb(width: int = 53, height: int = 37, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def dicom_path(name: str = "CT_small.dcm") -> Path:
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file(name))


@cache
def accepted_samples() -> dict[str, bytes]:
    """One small valid file per accepted format (two TIFF compressions)."""
    image = _rgb()
    return {
        "PNG": encode(image, "PNG"),
        "JPEG": encode(image, "JPEG", quality=90),
        "WebP": encode(image, "WEBP"),
        "BMP": encode(image, "BMP"),
        "TIFF": encode(image, "TIFF"),
        "TIFF-LZW": encode(image, "TIFF", compression="tiff_lzw"),
        "DICOM": dicom_path().read_bytes(),
    }


@cache
def refused_samples() -> dict[str, bytes]:
    """Files Pillow can read but the API must refuse, as the hostile probe sent them (truncated, corrupt)."""
    image = _rgb()
    qoi = encode(image, "QOI")
    avif = encode(image, "AVIF")
    corrupt_avif = bytearray(avif)
    corrupt_avif[len(avif) // 2 : len(avif) // 2 + 16] = b"\xff" * 16
    tiff = encode(image, "TIFF")
    return {
        "truncated QOI": qoi[: len(qoi) // 2],
        "corrupt AVIF": bytes(corrupt_avif),
        "DDS": encode(image, "DDS"),
        "SPIDER": encode(image.convert("F"), "SPIDER"),
        "truncated TIFF": tiff[: len(tiff) // 3],
        "GIF": encode(image, "GIF"),
        "PDF": encode(image, "PDF"),
        "PGM 16-bit": encode(Image.fromarray(np.full((8, 8), 40000, np.uint16)), "PPM"),
    }


def mutate(data: bytes, rng: random.Random) -> bytes:
    """A truncation, a few flipped bytes, or a random insertion: how real uploads go wrong."""
    out = bytearray(data)
    kind = rng.random()
    if kind < 0.3:
        return bytes(out[: rng.randrange(len(out))])
    if kind < 0.8:
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] = rng.randrange(256)
        return bytes(out)
    at = rng.randrange(len(out))
    out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    return bytes(out)
