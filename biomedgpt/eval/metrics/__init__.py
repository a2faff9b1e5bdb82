"""Evaluation metrics per task, in pure Python and numpy (no torch) so that every serving path can use them.

`METRICS` maps a task name (the names of `biomedgpt.data.schema.TASKS`) to a function
`(predictions, references, **options) -> dict[str, float]`; `compute` dispatches on it. Inputs are plain
lists: strings for text, [x0, y0, x1, y1] boxes, numpy masks. See each module for the exact definitions:

- text: BLEU-1..4, ROUGE-L, CIDEr-D as the COCO caption evaluation code computes them;
- findings: a negation-aware labeler of the 14 CheXpert observations and findings precision/recall/F1;
- vqa: exact-match accuracy after answer normalization, overall, closed and open;
- classification: accuracy and macro-F1;
- segmentation: Dice and IoU, per sample and averaged;
- detection: box IoU, grounding accuracy at IoU 0.5, mAP@0.5 (VOC or COCO style).

Text infilling is scored by `biomedgpt.eval.runner.score` with exact match and ROUGE-L; image infilling has no
metric yet. Each task's `metrics` names the main keys its scores carry (tested).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence

from biomedgpt.eval.metrics.classification import accuracy, classification_metrics, macro_f1
from biomedgpt.eval.metrics.detection import (
    average_precision,
    box_iou,
    grounding_metrics,
    mean_average_precision,
)
from biomedgpt.eval.metrics.findings import OBSERVATIONS, findings_prf, label_report
from biomedgpt.eval.metrics.segmentation import (
    dice_score,
    iou_score,
    segmentation_metrics,
    segmentation_scores,
)
from biomedgpt.eval.metrics.text import bleu, caption_metrics, cider_d, rouge_l, tokenize
from biomedgpt.eval.metrics.vqa import normalize_answer, vqa_accuracy

__all__ = [
    "METRICS",
    "OBSERVATIONS",
    "accuracy",
    "average_precision",
    "bleu",
    "box_iou",
    "caption_metrics",
    "cider_d",
    "classification_metrics",
    "compute",
    "dice_score",
    "findings_prf",
    "grounding_metrics",
    "iou_score",
    "label_report",
    "macro_f1",
    "mean_average_precision",
    "normalize_answer",
    "report_metrics",
    "rouge_l",
    "segmentation_metrics",
    "segmentation_scores",
    "summarization_metrics",
    "tokenize",
    "vqa_accuracy",
]


def report_metrics(
    predictions: Sequence[str], references: Sequence, *, uncertain: str = "positive"
) -> dict[str, float]:
    """Caption metrics plus findings P/R/F1: findings_{micro,macro}_{precision,recall,f1}.

    A reference entry may be a list of reports (the n-gram metrics use all of them); the findings are
    compared against the first one.
    """
    scores = caption_metrics(predictions, references)
    first_refs = [r if isinstance(r, str) else r[0] for r in references]  # validated by caption_metrics
    findings = findings_prf(predictions, first_refs, uncertain=uncertain)
    scores.update({f"findings_{k}": v for k, v in findings.items() if k != "per_finding"})
    return scores


def summarization_metrics(predictions: Sequence[str], references: Sequence) -> dict[str, float]:
    """Summarization is scored with ROUGE-L, as in BiomedGPT: {"rouge_l": ...}."""
    return {"rouge_l": rouge_l(predictions, references)}


METRICS: dict[str, Callable[..., dict[str, float]]] = {
    "caption": caption_metrics,
    "report": report_metrics,
    "vqa": vqa_accuracy,
    "classification": classification_metrics,
    "segmentation": segmentation_metrics,
    "grounding": grounding_metrics,
    "detection": mean_average_precision,
    "summarization": summarization_metrics,
}


def compute(task: str, predictions: Sequence, references: Sequence, **options: object) -> dict[str, float]:
    """Score `predictions` against `references` with the metrics of `task`; `options` go to its function.

    Raises ValueError for an unknown task (with a "did you mean") and for invalid inputs.
    """
    if task not in METRICS:
        close = difflib.get_close_matches(task, METRICS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"no metrics for task {task!r}{hint} (known: {', '.join(METRICS)})")
    return METRICS[task](predictions, references, **options)
