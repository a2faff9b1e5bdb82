"""Image preprocessing and the processor: sizes, normalization, padding, image-less samples, limits."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from biomedgpt.model.image_processing import BiomedGPTImageProcessor, ImageProcessorConfig, to_rgb_uint8
from biomedgpt.model.processing import BiomedGPTProcessor


@pytest.fixture(scope="module")
def processor() -> BiomedGPTProcessor:
    return BiomedGPTProcessor.default(image_size=64)


def test_pixels_are_normalized_to_minus_one_one():
    proc = BiomedGPTImageProcessor(ImageProcessorConfig(image_size=32))
    black_white = np.zeros((40, 50), np.uint8)
    black_white[:, 25:] = 255
    pixels, present = proc([black_white])
    assert pixels.shape == (1, 3, 32, 32) and pixels.dtype == np.float32 and present.tolist() == [True]
    assert pixels[0, :, :, :8].max() == pytest.approx(-1.0) and pixels[0, :, :, -8:].min() == pytest.approx(
        1.0
    )
    assert np.allclose(pixels[0, 0], pixels[0, 2])  # grayscale replicated to 3 channels


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.full((4, 4), 65535, np.uint16), 255),
        (np.full((4, 4), 0.5, np.float32), 128),
        (np.full((4, 4, 1), 7, np.uint8), 7),
    ],
)
def test_array_dtypes_convert_to_uint8(array, expected):
    assert np.asarray(to_rgb_uint8(array))[0, 0, 0] == expected


def test_bad_arrays_and_huge_images_are_refused():
    with pytest.raises(ValueError, match="shape"):
        to_rgb_uint8(np.zeros((2, 2, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        to_rgb_uint8(np.full((2, 2), np.nan, np.float32))
    proc = BiomedGPTImageProcessor(ImageProcessorConfig(image_size=32, max_pixels=100))
    with pytest.raises(ValueError, match="exceeds the limit"):
        proc.preprocess_one(Image.new("L", (20, 20)))
    with pytest.raises(ValueError, match="multiple of 16"):
        ImageProcessorConfig(image_size=30)


def _formula(image, size: int, mean: float = 0.5, std: float = 0.5) -> np.ndarray:
    """The preprocessing as written before it was made faster: RGB, bicubic resize, x / 255, - mean, / std."""
    rgb = to_rgb_uint8(image).resize((size, size), Image.Resampling.BICUBIC)
    array = np.asarray(rgb, dtype=np.float32) / 255.0
    return ((array - mean) / std).transpose(2, 0, 1)


def _inputs() -> dict[str, object]:
    rng = np.random.default_rng(7)
    shade = (np.add.outer(np.arange(90), np.arange(70)) * 1.4).astype(np.uint8)  # smooth gray (90, 70)
    color = rng.integers(0, 256, (41, 77, 3), dtype=np.uint8)
    almost_gray = np.repeat(shade[..., None], 3, axis=2)
    almost_gray[60, 33, 2] ^= 1  # one pixel off gray: must take the RGB path
    return {
        "L": Image.fromarray(shade),
        "gray as RGB (the API's decoder)": Image.fromarray(shade).convert("RGB"),
        "color RGB": Image.fromarray(color),
        "almost gray RGB": Image.fromarray(almost_gray),
        "RGBA": Image.fromarray(rng.integers(0, 256, (33, 35, 4), dtype=np.uint8)),
        "palette": Image.fromarray(color).convert("P"),
        "16-bit gray image": Image.fromarray(rng.integers(0, 65536, (30, 50), dtype=np.uint16)),
        "uint8 2-D": shade,
        "uint8 (H, W, 1)": shade[..., None],
        "uint8 gray (H, W, 3)": np.repeat(shade[..., None], 3, axis=2),
        "uint8 color (H, W, 3)": color,
        "uint16 2-D": rng.integers(0, 65536, (48, 48), dtype=np.uint16),
        "float 2-D": rng.random((20, 24)),
        "int32 2-D": rng.integers(-20, 300, (17, 19)).astype(np.int32),
        "same size": rng.integers(0, 256, (32, 32), dtype=np.uint8),
    }


@pytest.mark.parametrize("name", list(_inputs()))
@pytest.mark.parametrize("size", [32, 64])
def test_preprocessing_equals_the_formula_bit_for_bit(name, size):
    """The fast path (gray resized once, a lookup table into a preallocated array) gives exactly the values of
    the plain formula, for every kind of input the engine and the data pipeline pass."""
    image = _inputs()[name]
    proc = BiomedGPTImageProcessor(ImageProcessorConfig(image_size=size))
    got = proc.preprocess_one(image)
    assert got.dtype == np.float32 and got.shape == (3, size, size) and got.flags.c_contiguous
    np.testing.assert_array_equal(got, _formula(image, size))


def test_preprocessing_writes_into_a_given_array_and_other_normalizations_hold():
    image = _inputs()["color RGB"]
    proc = BiomedGPTImageProcessor(ImageProcessorConfig(image_size=32, mean=0.45, std=0.27))
    batch = np.full((2, 3, 32, 32), 9.0, np.float32)
    row = batch[1]
    assert proc.preprocess_one(image, out=row) is row
    np.testing.assert_array_equal(batch[1], _formula(image, 32, mean=0.45, std=0.27))
    assert (batch[0] == 9.0).all()
    with pytest.raises(ValueError, match="C-contiguous float32"):
        proc.preprocess_one(image, out=np.empty((3, 32, 32), np.float64))


def test_prompts_are_wrapped_and_right_padded(processor):
    batch = processor(
        text=[" what does the image describe?", " is there a lesion?"], images=None, return_tensors="np"
    )
    ids, mask = batch["input_ids"], batch["attention_mask"]
    layout = processor.tokenizer.layout
    assert "patch_images" not in batch
    for row, row_mask in zip(ids, mask):
        n = int(row_mask.sum())
        assert row[0] == layout.bos_id and row[n - 1] == layout.eos_id
        assert (row[n:] == layout.pad_id).all()
    assert mask[0].sum() != mask[1].sum()


def test_samples_without_an_image_are_masked(processor):
    batch = processor(text=[" a", " b"], images=[np.zeros((10, 10), np.uint8), None], return_tensors="pt")
    assert batch["patch_images"].shape == (2, 3, 64, 64)
    assert batch["patch_masks"].tolist() == [True, False]


def test_errors_name_the_problem(processor):
    with pytest.raises(ValueError, match="2 prompts but 1 images"):
        processor(text=[" a", " b"], images=[np.zeros((4, 4), np.uint8)])
    with pytest.raises(ValueError, match="more than the limit of 3"):
        processor(text=" what does the image describe?", max_length=3)
    with pytest.raises(ValueError, match="return_tensors"):
        processor(text=" a", return_tensors="tf")


def test_save_and_load(tmp_path, processor):
    processor.save_pretrained(tmp_path)
    loaded = BiomedGPTProcessor.from_pretrained(tmp_path)
    assert loaded.image_processor.image_size == 64
    image = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    a = processor(text=" x", images=image, return_tensors="np")
    b = loaded(text=" x", images=image, return_tensors="np")
    for key in a:
        assert np.array_equal(a[key], b[key])
    assert loaded.batch_decode([[0, *processor.tokenizer.encode_prompt(" pleural effusion")[1:]]]) == [
        " pleural effusion"
    ]
