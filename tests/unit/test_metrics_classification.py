"""Classification accuracy and macro-F1 on hand-computed examples."""

from __future__ import annotations

import pytest

from biomedgpt.eval.metrics.classification import accuracy, classification_metrics, macro_f1


def test_accuracy_normalizes_names() -> None:
    assert accuracy([" Pneumonia", "normal", "COVID"], ["pneumonia", "Normal ", "normal"]) == pytest.approx(
        2 / 3
    )


def test_macro_f1_hand_computed() -> None:
    # a: P 1/1, R 1/2 -> 2/3; b: P 1/3, R 1/1 -> 1/2; c: never predicted -> 0; mean 7/18
    scores = classification_metrics(["a", "b", "b", "b"], ["a", "a", "b", "c"])
    assert scores["accuracy"] == pytest.approx(2 / 4)
    assert scores["macro_f1"] == pytest.approx(7 / 18)


def test_macro_f1_counts_labels_only_predicted() -> None:
    # "x" is never a reference: P 0, R 0/0 -> F1 0, and it still counts in the mean (sklearn's union of labels)
    assert macro_f1(["a", "x"], ["a", "a"]) == pytest.approx((2 / 3 + 0) / 2)


def test_perfect() -> None:
    assert classification_metrics(["a", "b"], ["a", "b"]) == {"accuracy": 1.0, "macro_f1": 1.0}


@pytest.mark.parametrize(
    ("predictions", "references", "message"), [(["a"], [], "length mismatch"), ([], [], "empty")]
)
def test_invalid_inputs(predictions, references, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        classification_metrics(predictions, references)
