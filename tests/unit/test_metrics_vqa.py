"""VQA answer normalization and accuracy overall, closed and open."""

from __future__ import annotations

import math

import pytest

from biomedgpt.eval.metrics.vqa import is_closed_answer, normalize_answer, vqa_accuracy


@pytest.mark.parametrize(
    ("answer", "normalized"),
    [
        ("Yes", "yes"),
        ("  The Left Lung. ", "left lung"),
        ("an X-ray", "x ray"),
        ("3.5 cm", "3.5 cm"),
        ("1,000", "1000"),
        ("right, upper lobe!", "right upper lobe"),
        ("a", ""),
    ],
)
def test_normalize_answer(answer: str, normalized: str) -> None:
    assert normalize_answer(answer) == normalized


def test_is_closed_answer() -> None:
    assert is_closed_answer(" Yes.")
    assert is_closed_answer("NO")
    assert not is_closed_answer("left lung")


def test_accuracy_with_inferred_split() -> None:
    predictions = ["yes", "No.", "the liver", "brain", "CT"]
    references = ["Yes", "yes", "Liver", "lung", ["ct", "computed tomography"]]
    scores = vqa_accuracy(predictions, references)
    assert scores["accuracy"] == pytest.approx(3 / 5)
    assert scores["closed_accuracy"] == pytest.approx(1 / 2)
    assert scores["open_accuracy"] == pytest.approx(2 / 3)
    assert (scores["closed_count"], scores["open_count"]) == (2.0, 3.0)


def test_accuracy_with_given_answer_types() -> None:
    predictions = ["left", "yes", "mri"]
    references = ["left", "no", "ct"]
    scores = vqa_accuracy(predictions, references, answer_types=["CLOSED", "closed", "OPEN"])
    assert scores["closed_accuracy"] == pytest.approx(1 / 2)
    assert scores["open_accuracy"] == 0.0


def test_empty_split_is_nan() -> None:
    scores = vqa_accuracy(["yes"], ["yes"])
    assert scores["closed_accuracy"] == 1.0
    assert math.isnan(scores["open_accuracy"])
    assert scores["open_count"] == 0.0


@pytest.mark.parametrize(
    ("predictions", "references", "kwargs", "message"),
    [
        (["a"], ["a", "b"], {}, "length mismatch"),
        ([], [], {}, "empty"),
        (["a"], [[]], {}, "non-empty list"),
        ([None], ["a"], {}, "must be a string"),
        (["a"], ["a"], {"answer_types": ["closed", "open"]}, "answer_types"),
        (["a"], ["a"], {"answer_types": ["yes/no"]}, "expected 'closed' or 'open'"),
    ],
)
def test_invalid_inputs(predictions, references, kwargs, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        vqa_accuracy(predictions, references, **kwargs)
