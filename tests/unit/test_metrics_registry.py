"""The metric registry: one entry per scored task, the dispatcher, and no heavy imports."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from biomedgpt.data.schema import TASKS
from biomedgpt.eval.metrics import METRICS, compute

CASES = {
    "caption": (["the heart is normal"], ["the heart is normal"], {"bleu_1", "bleu_4", "rouge_l", "cider"}),
    "report": (
        ["Small left pleural effusion."],
        [["Small left pleural effusion.", "Left effusion."]],
        {"bleu_4", "rouge_l", "cider", "findings_micro_f1", "findings_macro_f1", "findings_micro_precision"},
    ),
    "vqa": (["yes"], ["yes"], {"accuracy", "closed_accuracy", "open_accuracy"}),
    "classification": (["normal"], ["normal"], {"accuracy", "macro_f1"}),
    "segmentation": ([np.ones((2, 2), bool)], [np.ones((2, 2), bool)], {"dice", "iou"}),
    "grounding": ([[0, 0, 4, 4]], [[0, 0, 4, 4]], {"acc@0.5", "iou"}),
    "detection": (
        [[{"box": [0, 0, 4, 4], "label": "nodule", "score": 0.5}]],
        [[{"box": [0, 0, 4, 4], "label": "nodule"}]],
        {"map@0.5", "ap@0.5/nodule"},
    ),
    "summarization": (["a short summary"], ["a short summary"], {"rouge_l"}),
}


def test_registry_covers_the_scored_tasks() -> None:
    assert set(METRICS) == set(CASES)
    assert set(METRICS) <= set(TASKS)


@pytest.mark.parametrize("task", sorted(CASES))
def test_compute_returns_floats(task: str) -> None:
    predictions, references, keys = CASES[task]
    scores = compute(task, predictions, references)
    assert keys <= set(scores)
    assert all(isinstance(v, float) for v in scores.values())


def test_compute_passes_options() -> None:
    scores = compute("vqa", ["left"], ["left"], answer_types=["closed"])
    assert scores["closed_accuracy"] == 1.0
    assert (
        compute("report", ["Possible pneumonia."], ["Pneumonia."], uncertain="ignore")["findings_micro_f1"]
        == 0.0
    )


def test_compute_unknown_task() -> None:
    with pytest.raises(ValueError, match="did you mean 'caption'"):
        compute("captions", ["a"], ["a"])


@pytest.mark.parametrize("task", sorted(CASES))
def test_compute_rejects_mismatched_and_empty(task: str) -> None:
    predictions, references, _ = CASES[task]
    with pytest.raises(ValueError, match="length mismatch"):
        compute(task, predictions, references * 2)
    with pytest.raises(ValueError, match="empty"):
        compute(task, [], [])


def test_importing_metrics_does_not_import_torch() -> None:
    code = "import sys, biomedgpt.eval.metrics; sys.exit(int('torch' in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
