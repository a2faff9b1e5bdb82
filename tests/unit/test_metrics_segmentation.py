"""Dice and IoU per sample and averaged, with the empty-vs-empty convention."""

from __future__ import annotations

import numpy as np
import pytest

from biomedgpt.eval.metrics.segmentation import (
    dice_score,
    iou_score,
    segmentation_metrics,
    segmentation_scores,
)


def _mask(pixels: list[tuple[int, int]], shape: tuple[int, int] = (4, 4)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for y, x in pixels:
        mask[y, x] = True
    return mask


def test_hand_computed_overlap() -> None:
    # 4 + 4 foreground pixels, 2 shared: Dice 2*2/8, IoU 2/6
    pred = _mask([(0, 0), (0, 1), (1, 0), (1, 1)])
    true = _mask([(0, 1), (1, 1), (0, 2), (1, 2)])
    assert dice_score(pred, true) == pytest.approx(0.5)
    assert iou_score(pred, true) == pytest.approx(1 / 3)


def test_empty_vs_empty_is_one_and_empty_vs_full_is_zero() -> None:
    empty = np.zeros((3, 3), dtype=bool)
    full = np.ones((3, 3), dtype=bool)
    assert dice_score(empty, empty) == 1.0
    assert iou_score(empty, empty) == 1.0
    assert dice_score(empty, full) == 0.0
    assert iou_score(full, empty) == 0.0


def test_non_bool_masks_use_nonzero_as_foreground() -> None:
    pred = np.array([[0, 255], [255, 0]], dtype=np.uint8)
    assert dice_score(pred, pred.astype(bool)) == 1.0


def test_mean_over_samples() -> None:
    pred = _mask([(0, 0), (0, 1), (1, 0), (1, 1)])
    true = _mask([(0, 1), (1, 1), (0, 2), (1, 2)])
    empty = np.zeros((4, 4), dtype=bool)
    per_sample = segmentation_scores([pred, empty, pred], [true, empty, empty])
    assert per_sample["dice"] == pytest.approx([0.5, 1.0, 0.0])
    assert per_sample["iou"] == pytest.approx([1 / 3, 1.0, 0.0])
    means = segmentation_metrics([pred, empty, pred], [true, empty, empty])
    assert means == pytest.approx({"dice": 0.5, "iou": 4 / 9})


@pytest.mark.parametrize(
    ("predictions", "references", "message"),
    [
        ([np.zeros((2, 2))], [np.zeros((2, 3))], "shape mismatch"),
        ([np.zeros((2, 2))], [], "length mismatch"),
        ([], [], "empty"),
        ([1], [1], "scalar"),
    ],
)
def test_invalid_inputs(predictions, references, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        segmentation_metrics(predictions, references)
