"""Segmentation overlap: Dice (F1 of pixels, Dice 1945) and IoU (Jaccard), per sample and averaged over samples.

Masks are numpy arrays of one shape per pair; any non-zero value is foreground. Conventions:

- Dice = 2|P n T| / (|P| + |T|), IoU = |P n T| / |P u T|.
- Empty prediction AND empty target: both scores are 1.0. The model was right that nothing is there, and
  this is the convention of the Medical Segmentation Decathlon and of MONAI's `ignore_empty=False`. An empty
  prediction against a non-empty target (or the reverse) scores 0.0.
- The dataset score is the mean of the per-sample scores (each image counts once, whatever its size), not
  the Dice of all pixels pooled.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from biomedgpt.eval.metrics._checks import check_pairs

__all__ = ["dice_score", "iou_score", "segmentation_metrics", "segmentation_scores"]


def _as_masks(
    prediction: object, target: object, *, index: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Both masks as bool arrays; ValueError when a shape differs or a mask is not an array-like."""
    where = "" if index is None else f" (sample {index})"
    try:
        pred = np.asarray(prediction) != 0
        true = np.asarray(target) != 0
    except (TypeError, ValueError) as error:  # ragged nested lists and the like
        raise ValueError(f"segmentation: masks must be numeric arrays{where}: {error}") from error
    if pred.ndim == 0 or true.ndim == 0:
        raise ValueError(f"segmentation: masks must be arrays, got a scalar{where}")
    if pred.shape != true.shape:
        raise ValueError(
            f"segmentation: shape mismatch{where}: prediction {pred.shape} vs target {true.shape}"
        )
    return pred, true


def dice_score(prediction: object, target: object) -> float:
    """Dice coefficient of two binary masks; 1.0 when both are empty."""
    pred, true = _as_masks(prediction, target)
    total = int(pred.sum()) + int(true.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, true).sum()) / total


def iou_score(prediction: object, target: object) -> float:
    """Intersection over union of two binary masks; 1.0 when both are empty."""
    pred, true = _as_masks(prediction, target)
    union = int(np.logical_or(pred, true).sum())
    if union == 0:
        return 1.0
    return int(np.logical_and(pred, true).sum()) / union


def segmentation_scores(predictions: Sequence, references: Sequence) -> dict[str, list[float]]:
    """Per-sample scores: {"dice": [...], "iou": [...]} in input order."""
    check_pairs(predictions, references, metric="segmentation")
    dice, iou = [], []
    for i, (prediction, target) in enumerate(zip(predictions, references)):
        pred, true = _as_masks(prediction, target, index=i)
        dice.append(dice_score(pred, true))
        iou.append(iou_score(pred, true))
    return {"dice": dice, "iou": iou}


def segmentation_metrics(predictions: Sequence, references: Sequence) -> dict[str, float]:
    """Mean Dice and mean IoU over samples: {"dice": ..., "iou": ...}."""
    scores = segmentation_scores(predictions, references)
    return {name: sum(values) / len(values) for name, values in scores.items()}
