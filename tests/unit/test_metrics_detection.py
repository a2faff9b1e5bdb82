"""Box IoU, grounding accuracy and mAP@0.5: hand-computed values, and COCO style against pycocotools."""

from __future__ import annotations

import contextlib
import io
import random

import numpy as np
import pytest

from biomedgpt.eval.metrics.detection import (
    average_precision,
    box_iou,
    grounding_metrics,
    mean_average_precision,
)


def test_box_iou_hand_computed() -> None:
    assert box_iou([0, 0, 10, 10], [5, 5, 15, 15]) == pytest.approx(25 / 175)
    assert box_iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert box_iou([0, 0, 10, 10], [10, 0, 20, 10]) == 0.0  # touching edges share no area
    assert box_iou([0, 0, 0, 0], [0, 0, 0, 0]) == 0.0  # zero-area union


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ([0, 0, 1], "x0, y0, x1, y1"),
        ([2, 0, 1, 1], "x1 >= x0"),
        ([0, 0, "a", 1], "4 numbers"),
        ([0, 0, float("nan"), 1], "non-finite"),
    ],
)
def test_box_iou_rejects_bad_boxes(box, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        box_iou(box, [0, 0, 1, 1])


def test_grounding_accuracy() -> None:
    # IoU 1, exactly 0.5 (counts), 1/7, and an undecodable prediction
    predictions = [[0, 0, 10, 10], [0, 0, 10, 5], [5, 5, 15, 15], None]
    references = [[0, 0, 10, 10]] * 4
    scores = grounding_metrics(predictions, references)
    assert scores["acc@0.5"] == pytest.approx(2 / 4)
    assert scores["iou"] == pytest.approx((1 + 0.5 + 1 / 7 + 0) / 4)


def test_average_precision_hand_computed() -> None:
    # ranked TP, FP, TP, TP over 3 references
    recall = np.array([1 / 3, 1 / 3, 2 / 3, 1.0])
    precision = np.array([1.0, 0.5, 2 / 3, 0.75])
    # all-point: 1/3 * 1 + 1/3 * 0.75 + 1/3 * 0.75 (precision envelope)
    assert average_precision(recall, precision, style="voc") == pytest.approx(1 / 3 + 0.25 + 0.25)
    # 101 points: r = 0..0.33 (34 points) at 1, r = 0.34..1 (67 points) at 0.75
    assert average_precision(recall, precision, style="coco") == pytest.approx((34 + 67 * 0.75) / 101)


def _det(box, label="lesion", score=None) -> dict:
    return {"box": box, "label": label} | ({} if score is None else {"score": score})


def test_voc_and_coco_matching_differ_on_a_duplicate() -> None:
    # d2's best reference is A, already taken by d1: VOC counts a false positive, COCO matches it to B
    a, b = [0, 0, 10, 10], [3, 0, 13, 10]
    predictions = [[_det([0, 0, 10, 10], score=0.9), _det([1, 0, 11, 10], score=0.8)]]
    references = [[_det(a), _det(b)]]
    voc = mean_average_precision(predictions, references, style="voc")
    assert voc["map@0.5"] == pytest.approx(0.5)  # recall 0.5 at precision 1, then nothing
    coco = mean_average_precision(predictions, references, style="coco")
    assert coco["map@0.5"] == pytest.approx(1.0)


def test_map_over_classes_hand_computed() -> None:
    predictions = [
        [
            _det([0, 0, 10, 10], "nodule", 0.9),
            _det([50, 50, 60, 60], "nodule", 0.8),
            _det([0, 0, 5, 5], "mass", 0.7),
        ],
        [_det([20, 20, 30, 30], "nodule", 0.6), _det([0, 0, 9, 9], "stent", 0.99)],
    ]
    references = [
        [_det([0, 0, 10, 10], "nodule"), _det([70, 70, 80, 80], "mass")],
        [_det([20, 20, 30, 30], "nodule"), _det([40, 40, 50, 50], "nodule")],
    ]
    scores = mean_average_precision(predictions, references)
    # nodule: TP, FP, TP over 3 references: rec 1/3, 1/3, 2/3; prec 1, 1/2, 2/3 -> 1/3 * 1 + 1/3 * 2/3
    assert scores["ap@0.5/nodule"] == pytest.approx(1 / 3 + 2 / 9)
    assert scores["ap@0.5/mass"] == 0.0  # its only detection misses
    assert "ap@0.5/stent" not in scores  # no reference: not scored
    assert scores["map@0.5"] == pytest.approx((1 / 3 + 2 / 9) / 2)


def test_missing_scores_keep_input_order() -> None:
    references = [[_det([0, 0, 10, 10])]]
    first_wrong = [[_det([50, 50, 60, 60]), _det([0, 0, 10, 10])]]  # ranked FP, TP
    first_right = [[_det([0, 0, 10, 10]), _det([50, 50, 60, 60])]]  # ranked TP, FP
    assert mean_average_precision(first_wrong, references)["map@0.5"] == pytest.approx(0.5)
    assert mean_average_precision(first_right, references)["map@0.5"] == pytest.approx(1.0)


def _coco_ap50(predictions: list, references: list, labels: list[str]) -> float:
    """AP@0.5 (all areas, 100 detections) from pycocotools' COCOeval."""
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ids = {label: i + 1 for i, label in enumerate(labels)}

    def xywh(box):
        return [box[0], box[1], box[2] - box[0], box[3] - box[1]]

    annotations = [
        {"image_id": i + 1, "category_id": ids[r["label"]], "bbox": xywh(r["box"]), "iscrowd": 0}
        | {"id": len(labels) * 1000 + i * 100 + j, "area": xywh(r["box"])[2] * xywh(r["box"])[3]}
        for i, refs in enumerate(references)
        for j, r in enumerate(refs)
    ]
    detections = [
        {"image_id": i + 1, "category_id": ids[p["label"]], "bbox": xywh(p["box"]), "score": p["score"]}
        for i, preds in enumerate(predictions)
        for p in preds
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {
            "images": [{"id": i + 1} for i in range(len(references))],
            "annotations": annotations,
            "categories": [{"id": i, "name": n} for n, i in ids.items()],
        }
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(detections), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[1])


@pytest.mark.parametrize("seed", range(6))
def test_coco_style_matches_pycocotools(seed: int) -> None:
    rng = random.Random(seed)

    def box():
        x, y = rng.uniform(0, 80), rng.uniform(0, 80)
        return [x, y, x + rng.uniform(5, 30), y + rng.uniform(5, 30)]

    def jitter(b):
        x0, y0 = b[0] + rng.uniform(-4, 4), b[1] + rng.uniform(-4, 4)
        return [x0, y0, max(x0 + 1, b[2] + rng.uniform(-4, 4)), max(y0 + 1, b[3] + rng.uniform(-4, 4))]

    labels = ["nodule", "mass", "stent"]
    references = [[_det(box(), rng.choice(labels)) for _ in range(rng.randint(1, 4))] for _ in range(5)]
    predictions = []
    for refs in references:
        preds = [_det(jitter(r["box"]), r["label"], rng.random()) for r in refs if rng.random() < 0.8]
        preds += [
            _det(jitter(r["box"]), r["label"], rng.random()) for r in refs if rng.random() < 0.3
        ]  # duplicates
        preds += [_det(box(), rng.choice(labels), rng.random()) for _ in range(rng.randint(0, 3))]
        predictions.append(preds)
    ours = mean_average_precision(predictions, references, style="coco")["map@0.5"]
    assert ours == pytest.approx(_coco_ap50(predictions, references, labels), abs=1e-6)


@pytest.mark.parametrize(
    ("predictions", "references", "kwargs", "message"),
    [
        ([[]], [[], []], {}, "length mismatch"),
        ([], [], {}, "empty"),
        ([[]], [[]], {}, "no boxes"),
        ([[{"box": [0, 0, 1, 1]}]], [[_det([0, 0, 1, 1])]], {}, "'box' and 'label'"),
        ([_det([0, 0, 1, 1])], [[_det([0, 0, 1, 1])]], {}, "list of"),
        ([[]], [[_det([0, 0, 1, 1])]], {"style": "pascal"}, "unknown style"),
    ],
)
def test_map_invalid_inputs(predictions, references, kwargs, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mean_average_precision(predictions, references, **kwargs)


def test_grounding_invalid_inputs() -> None:
    with pytest.raises(ValueError, match="length mismatch"):
        grounding_metrics([[0, 0, 1, 1]], [])
    with pytest.raises(ValueError, match="reference 0"):
        grounding_metrics([[0, 0, 1, 1]], [None])
