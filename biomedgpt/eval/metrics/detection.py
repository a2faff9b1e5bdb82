"""Box metrics: IoU, grounding accuracy at IoU >= 0.5, and detection mAP@0.5 (PASCAL VOC or COCO style).

Boxes are [x0, y0, x1, y1] in continuous pixel coordinates (x1 >= x0, y1 >= y0); the area is
(x1 - x0) * (y1 - y0), with no "+1" of the old VOC devkit, as in COCO and as our `<bin>` boxes mean.

Grounding (OFA/BiomedGPT visual grounding): one predicted box per sample against one reference box; a sample
is correct when IoU >= threshold (0.5). A prediction of None (the output did not decode to a box) has IoU 0.

Detection: per image a list of detections {"box": [...], "label": ..., "score": float} and a list of
references {"box": [...], "label": ...}. A missing score counts as 1.0 (generative detectors emit no
confidence); ties keep input order (image by image, detection by detection), so the ranking is
deterministic. Per class, detections are ranked by score and matched greedily to reference boxes of that
class in the same image at IoU >= 0.5:

- style="voc" (Everingham et al. 2010, devkit 2010+): a detection takes the reference box with the highest
  IoU; if that box is already taken it is a false positive. AP is the all-point interpolated area under the
  precision-recall curve: precision made monotone from the right, summed over the recall steps.
- style="coco" (Lin et al. 2014, pycocotools COCOeval): a detection takes the best still-unmatched reference
  box; AP is the mean of the monotone precision at the 101 recall points 0, 0.01, ..., 1. No per-image cap on
  detections (COCOeval keeps the top 100 per image and class), no crowd boxes, no area ranges.

mAP is the mean AP over the classes that have at least one reference box; detections of other classes count
only as false positives of nothing (they are not scored). A class with references but no detections has AP 0.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

from biomedgpt.eval.metrics._checks import check_pairs

__all__ = ["average_precision", "box_iou", "grounding_metrics", "mean_average_precision"]

Box = tuple[float, float, float, float]


def _as_box(box: object, *, what: str = "box") -> Box:
    """A validated (x0, y0, x1, y1) tuple of floats; ValueError names what is wrong."""
    if isinstance(box, str | bytes) or not isinstance(box, Sequence | np.ndarray) or len(box) != 4:
        raise ValueError(f"{what} must be [x0, y0, x1, y1], got {box!r}")
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what} must hold 4 numbers, got {box!r}") from error
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ValueError(f"{what} has a non-finite coordinate: {box!r}")
    if x1 < x0 or y1 < y0:
        raise ValueError(f"{what} must have x1 >= x0 and y1 >= y0, got {box!r}")
    return x0, y0, x1, y1


def box_iou(box_a: Sequence[float], box_b: Sequence[float]) -> float:
    """Intersection over union of two [x0, y0, x1, y1] boxes; 0.0 when the union has zero area."""
    ax0, ay0, ax1, ay1 = _as_box(box_a, what="box_a")
    bx0, by0, bx1, by1 = _as_box(box_b, what="box_b")
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0 else 0.0


def grounding_metrics(
    predictions: Sequence, references: Sequence, *, threshold: float = 0.5
) -> dict[str, float]:
    """Visual grounding: {"acc@0.5": share with IoU >= threshold, "iou": mean IoU}; None predictions score 0."""
    check_pairs(predictions, references, metric="grounding")
    ious = []
    for i, (prediction, reference) in enumerate(zip(predictions, references)):
        target = _as_box(reference, what=f"grounding: reference {i}")
        ious.append(
            0.0 if prediction is None else box_iou(_as_box(prediction, what=f"prediction {i}"), target)
        )
    return {
        f"acc@{threshold:g}": sum(iou >= threshold for iou in ious) / len(ious),
        "iou": sum(ious) / len(ious),
    }


def average_precision(recall: np.ndarray, precision: np.ndarray, *, style: str = "voc") -> float:
    """AP from a precision-recall curve ranked by score: VOC all-point or COCO 101-point interpolation."""
    if style == "voc":
        mrec = np.concatenate(([0.0], recall, [1.0]))
        mpre = np.concatenate(([0.0], precision, [0.0]))
        mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope, monotone from the right
        steps = np.where(mrec[1:] != mrec[:-1])[0]
        return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))
    if style == "coco":
        envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
        indices = np.searchsorted(recall, np.linspace(0.0, 1.0, 101), side="left")
        sampled = [envelope[i] if i < len(envelope) else 0.0 for i in indices]
        return float(np.mean(sampled))
    raise ValueError(f"unknown AP style {style!r}; expected 'voc' or 'coco'")


def _parse_image(entries: object, index: int, *, kind: str) -> list[tuple[Box, object, float]]:
    """One image's detections or references as (box, label, score) triples."""
    if isinstance(entries, str | bytes | Mapping) or not isinstance(entries, Sequence):
        raise ValueError(f"detection: {kind} {index} must be a list of {{'box', 'label'}} dicts")
    parsed = []
    for j, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or "box" not in entry or "label" not in entry:
            raise ValueError(f"detection: {kind} {index}[{j}] must be a dict with 'box' and 'label'")
        box = _as_box(entry["box"], what=f"detection: {kind} {index}[{j}] box")
        score = float(entry.get("score", 1.0)) if kind == "prediction" else 1.0
        parsed.append((box, entry["label"], score))
    return parsed


def _match_class(
    detections: list[tuple[int, Box, float]], truths: dict[int, list[Box]], threshold: float, style: str
) -> np.ndarray:
    """True-positive flag per detection (already ranked), greedy matching as the style prescribes."""
    taken = {image: [False] * len(boxes) for image, boxes in truths.items()}
    flags = np.zeros(len(detections), dtype=bool)
    for k, (image, box, _score) in enumerate(detections):
        ious = [box_iou(box, truth) for truth in truths.get(image, [])]
        if style == "voc":
            candidates = range(len(ious))
        else:  # coco: only boxes nobody has taken yet compete
            candidates = [m for m in range(len(ious)) if not taken[image][m]]
        best = max(candidates, key=lambda m: ious[m], default=None)
        if best is not None and ious[best] >= threshold and not taken[image][best]:
            taken[image][best] = True
            flags[k] = True
    return flags


def mean_average_precision(
    predictions: Sequence, references: Sequence, *, iou_threshold: float = 0.5, style: str = "voc"
) -> dict[str, float]:
    """Detection mAP at one IoU threshold: {"map@0.5": ..., "ap@0.5/<label>": ... per reference class}."""
    check_pairs(predictions, references, metric="detection")
    if style not in ("voc", "coco"):
        raise ValueError(f"detection: unknown style {style!r}; expected 'voc' or 'coco'")
    detections: dict[object, list[tuple[int, Box, float]]] = defaultdict(list)
    truths: dict[object, dict[int, list[Box]]] = defaultdict(lambda: defaultdict(list))
    for i, (image_preds, image_refs) in enumerate(zip(predictions, references)):
        for box, label, score in _parse_image(image_preds, i, kind="prediction"):
            detections[label].append((i, box, score))
        for box, label, _ in _parse_image(image_refs, i, kind="reference"):
            truths[label][i].append(box)
    if not truths:
        raise ValueError("detection: the references hold no boxes; mAP is undefined")
    name = f"{iou_threshold:g}"
    scores: dict[str, float] = {}
    for label, truth_by_image in truths.items():
        ranked = sorted(detections.get(label, []), key=lambda d: -d[2])  # stable: ties keep input order
        hits = _match_class(ranked, truth_by_image, iou_threshold, style)
        true_pos = np.cumsum(hits)
        false_pos = np.cumsum(~hits)
        recall = true_pos / sum(len(boxes) for boxes in truth_by_image.values())
        precision = true_pos / np.maximum(true_pos + false_pos, np.finfo(float).eps)
        scores[f"ap@{name}/{label}"] = average_precision(recall, precision, style=style)
    return {f"map@{name}": sum(scores.values()) / len(scores), **scores}
