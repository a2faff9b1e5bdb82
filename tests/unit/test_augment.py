"""Training-time augmentation: geometry kept where targets hold positions, never flipped, new view per repeat."""

from __future__ import annotations

import random

import numpy as np

from biomedgpt.data.augment import GEOMETRIC_TASKS, augment, jitter_intensity, random_crop


def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((40, 50)) * 255).astype(np.uint8)


def test_crops_stay_inside_and_keep_at_least_the_minimum_side():
    image = _image()
    for seed in range(50):
        crop = random_crop(image, random.Random(seed))
        assert 32 <= crop.shape[0] <= 40 and 40 <= crop.shape[1] <= 50
        # the crop is a window of the original, not a resampled or flipped copy
        h, w = crop.shape
        assert any(
            np.array_equal(image[i : i + h, j : j + w], crop)
            for i in range(image.shape[0] - h + 1)
            for j in range(image.shape[1] - w + 1)
        )


def test_tasks_with_positions_keep_their_geometry():
    image = _image()
    for task in GEOMETRIC_TASKS:
        out = augment(image, task, random.Random(1))
        assert out.shape == image.shape
        # intensity jitter is monotonic: the order of pixel values (hence every edge and mask) is kept
        flat, ref = out.astype(int).ravel(), image.astype(int).ravel()
        order = np.argsort(ref, kind="stable")
        assert (np.diff(flat[order]) >= 0).all()


def test_jitter_changes_intensity_but_stays_uint8():
    image = _image()
    out = jitter_intensity(image, random.Random(3))
    assert out.dtype == np.uint8 and out.shape == image.shape and not np.array_equal(out, image)


def test_formatter_gives_each_repeat_of_a_sample_a_new_view_and_eval_none():
    from biomedgpt.data.pipeline import Formatter
    from biomedgpt.data.schema import Sample
    from biomedgpt.data.skips import SkipCounter
    from biomedgpt.tokenization.unified import BiomedGPTTokenizer

    tokenizer = BiomedGPTTokenizer.load_default()
    sample = Sample(key="s1", task="classification", split="train", image=_image(), fields={"label": "ct"})

    def formatter(training: bool) -> Formatter:
        return Formatter(
            tokenizer,
            image_size=32,
            max_prompt_tokens=32,
            max_target_tokens=16,
            prompt_mode="fixed",
            training=training,
            seed=0,
            counter=SkipCounter(),
            augment=True,
        )

    train = formatter(True)
    first, second = train.format(sample)["image"], train.format(sample)["image"]
    assert not np.array_equal(first, second)
    again = formatter(True).format(sample)["image"]
    assert np.array_equal(first, again)  # deterministic for the same seed, epoch and view
    evaluation = formatter(False)
    assert np.array_equal(evaluation.format(sample)["image"], evaluation.format(sample)["image"])
