"""load_image dispatch, bit depths, DICOM display, volume slices, cheap sizes and the pixel limit."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_color_lut

from biomedgpt.ingest.deid import BurnedInAnnotationError
from biomedgpt.ingest.dicom import DicomReadError
from biomedgpt.ingest.imageio import (
    DEFAULT_MAX_PIXELS,
    ImageTooLargeError,
    check_image_size,
    load_image,
)
from biomedgpt.ingest.volumes import window


def _png(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    Image.fromarray(arr, mode=mode).save(path) if mode else Image.fromarray(arr).save(path)
    return path


def test_png_8bit_rgb_and_16bit(tmp_path: Path) -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = load_image(_png(tmp_path / "g.png", gray))
    assert out.pixels.dtype == np.uint8 and np.array_equal(out.pixels, gray)
    rgb = np.zeros((3, 4, 3), np.uint8)
    rgb[..., 1] = 200
    assert np.array_equal(load_image(_png(tmp_path / "c.png", rgb)).pixels, rgb)
    deep = (np.arange(12, dtype=np.uint16) * 5000).reshape(3, 4)
    out16 = load_image(_png(tmp_path / "d.png", deep))
    assert out16.pixels.dtype == np.uint16 and np.array_equal(out16.pixels, deep)


def test_png_alpha_and_palette_become_rgb(tmp_path: Path) -> None:
    rgba = np.full((2, 3, 4), 90, np.uint8)
    assert load_image(_png(tmp_path / "a.png", rgba)).pixels.shape == (2, 3, 3)
    pal = Image.fromarray(np.zeros((2, 3), np.uint8)).convert("P")
    pal.save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png").pixels.shape == (2, 3, 3)


def test_jpeg(tmp_path: Path) -> None:
    Image.fromarray(np.full((8, 10, 3), 128, np.uint8)).save(tmp_path / "x.jpeg")
    out = load_image(tmp_path / "x.jpeg")
    assert out.pixels.shape == (8, 10, 3) and out.pixels.dtype == np.uint8
    assert check_image_size(tmp_path / "x.jpeg") == (10, 8)


def test_npy_kinds(tmp_path: Path) -> None:
    np.save(tmp_path / "u16.npy", np.arange(6, dtype=np.uint16).reshape(2, 3))
    assert load_image(tmp_path / "u16.npy").pixels.dtype == np.uint16
    hu = np.array([[-160.0, 40.0, 240.0]], dtype=np.float32)
    np.save(tmp_path / "hu.npy", hu)
    assert load_image(tmp_path / "hu.npy", modality="CT").pixels.tolist() == [[0, 128, 255]]
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"obj\.npy"):
        load_image(tmp_path / "obj.npy")
    np.save(tmp_path / "vec.npy", np.zeros(5))
    with pytest.raises(ValueError, match=r"not an image"):
        check_image_size(tmp_path / "vec.npy")


def test_dicom_ct_is_windowed_in_hu() -> None:
    path = get_testdata_file("CT_small.dcm")
    out = load_image(path)
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert out.modality == "CT" and out.pixels.dtype == np.uint8
    assert np.array_equal(out.pixels, window(hu, modality="CT"))
    assert np.array_equal(load_image(path, window="lung").pixels, window(hu, modality="CT", window="lung"))
    assert (
        out.meta["dicom"]["PatientIdentityRemoved"] == "YES" and "PatientName" in out.meta["deid"]["emptied"]
    )
    assert check_image_size(path) == (128, 128)


def test_dicom_mr_percentile_and_monochrome1(tmp_path: Path) -> None:
    path = get_testdata_file("MR_small.dcm")
    mono2 = load_image(path).pixels
    assert mono2.min() == 0 and mono2.max() == 255
    ds = pydicom.dcmread(path)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "inv.dcm")
    assert np.array_equal(load_image(tmp_path / "inv.dcm").pixels, 255 - mono2)


def test_dicom_multiframe_needs_a_frame_index() -> None:
    path = get_testdata_file("rtdose.dcm")
    with pytest.raises(ValueError, match=r"rtdose.dcm.*15 frames"):
        load_image(path)
    assert load_image(path, slice_index=14).pixels.shape == (10, 10)


def test_dicom_palette_and_colour() -> None:
    path = get_testdata_file("examples_palette.dcm")
    pal = load_image(path)
    ds = pydicom.dcmread(path)
    expected = (apply_color_lut(ds.pixel_array, ds) >> 8).astype(np.uint8)  # 16-bit LUT entries
    assert pal.pixels.shape == (350, 800, 3) and np.array_equal(pal.pixels, expected)
    assert check_image_size(path) == (800, 350)
    us = load_image(get_testdata_file("examples_ybr_color.dcm"), slice_index=0)
    assert us.pixels.shape == (240, 320, 3) and us.pixels.dtype == np.uint8


def test_unreadable_dicom_header(tmp_path: Path) -> None:
    (tmp_path / "junk.dcm").write_bytes(b"not dicom" * 40)
    for call in (check_image_size, load_image):
        with pytest.raises(DicomReadError, match=r"junk\.dcm"):
            call(tmp_path / "junk.dcm")


def test_dicom_burned_in_is_refused(tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.BurnedInAnnotation = "YES"
    ds.save_as(tmp_path / "burned.dcm")
    with pytest.raises(BurnedInAnnotationError, match=r"burned\.dcm"):
        load_image(tmp_path / "burned.dcm")
    assert load_image(tmp_path / "burned.dcm", allow_burned_in=True).pixels.shape == (64, 64)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_volume_slices_and_sizes(tmp_path: Path, suffix: str) -> None:
    data = np.arange(5 * 7 * 3, dtype=np.float32).reshape(5, 7, 3)  # non-square on purpose
    path = tmp_path / f"vol{suffix}"
    if suffix == ".nrrd":
        nrrd.write(str(path), data, {"space": "left-posterior-superior", "space directions": np.eye(3)})
    else:
        nib.save(nib.Nifti1Image(data, np.diag([-1.0, -1.0, 1.0, 1.0])), str(path))
    out = load_image(path, slice_index=1, modality="MR")
    assert out.pixels.shape == (7, 5) and out.pixels.dtype == np.uint8
    assert check_image_size(path) == (5, 7)  # (width, height) of what load_image returns
    with pytest.raises(ValueError, match=rf"vol{suffix}.*needs slice_index"):
        load_image(path)
    with pytest.raises(ValueError, match=rf"vol{suffix}.*out of range 0..2"):
        load_image(path, slice_index=3)


def test_pixel_limit_refuses_before_decoding(tmp_path: Path) -> None:
    assert DEFAULT_MAX_PIXELS == 64_000_000
    png = _png(tmp_path / "big.png", np.zeros((100, 100), np.uint8))
    with pytest.raises(ImageTooLargeError, match=r"big\.png: 100x100"):
        load_image(png, max_pixels=5_000)
    np.save(tmp_path / "big.npy", np.zeros((100, 100), np.uint8))
    with pytest.raises(ImageTooLargeError):
        load_image(tmp_path / "big.npy", max_pixels=5_000)
    with pytest.raises(ImageTooLargeError):
        load_image(get_testdata_file("CT_small.dcm"), max_pixels=100)
    # Headers that claim 9000x9000 (over our 64 MP) and 20000x20000 (over Pillow's own limit) with
    # almost no pixel data: refused from the header alone (decoding would fail on the missing data).
    bomb = _png_header_only(tmp_path / "bomb.png", 9_000, 9_000)
    assert check_image_size(bomb) == (9_000, 9_000)
    with pytest.raises(ImageTooLargeError, match=r"bomb\.png: 9000x9000 = 81000000 pixels"):
        load_image(bomb)
    with pytest.raises(ImageTooLargeError, match=r"huge\.png"):
        load_image(_png_header_only(tmp_path / "huge.png", 20_000, 20_000))


def _png_header_only(path: Path, width: int, height: int) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    idat = zlib.compress(b"\x00" * (width + 1))  # one row of the claimed image
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def test_unsupported_extension(tmp_path: Path) -> None:
    (tmp_path / "scan.bmp").write_bytes(b"BM")
    with pytest.raises(ValueError, match=r"'\.bmp'.*\.png.*\.nrrd"):
        load_image(tmp_path / "scan.bmp")
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        load_image(tmp_path / "missing.png")
