"""Synthetic data: deterministic, valid for every task, and its masks, boxes and texts agree."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from biomedgpt.data.schema import TASKS, decode_sample, encode_sample
from biomedgpt.ingest.synthetic import split_for_key, synthetic_samples


def _same(a, b) -> bool:
    arrays_equal = all(
        (x is None and y is None) or (x is not None and y is not None and np.array_equal(x, y))
        for x, y in ((a.image, b.image), (a.mask, b.mask))
    )
    return arrays_equal and (a.key, a.task, a.split, a.fields, a.extra) == (
        b.key,
        b.task,
        b.split,
        b.fields,
        b.extra,
    )


def test_deterministic_by_seed_and_prefix_stable():
    first = list(synthetic_samples(20, seed=3, image_size=64))
    again = list(synthetic_samples(20, seed=3, image_size=64))
    assert all(_same(a, b) for a, b in zip(first, again))
    prefix = list(synthetic_samples(7, seed=3, image_size=64))
    assert all(_same(a, b) for a, b in zip(prefix, first))
    other = list(synthetic_samples(20, seed=4, image_size=64))
    assert not all(np.array_equal(a.image, b.image) for a, b in zip(first, other) if a.image is not None)


def test_every_task_is_covered_and_valid_and_round_trips():
    samples = list(synthetic_samples(30, image_size=64))
    assert Counter(s.task for s in samples) == dict.fromkeys(TASKS, 3)
    for sample in samples:
        sample.validate()
        assert sample.extra["synthetic"] is True and sample.source == "biomedgpt-synthetic"
        back = decode_sample({"__key__": sample.key, **encode_sample(sample)})
        assert _same(back, sample)


def test_masks_and_boxes_agree():
    for sample in synthetic_samples(60, seed=1, image_size=96):
        lesions = sample.extra["lesions"]
        if sample.task in ("segmentation", "grounding", "detection"):
            assert lesions and sample.mask is not None and sample.mask.any()
            covered = np.zeros_like(sample.mask)
            for lesion in lesions:
                x0, y0, x1, y1 = lesion["box"]
                covered[y0:y1, x0:x1] = True
                inside = sample.mask[y0:y1, x0:x1]
                # tight: the mask touches all four edges of the box
                assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            assert not (sample.mask & ~covered).any(), "a mask pixel lies outside every box"
        if sample.task in ("grounding", "detection"):
            boxes = [b["box"] for b in sample.fields["boxes"]]
            if sample.task == "detection":
                assert boxes == [lesion["box"] for lesion in lesions]
            else:
                assert boxes[0] in [lesion["box"] for lesion in lesions]


def test_texts_agree_with_the_lesions():
    for sample in synthetic_samples(100, seed=2, image_size=64):
        lesions = sample.extra["lesions"]
        if sample.task == "caption":
            text = sample.fields["text"]
            assert text.startswith(f"an axial {sample.modality.lower()}-like image with")
            if not lesions:
                assert text.endswith("no focal lesion")
            elif len(lesions) == 1:
                lesion = lesions[0]
                assert f"one {lesion['brightness']} {lesion['shape']} lesion in the {lesion['side']}" in text
        if sample.task == "classification":
            assert (
                sample.fields["label"]
                == ("no lesion", "one lesion", "multiple lesions")[min(len(lesions), 2)]
            )
        if sample.task == "vqa" and sample.fields["question"] == "is there a lesion in the image?":
            assert sample.fields["answer"] == ("yes" if lesions else "no")
        if sample.task == "vqa" and sample.fields["question"] == "on which side is the lesion?":
            assert sample.fields["answer"] == lesions[0]["side"]


def test_lesion_side_matches_pixels():
    for sample in synthetic_samples(40, seed=5, image_size=64):
        for lesion in sample.extra["lesions"]:
            x0, _, x1, _ = lesion["box"]
            assert lesion["side"] == ("left" if (x0 + x1) / 2 < 32 else "right")


def test_splits_are_about_80_10_10_and_by_key():
    counts = Counter(split_for_key(f"synth-s0-{i:07d}") for i in range(5000))
    assert 0.77 < counts["train"] / 5000 < 0.83
    assert 0.08 < counts["val"] / 5000 < 0.12 and 0.08 < counts["test"] / 5000 < 0.12
    for sample in synthetic_samples(10):
        assert sample.split == split_for_key(sample.key)


def test_bad_arguments():
    with pytest.raises(ValueError):
        list(synthetic_samples(1, image_size=8))
    with pytest.raises(ValueError):
        list(synthetic_samples(1, seed=-1))
