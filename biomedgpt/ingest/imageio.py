"""Load any supported image file as a 2-D uint8/uint16 array, with size checks that avoid decoding.

One entry point per need of the shard writer and the manifest validator:

- ``load_image(path, ...)`` dispatches on the extension: png/jpg/jpeg (Pillow; 16-bit PNG stays
  uint16), npy (``np.load(allow_pickle=False)``), dcm (``dicom.read_dicom``: de-identified, then CT
  windowed in HU and other modalities percentile-scaled; MONOCHROME1 inverted, PALETTE COLOR
  expanded to RGB), nii/nii.gz/nrrd (``volumes``: one slice, ``slice_index`` required).
- ``check_image_size(path)`` returns (width, height) from headers only (Pillow's lazy open, the
  npy header, the DICOM header without pixel data, the volume header): the size ``load_image``
  would return, for validating boxes in manifests.

Every image is checked against a pixel limit (64 megapixels by default) before its pixels are
decoded, a guard against decompression bombs.

Pillow images (files here, uploads in ``biomedgpt.serve.images``) go through ``pil_pixels``: EXIF
orientation applied, 16-bit gray kept as uint16 (scaled to 8 bits by ``to_rgb_uint8`` later, the same
division by 257 for shards, training and serving), palette and other modes converted to RGB.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from biomedgpt.ingest.volumes import (
    DEFAULT_MAX_VOXELS,
    load_volume,
    slice_volume,
    volume_shape,
    volume_suffix,
)
from biomedgpt.ingest.volumes import window as apply_window

DEFAULT_MAX_PIXELS = 64_000_000
"""Refuse images with more pixels than this (64 megapixels)."""
SUPPORTED_SUFFIXES = (".png", ".jpg", ".jpeg", ".npy", ".dcm", ".nii", ".nii.gz", ".nrrd")


class ImageTooLargeError(ValueError):
    """The image has more pixels than the limit (a possible decompression bomb)."""


@dataclass
class LoadedImage:
    """A 2-D image ready for a shard: uint8 or uint16, (H, W) or (H, W, 3)."""

    pixels: np.ndarray
    """uint8 or uint16 array, (H, W) grayscale or (H, W, 3) RGB."""
    modality: str | None
    """CT, MR, ... when known from DICOM or given by the caller."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Source details: format, and for DICOM the allow-listed attributes and the de-identification report."""


def image_suffix(path: str | PathLike[str]) -> str:
    """The lower-case suffix used for dispatch (".nii.gz" counts as one); ValueError if unsupported."""
    name = Path(path).name.lower()
    suffix = volume_suffix(name) or Path(name).suffix
    if suffix not in SUPPORTED_SUFFIXES:
        raise ValueError(
            f"{path}: unsupported image extension {suffix or '(none)'!r}; supported: {', '.join(SUPPORTED_SUFFIXES)}"
        )
    return suffix


def _check_pixels(path: str | PathLike[str], width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{path}: {width}x{height} = {width * height} pixels is over the limit of {max_pixels} "
            "(possible decompression bomb); raise max_pixels only for trusted files"
        )


class NamedBytes(io.BytesIO):
    """File contents held in memory (an upload) that print as a name, so errors never show a heap address."""

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self.name = name

    def __str__(self) -> str:
        return self.name

    __repr__ = __str__


def _rewound(path: str | PathLike[str] | NamedBytes) -> str | PathLike[str] | NamedBytes:
    if isinstance(path, NamedBytes):
        path.seek(0)
    return path


def _dicom_geometry(path: str | PathLike[str] | NamedBytes) -> tuple[int, int, int]:
    """(columns, rows, frames) from the DICOM header, without reading pixel data."""
    import pydicom

    from biomedgpt.ingest.dicom import DicomReadError

    try:
        ds = pydicom.dcmread(_rewound(path), stop_before_pixels=True)
        return int(ds.Columns), int(ds.Rows), int(ds.get("NumberOfFrames") or 1)
    except (pydicom.errors.InvalidDicomError, AttributeError, EOFError, OSError, ValueError) as err:
        raise DicomReadError(
            f"{path}: no readable image size in the DICOM header ({type(err).__name__}: {err})"
        ) from err


def _npy_shape(path: str | PathLike[str]) -> tuple[int, ...]:
    """Shape from the .npy header alone (no data read, no pickle)."""
    fmt = np.lib.format
    with open(path, "rb") as f:
        version = fmt.read_magic(f)
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _fortran, _dtype = read_header(f)
    return tuple(shape)


def _open_pil(path: str | PathLike[str]) -> Any:
    """Pillow's lazy open (header only); its own bomb check becomes ``ImageTooLargeError``."""
    from PIL import Image

    try:
        return Image.open(path)
    except Image.DecompressionBombError as err:
        raise ImageTooLargeError(f"{path}: {err}") from err


EXIF_ORIENTATION_TAG = 0x0112
"""EXIF Orientation: 1 upright, 2-8 mirrored and/or rotated; 5-8 swap width and height."""


def exif_orientation(img: Any) -> int:
    """The EXIF orientation of a Pillow image (1 when absent or unreadable)."""
    try:
        value = img.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except Exception:  # a corrupt EXIF block must not make the image unreadable
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def oriented_size(img: Any) -> tuple[int, int]:
    """(width, height) as a viewer shows the image, after its EXIF orientation, from the header only."""
    width, height = int(img.width), int(img.height)
    return (height, width) if exif_orientation(img) >= 5 else (width, height)


_ORIENTATION_TRANSPOSE = {2: 0, 3: 3, 4: 1, 5: 5, 6: 4, 7: 6, 8: 2}
"""EXIF orientation -> `Image.Transpose` value that turns the stored pixels upright (as ImageOps.exif_transpose)."""


def apply_exif_orientation(img: Any, orientation: int | None = None) -> Any:
    """The image turned upright by its EXIF orientation (or by `orientation`, for a derived image that lost
    its EXIF block, such as a reduced copy); the same object when there is nothing to do."""
    from PIL import Image

    orientation = exif_orientation(img) if orientation is None else orientation
    if orientation not in _ORIENTATION_TRANSPOSE:
        return img
    return img.transpose(Image.Transpose(_ORIENTATION_TRANSPOSE[orientation]))


_UINT16_MODES = {"I;16", "I;16B", "I;16L", "I;16N"}


def pil_pixels(img: Any, *, orientation: int | None = None) -> np.ndarray:
    """A Pillow image -> uint8/uint16 (H, W) or (H, W, 3) pixels, upright (EXIF orientation applied).

    16-bit gray stays uint16; 32-bit integer gray stays uint16 when its values fit, else it is windowed
    like float gray (1st..99th percentile to 0..255); 1-bit and gray+alpha become gray; palette, alpha,
    CMYK and the other colour modes become RGB. `orientation` overrides the image's own EXIF tag.
    """
    img = apply_exif_orientation(img, orientation)
    if img.mode in _UINT16_MODES:
        return np.asarray(img).astype(np.uint16)
    if img.mode in {"I", "I;16S", "F"}:
        arr = np.asarray(img)
        if arr.dtype.kind in "iu" and arr.min(initial=0) >= 0 and arr.max(initial=0) <= 65535:
            return arr.astype(np.uint16)
        return apply_window(arr, modality=None)
    if img.mode in {"L", "RGB"}:
        return np.asarray(img)
    if img.mode in {"1", "LA", "La"}:
        return np.asarray(img.convert("L"))
    return np.asarray(img.convert("RGB"))  # P, RGBA, CMYK, YCbCr, LAB...


def check_image_size(path: str | PathLike[str]) -> tuple[int, int]:
    """(width, height) of the image ``load_image`` would return, read from headers only."""
    suffix = image_suffix(path)
    if suffix in {".png", ".jpg", ".jpeg"}:
        with _open_pil(path) as img:
            return oriented_size(img)
    if suffix == ".npy":
        shape = _npy_shape(path)
        if len(shape) < 2:
            raise ValueError(f"{path}: npy array of shape {shape} is not an image")
        return int(shape[1]), int(shape[0])
    if suffix == ".dcm":
        cols, rows, _frames = _dicom_geometry(path)
        return cols, rows
    shape = volume_shape(path)
    return shape[0], shape[1]  # slice_volume transposes file-order slices: (H, W) = (shape[1], shape[0])


def _to_image_array(arr: np.ndarray, path: str | PathLike[str], modality: str | None) -> np.ndarray:
    """uint8/uint16 kept; bool -> 0/255; anything else windowed to uint8 (CT in HU)."""
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3)):
        raise ValueError(f"{path}: expected (H, W) or (H, W, 3) pixels, got shape {arr.shape}")
    if arr.dtype in (np.uint8, np.uint16):
        return np.ascontiguousarray(arr)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    return apply_window(arr, modality=modality)


def _load_pil(path: str | PathLike[str], max_pixels: int) -> np.ndarray:
    with _open_pil(path) as img:
        _check_pixels(path, img.width, img.height, max_pixels)
        return pil_pixels(img)


def _load_npy(path: str | PathLike[str], max_pixels: int, modality: str | None) -> np.ndarray:
    shape = _npy_shape(path)
    if len(shape) >= 2:
        _check_pixels(path, shape[1], shape[0], max_pixels)
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise ValueError(f"{path}: npy could not be loaded without pickle ({err})") from err
    return _to_image_array(np.asarray(arr), path, modality)


def _display_dicom(pixels: np.ndarray, photometric: str, modality: str, window_: Any) -> np.ndarray:
    """Grayscale: CT windowed in HU, others percentile-scaled (8-bit stored values kept); MONOCHROME1 inverted."""
    if photometric.startswith("MONOCHROME"):
        if pixels.dtype == np.uint8 and modality != "CT" and window_ is None:
            shown = pixels
        else:
            shown = apply_window(pixels, modality=modality, window=window_)
        return (255 - shown) if photometric == "MONOCHROME1" else shown
    if pixels.dtype not in (np.uint8, np.uint16):
        return apply_window(pixels, modality=None)
    return pixels


def _load_dicom(
    path: str | PathLike[str] | NamedBytes, slice_index: int | None, opts: dict[str, Any]
) -> LoadedImage:
    from biomedgpt.ingest.dicom import read_dicom

    cols, rows, frames = _dicom_geometry(path)
    _check_pixels(path, cols, rows, opts["max_pixels"])
    if cols * rows * frames > DEFAULT_MAX_VOXELS:  # every frame is decoded
        raise ImageTooLargeError(
            f"{path}: {frames} frames of {cols}x{rows} is over {DEFAULT_MAX_VOXELS} pixels"
        )
    if frames > 1 and (slice_index is None or not 0 <= slice_index < frames):
        raise ValueError(
            f"{path}: multi-frame DICOM with {frames} frames needs slice_index in 0..{frames - 1}, got {slice_index}"
        )
    image = read_dicom(path, allow_burned_in=opts["allow_burned_in"])
    pixels = image.pixels[slice_index] if frames > 1 else image.pixels
    modality = opts["modality"] or image.modality
    if image.photometric == "PALETTE COLOR":
        shown = _palette_to_rgb(path, pixels)
    else:
        shown = _display_dicom(pixels, image.photometric, modality, opts["window"])
    meta = {"format": "dicom", "dicom": image.meta, "deid": image.deid.to_dict() if image.deid else None}
    return LoadedImage(pixels=_to_image_array(shown, path, modality), modality=modality, meta=meta)


def _palette_to_rgb(path: str | PathLike[str] | NamedBytes, indices: np.ndarray) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_color_lut

    # Only the LUT descriptors and data are used.
    ds = pydicom.dcmread(_rewound(path), stop_before_pixels=True)
    rgb = apply_color_lut(indices, ds)
    if rgb.dtype != np.uint8:
        rgb = (rgb >> 8).astype(np.uint8) if rgb.dtype == np.uint16 else apply_window(rgb, modality=None)
    return rgb


def _load_volume_slice(
    path: str | PathLike[str], slice_index: int | None, opts: dict[str, Any]
) -> LoadedImage:
    width, height = check_image_size(path)
    _check_pixels(path, width, height, opts["max_pixels"])
    if slice_index is None:
        raise ValueError(f"{path}: a volume needs slice_index (which slice along the last axis)")
    vol = load_volume(path, modality=opts["modality"])
    if not 0 <= slice_index < vol.num_slices:
        raise ValueError(f"{path}: slice_index {slice_index} out of range 0..{vol.num_slices - 1}")
    plane = slice_volume(vol, slice_index)
    pixels = apply_window(plane, modality=vol.modality, window=opts["window"])
    meta = {"format": "volume", "axes": vol.axes, "spacing": list(vol.spacing), "slice_index": slice_index}
    return LoadedImage(pixels=pixels, modality=vol.modality, meta=meta)


def load_image(
    path: str | PathLike[str],
    *,
    slice_index: int | None = None,
    modality: str | None = None,
    allow_burned_in: bool = False,
    window: str | tuple[float, float] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> LoadedImage:
    """Load ``path`` as uint8/uint16 (H, W) or (H, W, 3) pixels (see the module docstring).

    ``slice_index`` picks the slice of a volume or the frame of a multi-frame DICOM (required for
    both); ``modality`` overrides the DICOM one and tells volumes and npy files how to window;
    ``window`` is a CT preset name or (center, width), used for CT DICOM, volumes and float npy.
    """
    suffix = image_suffix(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    opts = {
        "modality": modality,
        "allow_burned_in": allow_burned_in,
        "window": window,
        "max_pixels": max_pixels,
    }
    if suffix in {".png", ".jpg", ".jpeg"}:
        pixels = _to_image_array(_load_pil(path, max_pixels), path, modality)
        return LoadedImage(pixels=pixels, modality=modality, meta={"format": suffix.lstrip(".")})
    if suffix == ".npy":
        return LoadedImage(
            pixels=_load_npy(path, max_pixels, modality), modality=modality, meta={"format": "npy"}
        )
    if suffix == ".dcm":
        return _load_dicom(path, slice_index, opts)
    return _load_volume_slice(path, slice_index, opts)


def dicom_geometry(data: NamedBytes) -> tuple[int, int, int]:
    """(columns, rows, frames) of DICOM bytes in memory, from the header alone (no pixel data read)."""
    return _dicom_geometry(data)


def load_dicom_bytes(
    data: NamedBytes,
    *,
    frame: int | None = None,
    allow_burned_in: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> LoadedImage:
    """DICOM bytes in memory (an upload) -> pixels, exactly as ``load_image`` reads a .dcm file for a shard:
    de-identified first, CT windowed in HU, other modalities percentile-scaled, MONOCHROME1 inverted."""
    opts = {"modality": None, "allow_burned_in": allow_burned_in, "window": None, "max_pixels": max_pixels}
    return _load_dicom(data, frame, opts)
