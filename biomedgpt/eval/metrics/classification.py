"""Classification: accuracy and macro-F1 over class names.

Generated class names are compared after light normalization (strip, lower-case, collapse whitespace), since
the decoder writes the name as text (BiomedGPT constrains it with a trie over the class names, so this only
absorbs a leading BPE space or case). Macro-F1 follows scikit-learn's `f1_score(average="macro")` with
`zero_division=0`: the classes are the union of reference and predicted labels, per-class precision or recall
with a zero denominator is 0, and F1 is computed per class from those and then averaged with equal weights.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from biomedgpt.eval.metrics._checks import check_pairs, safe_div

__all__ = ["accuracy", "classification_metrics", "macro_f1", "normalize_label"]


def normalize_label(label: object) -> str:
    """Strip, lower-case and collapse whitespace of a class name (non-strings are converted with str)."""
    return " ".join(str(label).lower().split())


def _labels(predictions: Sequence, references: Sequence, metric: str) -> tuple[list[str], list[str]]:
    check_pairs(predictions, references, metric=metric)
    return [normalize_label(p) for p in predictions], [normalize_label(r) for r in references]


def accuracy(predictions: Sequence, references: Sequence) -> float:
    """Share of predictions equal to their reference after normalization."""
    preds, refs = _labels(predictions, references, "accuracy")
    return sum(p == r for p, r in zip(preds, refs)) / len(refs)


def macro_f1(predictions: Sequence, references: Sequence) -> float:
    """Unweighted mean of per-class F1 over every label seen in references or predictions."""
    preds, refs = _labels(predictions, references, "macro_f1")
    true_pos = Counter(p for p, r in zip(preds, refs) if p == r)
    predicted = Counter(preds)
    actual = Counter(refs)
    f1s = []
    for label in sorted(set(predicted) | set(actual)):
        precision = safe_div(true_pos[label], predicted[label])
        recall = safe_div(true_pos[label], actual[label])
        f1s.append(safe_div(2 * precision * recall, precision + recall))
    return sum(f1s) / len(f1s)


def classification_metrics(predictions: Sequence, references: Sequence) -> dict[str, float]:
    """{"accuracy": ..., "macro_f1": ...}."""
    return {"accuracy": accuracy(predictions, references), "macro_f1": macro_f1(predictions, references)}
