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
