"""Input checks shared by the metric modules: every metric takes two parallel lists."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def check_pairs(predictions: Sequence, references: Sequence, *, metric: str) -> None:
    """Raise ValueError unless `predictions` and `references` are non-empty lists of equal length."""
    for name, value in (("predictions", predictions), ("references", references)):
        if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
            raise ValueError(f"{metric}: {name} must be a list, got {type(value).__name__}")
    if len(predictions) != len(references):
        raise ValueError(
            f"{metric}: length mismatch: {len(predictions)} predictions vs {len(references)} references"
        )
    if not predictions:
        raise ValueError(f"{metric}: predictions and references are empty")


def check_text(value: object, *, metric: str, what: str) -> str:
    """Return `value` if it is a string, else raise ValueError naming `what`."""
    if not isinstance(value, str):
        raise ValueError(f"{metric}: {what} must be a string, got {type(value).__name__}")
    return value


def safe_div(numerator: float, denominator: float) -> float:
    """numerator / denominator, or 0.0 when the denominator is 0 (sklearn's zero_division=0)."""
    return numerator / denominator if denominator else 0.0
