"""Untrusted image bytes -> an upright 8-bit RGB image, for the API and the demo alike.

Accepted: PNG, JPEG, WebP, BMP, TIFF and DICOM, recognised by their leading bytes (never by a file name or a
content type a client chose). Each format is opened with its own Pillow plugin class rather than `Image.open`,
so none of Pillow's other formats is reachable and Pillow's global decompression-bomb limit (89,478,485 pixels)
never pre-empts ours. DICOM goes through the shard reader (`biomedgpt.ingest.imageio.load_dicom_bytes`):
de-identified before its pixels are touched, then windowed as shards are.

Three steps, each bounded:

1. `read_header` parses the header only: the size (413 above `max_pixels`) and an estimate of the bytes the
   decode will hold (413 above `max_decode_bytes`); this estimate is what the server's decode budget reserves.
2. `decode_image` decodes. JPEG is decoded at a reduced DCT scale (`Image.draft`) when it is much larger than
   `working_side`; other formats are box-reduced (`Image.reduce`) right after decoding, so what stays in memory
   while a request waits for the model is at most about `2 * working_side` pixels on its longer side.
3. The intensity path of the training data: `imageio.pil_pixels` (EXIF orientation, 16-bit kept) and
   `to_rgb_uint8` (16-bit divided by 257), exactly as shards are written and read.

Every failure is a `RequestError` (422 naming the format, or 413 naming our limit); no exception type escapes.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import BmpImagePlugin, Image, ImageFile, JpegImagePlugin, PngImagePlugin, TiffImagePlugin

from biomedgpt.serve.types import RequestError

ACCEPTED_FORMATS = ("PNG", "JPEG", "WebP", "BMP", "TIFF", "DICOM")
ACCEPTED_TEXT = "PNG, JPEG, WebP, BMP, TIFF or DICOM"
_WORK_BYTES_PER_PIXEL = 10
"""Bytes per pixel of the conversion to 8-bit RGB: the numpy copy, the float32 16-bit scaling, the RGB image."""
_DICOM_BYTES_PER_PIXEL = 16
"""Bytes per stored DICOM pixel while decoding: the raw array, the float32 modality LUT and window, the result."""


@dataclass(frozen=True, kw_only=True)
class ImageLimits:
    """What one uploaded image may cost; the server's `ServeConfig` fills these in."""

    max_pixels: int = 40_000_000
    """Width x height, read from the header; more answers 413 before any pixel is decoded."""
    max_decode_bytes: int = 512 * 1024 * 1024
    """Estimated bytes one decode holds at its peak; more answers 413 (also the server's total decode budget)."""
    working_side: int = 2048
    """Images whose longer side is at least twice this are reduced to at least this while decoding."""


@dataclass(frozen=True, kw_only=True)
class ImageHeader:
    """What the header of an accepted image says, and what decoding it will cost."""

    format: str
    """One of `ACCEPTED_FORMATS`."""
    width: int
    height: int
    """As stored (before EXIF orientation)."""
    decode_bytes: int
    """Estimated peak bytes of `decode_image` for this image."""


@dataclass(frozen=True, kw_only=True)
class DecodedImage:
    """An upload ready for the engine."""

    image: Image.Image
    """Upright 8-bit RGB; reduced when the upload was large."""
    orig_size: tuple[int, int]
    """Upright (width, height) of the image as sent: the frame outputs (boxes, masks) refer to."""
    format: str


def sniff_format(data: bytes) -> str | None:
    """The accepted format `data` starts like, else None."""
    if data[128:132] == b"DICM":  # first: a DICOM preamble may itself hold a TIFF header (dual-format files)
        return "DICOM"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data.startswith(b"BM"):
        return "BMP"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    return None


def read_header(data: bytes, limits: ImageLimits) -> ImageHeader:
    """The header of `data`: 422 for empty, unaccepted or unreadable bytes; 413 past `limits`."""
    fmt = _accepted_format(data)
    with _decoder_errors(fmt):
        if fmt == "DICOM":
            header = _dicom_header(data, limits)
        else:
            with _open(fmt, data) as img:
                header = _pillow_header(fmt, img, limits)
    _check_limits(header, limits)
    return header


def decode_image(data: bytes, limits: ImageLimits) -> DecodedImage:
    """Decode an upload to an upright 8-bit RGB image (see the module docstring); 422/413 as `read_header`."""
    header = read_header(data, limits)
    with _decoder_errors(header.format):
        if header.format == "DICOM":
            return _decode_dicom(data, header, limits)
        with _open(header.format, data) as img:
            return _decode_pillow(img, header, limits)


# ----------------------------------------------------------------------------- formats and errors


def _accepted_format(data: bytes) -> str:
    if not data:
        raise RequestError("the image is empty", field="image")
    fmt = sniff_format(data)
    if fmt is None:
        seen = _looks_like(data)
        detail = f"{seen} is not an accepted format" if seen else "the bytes are not a known image format"
        raise RequestError(f"the image could not be decoded: {detail}; send {ACCEPTED_TEXT}", field="image")
    return fmt


_OTHER_FORMATS = (
    (0, b"GIF8", "GIF"),
    (0, b"%PDF", "PDF"),
    (0, b"qoif", "QOI"),
    (0, b"DDS ", "DDS"),
    (0, b"8BPS", "PSD"),
    (0, b"\xff\x4f\xff\x51", "JPEG 2000"),
    (4, b"jP  ", "JPEG 2000"),
    (4, b"ftypavif", "AVIF"),
    (4, b"ftypheic", "HEIC"),
    (4, b"ftypmif1", "HEIF"),
    (0, b"\x00\x00\x01\x00", "ICO"),
    (0, b"\x1f\x8b", "gzip"),
    (0, b"PK\x03\x04", "ZIP"),
    (0, b"<svg", "SVG"),
    (0, b"<?xml", "XML"),
    (344, b"n+1\x00", "NIfTI"),
)
"""Magic bytes of formats a client may send by mistake, only to name them in the refusal."""


def _looks_like(data: bytes) -> str | None:
    """The name of a common unaccepted format `data` starts like (for the error message), else None."""
    for offset, magic, name in _OTHER_FORMATS:
        if data[offset : offset + len(magic)] == magic:
            return name
    return None


def _open(fmt: str, data: bytes) -> ImageFile.ImageFile:
    """The format's own plugin class: no other format is tried and Pillow's global bomb check is not run."""
    plugin: type[ImageFile.ImageFile]
    if fmt == "WebP":
        from PIL import WebPImagePlugin

        plugin = WebPImagePlugin.WebPImageFile
    else:
        plugin = {
            "PNG": PngImagePlugin.PngImageFile,
            "JPEG": JpegImagePlugin.JpegImageFile,
            "BMP": BmpImagePlugin.BmpImageFile,
            "TIFF": TiffImagePlugin.TiffImageFile,
        }[fmt]
    return plugin(io.BytesIO(data))


_HEAP_ADDRESS = re.compile(r"<[^<>]*\bat 0x[0-9a-fA-F]+>")
_UPLOAD_NAME = "upload.dcm"
"""What the DICOM reader's messages call an upload; dropped from the message a client sees."""


def clean_message(err: BaseException, *, limit: int = 160) -> str:
    """An exception's message fit for a client: no heap addresses, one line, bounded length."""
    text = " ".join(_HEAP_ADDRESS.sub("the upload", str(err)).split()).removeprefix(_UPLOAD_NAME + ": ")
    text = text or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextmanager
def _decoder_errors(fmt: str) -> Iterator[None]:
    """Any decoder failure as a 4xx that names the format: the bytes are the client's, so is the fault."""
    from biomedgpt.ingest.deid import BurnedInAnnotationError
    from biomedgpt.ingest.dicom import DicomDecoderError

    try:
        yield
    except RequestError:
        raise
    except BurnedInAnnotationError:
        raise RequestError(
            "the DICOM image declares burned-in annotation (BurnedInAnnotation YES): it may show who the "
            "patient is, so it is refused",
            field="image",
        ) from None
    except DicomDecoderError as err:
        raise RequestError(
            f"the DICOM pixel data uses a compression this server cannot decode: {clean_message(err)}",
            status=415,
            field="image",
        ) from None
    except (MemoryError, Image.DecompressionBombError):
        raise RequestError(
            f"the {fmt} image is too large to decode here", status=413, field="image"
        ) from None
    except Exception as err:  # hostile bytes reach C decoders: every failure is the client's
        raise RequestError(
            f"the {fmt} image could not be decoded: {clean_message(err)}", field="image"
        ) from None


# ----------------------------------------------------------------------------- headers and cost


def _pillow_bytes_per_pixel(mode: str) -> int:
    """Bytes per pixel of Pillow's own storage (RGB is stored in 4 bytes, as are two-band modes)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


def _reduce_mode(mode: str) -> str | None:
    """The mode an image must be converted to before `Image.reduce` (None: reduce works on it)."""
    if mode.startswith("I;16"):
        return "I"
    return {"1": "L", "P": "RGBA", "PA": "RGBA"}.get(mode)


def _reduce_factor(width: int, height: int, working_side: int) -> int:
    return max(1, max(width, height) // working_side)


def _draft_target(width: int, height: int, working_side: int) -> tuple[int, int]:
    """The size to ask `JpegImageFile.draft` for: the aspect-kept size whose longer side is `working_side`."""
    scale = working_side / max(width, height)
    return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))


def _pillow_header(fmt: str, img: ImageFile.ImageFile, limits: ImageLimits) -> ImageHeader:
    width, height = img.size
    if width < 1 or height < 1:
        raise RequestError(f"the {fmt} image has no pixels ({width}x{height})", field="image")
    decoded_w, decoded_h = width, height
    if fmt == "JPEG" and max(width, height) >= 2 * limits.working_side:
        scale = min(8, _reduce_factor(width, height, limits.working_side))
        scale = 1 << (scale.bit_length() - 1)  # the DCT scales libjpeg offers: 1, 2, 4, 8
        decoded_w, decoded_h = math.ceil(width / scale), math.ceil(height / scale)
    pixels = decoded_w * decoded_h
    mode_bytes = _pillow_bytes_per_pixel(img.mode)
    convert_mode = _reduce_mode(img.mode)
    factor = _reduce_factor(decoded_w, decoded_h, limits.working_side)
    if factor > 1:
        convert_bytes = _pillow_bytes_per_pixel(convert_mode) if convert_mode else 0
        work_pixels = math.ceil(decoded_w / factor) * math.ceil(decoded_h / factor)
    else:
        convert_bytes, work_pixels = 0, pixels
    cost = pixels * (mode_bytes + convert_bytes) + work_pixels * _WORK_BYTES_PER_PIXEL
    return ImageHeader(format=fmt, width=width, height=height, decode_bytes=cost)


def _dicom_header(data: bytes, limits: ImageLimits) -> ImageHeader:
    from biomedgpt.ingest.imageio import NamedBytes, dicom_geometry

    columns, rows, frames = dicom_geometry(NamedBytes(data, _UPLOAD_NAME))
    if frames > 1:
        raise RequestError(
            f"the DICOM image has {frames} frames; send one frame (a single-frame DICOM or a PNG of it)",
            field="image",
        )
    if columns < 1 or rows < 1:
        raise RequestError(f"the DICOM image has no pixels ({columns}x{rows})", field="image")
    cost = columns * rows * _DICOM_BYTES_PER_PIXEL
    return ImageHeader(format="DICOM", width=columns, height=rows, decode_bytes=cost)


def _check_limits(header: ImageHeader, limits: ImageLimits) -> None:
    pixels = header.width * header.height
    if pixels > limits.max_pixels:
        raise RequestError(
            f"the {header.format} image has {header.width}x{header.height} = {pixels:,} pixels, more than "
            f"this server's limit of {limits.max_pixels:,}",
            status=413,
            field="image",
        )
    if header.decode_bytes > limits.max_decode_bytes:
        raise RequestError(
            f"the {header.format} image ({header.width}x{header.height}) needs about "
            f"{_mib(header.decode_bytes)} MiB to decode, more than this server's limit of "
            f"{_mib(limits.max_decode_bytes)} MiB",
            status=413,
            field="image",
        )


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f}"


# ----------------------------------------------------------------------------- decoding


def _decode_pillow(img: ImageFile.ImageFile, header: ImageHeader, limits: ImageLimits) -> DecodedImage:
    from biomedgpt.ingest.imageio import exif_orientation, oriented_size, pil_pixels

    orientation = exif_orientation(img)
    orig_size = oriented_size(img)
    if header.format == "JPEG" and max(img.size) >= 2 * limits.working_side:
        img.draft(None, _draft_target(*img.size, limits.working_side))
    img.load()
    reduced = _reduced(img, limits.working_side)
    return DecodedImage(
        image=_rgb(pil_pixels(reduced, orientation=orientation)), orig_size=orig_size, format=header.format
    )


def _reduced(img: Image.Image, working_side: int) -> Image.Image:
    """`img` box-reduced by an integer factor so its longer side stays at least `working_side`."""
    factor = _reduce_factor(*img.size, working_side)
    if factor == 1:
        return img
    convert_mode = _reduce_mode(img.mode)
    source = img.convert(convert_mode) if convert_mode else img
    reduced = source.reduce(factor)
    if img.mode.startswith("I;16"):  # back to 16-bit gray, so the one 16-bit scaling applies
        reduced = Image.fromarray(np.asarray(reduced).astype(np.uint16))
    return reduced


def _decode_dicom(data: bytes, header: ImageHeader, limits: ImageLimits) -> DecodedImage:
    from biomedgpt.ingest.imageio import NamedBytes, load_dicom_bytes

    loaded = load_dicom_bytes(NamedBytes(data, _UPLOAD_NAME), max_pixels=limits.max_pixels)
    image = _rgb(loaded.pixels)
    factor = _reduce_factor(*image.size, limits.working_side)
    if factor > 1:
        image = image.reduce(factor)
    return DecodedImage(image=image, orig_size=(header.width, header.height), format="DICOM")


def _rgb(pixels: np.ndarray) -> Image.Image:
    """uint8/uint16 pixels -> 8-bit RGB, by the model's own conversion (16-bit divided by 257)."""
    from biomedgpt.model.image_processing import to_rgb_uint8

    return to_rgb_uint8(pixels)
