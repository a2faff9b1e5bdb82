"""Decoding untrusted uploads (`biomedgpt.serve.images`): accepted formats, 4xx for everything else, our limits
(not Pillow's), bounded decode memory, and the shards' intensity path (16-bit scaling, EXIF orientation)."""

from __future__ import annotations

import io
import random

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from biomedgpt.ingest.imageio import check_image_size, load_image
from biomedgpt.model.image_processing import to_rgb_uint8
from biomedgpt.serve.images import ImageLimits, clean_message, decode_image, read_header
from biomedgpt.serve.types import RequestError
from tests._upload_samples import accepted_samples, dicom_path, encode, mutate, refused_samples

LIMITS = ImageLimits()


@pytest.mark.parametrize("name", list(accepted_samples()))
def test_every_accepted_format_decodes_to_upright_rgb(name):
    decoded = decode_image(accepted_samples()[name], LIMITS)
    assert decoded.image.mode == "RGB"
    expected = (128, 128) if name == "DICOM" else (53, 37)
    assert decoded.image.size == decoded.orig_size == expected
    assert decoded.format == name.split("-")[0]


@pytest.mark.parametrize("name", list(refused_samples()))
def test_other_and_broken_formats_are_a_422_naming_the_format(name):
    with pytest.raises(RequestError) as caught:
        decode_image(refused_samples()[name], LIMITS)
    err = caught.value
    assert err.status == 422 and err.field == "image" and "could not be decoded" in err.message
    if name == "truncated TIFF":  # an accepted format, broken
        assert err.message.startswith("the TIFF image could not be decoded")
    else:
        assert "send PNG, JPEG, WebP, BMP, TIFF or DICOM" in err.message
    assert " at 0x" not in err.message


def test_a_corrupt_accepted_format_names_the_format_without_a_heap_address():
    png = accepted_samples()["PNG"]
    with pytest.raises(RequestError) as caught:
        decode_image(png[:70] + b"\x00garbage" * 8, LIMITS)
    assert caught.value.status == 422 and caught.value.message.startswith(
        "the PNG image could not be decoded"
    )
    assert clean_message(ValueError("cannot identify <_io.BytesIO object at 0x7f00deadbeef>")) == (
        "cannot identify the upload"
    )


def test_empty_bytes_are_refused():
    with pytest.raises(RequestError, match="empty"):
        decode_image(b"", LIMITS)


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(name=st.sampled_from(sorted(accepted_samples())), seed=st.integers(0, 2**32 - 1))
def test_fuzz_mutated_real_files_only_ever_raise_request_errors(name, seed):
    data = mutate(accepted_samples()[name], random.Random(seed))
    try:
        decoded = decode_image(data, LIMITS)
    except RequestError as err:
        assert 400 <= err.status < 500 and " at 0x" not in err.message
    else:
        assert decoded.image.mode == "RGB"


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    prefix=st.sampled_from(
        [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF\x00\x00\x00\x00WEBP", b"BM", b"II*\x00"]
    ),
    tail=st.binary(max_size=400),
)
def test_fuzz_random_bytes_behind_every_magic_only_raise_request_errors(prefix, tail):
    with pytest.raises(RequestError) as caught:
        decode_image(prefix + tail, LIMITS)
    assert 400 <= caught.value.status < 500


def test_the_413_quotes_our_limit_not_pillows():
    png = encode(Image.new("L", (10_000, 9_500)), "PNG")  # 95 M pixels: over Pillow's 89,478,485
    with pytest.raises(RequestError) as caught:
        read_header(png, ImageLimits(max_pixels=40_000_000))
    assert caught.value.status == 413
    assert "40,000,000" in caught.value.message and "89,478,485" not in caught.value.message


def test_a_pixel_limit_above_pillows_own_takes_effect():
    png = encode(Image.new("L", (10_000, 9_500)), "PNG")
    decoded = decode_image(png, ImageLimits(max_pixels=100_000_000))
    assert decoded.orig_size == (10_000, 9_500)
    assert max(decoded.image.size) < 2 * LIMITS.working_side  # reduced while decoding, not kept at 95 MP


def test_the_decode_cost_is_refused_past_its_limit_with_our_numbers():
    png = encode(Image.new("RGBA", (3000, 3000)), "PNG")
    header = read_header(png, LIMITS)
    assert header.decode_bytes >= 3000 * 3000 * 4
    with pytest.raises(RequestError) as caught:
        read_header(png, ImageLimits(max_decode_bytes=header.decode_bytes - 1))
    assert caught.value.status == 413 and "MiB" in caught.value.message


def test_a_large_jpeg_is_decoded_at_a_reduced_dct_scale():
    jpeg = encode(Image.new("RGB", (7000, 5000), (120, 30, 200)), "JPEG")
    header = read_header(jpeg, LIMITS)
    assert header.decode_bytes < 7000 * 5000 * 4  # priced at the draft scale, not at full size
    decoded = decode_image(jpeg, LIMITS)
    assert decoded.orig_size == (7000, 5000)
    assert LIMITS.working_side <= max(decoded.image.size) < 2 * LIMITS.working_side
    assert np.allclose(np.asarray(decoded.image)[100, 100], (120, 30, 200), atol=3)


def test_16_bit_gray_is_scaled_as_the_shards_scale_it(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 48).astype(np.uint16).reshape(48, 64)
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(path)
    decoded = np.asarray(decode_image(path.read_bytes(), LIMITS).image)
    shard_pixels = load_image(path).pixels  # what a shard stores: uint16, scaled when training reads it
    assert shard_pixels.dtype == np.uint16
    assert np.array_equal(decoded, np.asarray(to_rgb_uint8(shard_pixels)))
    assert decoded.mean() == pytest.approx(127.5, abs=1)  # not clipped: clipping makes ~99% of pixels white


def _oriented_jpeg(orientation: int) -> bytes:
    pixels = np.zeros((30, 50, 3), np.uint8)
    pixels[:, :10] = 255  # a white band on the left of the stored pixels
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", exif=exif.tobytes(), quality=95)


def test_exif_orientation_is_applied_by_the_api_and_the_shards_alike(tmp_path):
    data = _oriented_jpeg(6)  # "rotate 90 clockwise to view": the left band becomes the top band
    decoded = decode_image(data, LIMITS)
    assert decoded.image.size == decoded.orig_size == (30, 50)
    api = np.asarray(decoded.image)
    assert api[:5].mean() > 200 and api[-20:].mean() < 50
    path = tmp_path / "rotated.jpg"
    path.write_bytes(data)
    assert check_image_size(path) == (30, 50)
    shard = load_image(path).pixels
    assert shard.shape[:2] == (50, 30) and np.array_equal(np.asarray(to_rgb_uint8(shard)), api)


def test_exif_orientation_survives_the_reduction_of_a_large_image():
    pixels = np.zeros((2000, 4200, 3), np.uint8)
    pixels[:, :400] = 255
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 8  # rotate 90 counter-clockwise to view: the left band becomes the bottom band
    decoded = decode_image(encode(image, "PNG", exif=exif.tobytes()), LIMITS)
    assert decoded.orig_size == (2000, 4200)
    assert decoded.image.size == (1000, 2100)
    shown = np.asarray(decoded.image)
    assert shown[-150:].mean() > 200 and shown[:1000].mean() < 5


def test_dicom_uploads_are_read_as_shards_read_them():
    decoded = decode_image(dicom_path().read_bytes(), LIMITS)
    shard = load_image(dicom_path()).pixels  # de-identified, CT windowed in HU
    assert np.array_equal(np.asarray(decoded.image), np.asarray(to_rgb_uint8(shard)))


def test_dicom_with_burned_in_annotation_or_many_frames_is_refused():
    ds = pydicom.dcmread(dicom_path())
    ds.BurnedInAnnotation = "YES"
    buffer = io.BytesIO()
    ds.save_as(buffer)
    with pytest.raises(RequestError, match="burned-in") as caught:
        decode_image(buffer.getvalue(), LIMITS)
    assert caught.value.status == 422
    ds = pydicom.dcmread(dicom_path())
    ds.NumberOfFrames = 3  # refused from the header, before any pixel data is read
    buffer = io.BytesIO()
    ds.save_as(buffer)
    with pytest.raises(RequestError, match="3 frames"):
        decode_image(buffer.getvalue(), LIMITS)


def test_a_truncated_dicom_names_the_format():
    data = dicom_path().read_bytes()
    with pytest.raises(RequestError) as caught:
        decode_image(data[: len(data) - 500], LIMITS)
    assert caught.value.status == 422 and caught.value.message.startswith(
        "the DICOM image could not be decoded"
    )
    assert "upload.dcm" not in caught.value.message
