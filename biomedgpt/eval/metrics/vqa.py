"""VQA accuracy: exact match after answer normalization, overall and split into closed and open questions.

Medical VQA benchmarks (VQA-RAD, SLAKE, PathVQA) score generated answers by exact match and report closed
(yes/no or multiple-choice) and open questions separately, as BiomedGPT (Zhang et al. 2024) does. The
normalization follows the spirit of the VQA evaluation script (Antol et al. 2015) in a simpler form:

1. lower-case and strip;
2. a comma between two digits is dropped (`1,000` -> `1000`), a period between two digits is kept (`3.5`),
   every other punctuation character becomes a space (`x-ray` -> `x ray`, `left.` -> `left`);
3. the articles `a`, `an`, `the` are dropped;
4. whitespace runs collapse to one space.

Number words are not mapped to digits. A question is closed when its answer type says so (`answer_types`,
case-insensitive "closed"/"open", as VQA-RAD and SLAKE annotate it); without types, a question is closed when
any of its normalized reference answers is "yes" or "no".
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence

from biomedgpt.eval.metrics._checks import check_pairs, check_text

__all__ = ["is_closed_answer", "normalize_answer", "vqa_accuracy"]

_ARTICLES = frozenset({"a", "an", "the"})
_DIGIT_COMMA_RE = re.compile(r"(?<=\d),(?=\d)")
_NON_DECIMAL_PERIOD_RE = re.compile(r"(?<!\d)\.|\.(?!\d)")
_OTHER_PUNCT_RE = re.compile("[" + re.escape(string.punctuation.replace(".", "")) + "]")
_CLOSED_ANSWERS = frozenset({"yes", "no"})


def normalize_answer(answer: str) -> str:
    """Lower-case, strip punctuation (keeping decimal points) and articles, collapse whitespace."""
    text = answer.lower().strip()
    text = _DIGIT_COMMA_RE.sub("", text)
    text = _NON_DECIMAL_PERIOD_RE.sub(" ", text)
    text = _OTHER_PUNCT_RE.sub(" ", text)
    return " ".join(word for word in text.split() if word not in _ARTICLES)


def is_closed_answer(answer: str) -> bool:
    """True when the normalized answer is "yes" or "no" (the fallback rule for closed questions)."""
    return normalize_answer(answer) in _CLOSED_ANSWERS


def _answer_set(entry: object, index: int) -> set[str]:
    """Normalized acceptable answers of one question: a string or a non-empty list of strings."""
    texts = [entry] if isinstance(entry, str) else entry
    if not isinstance(texts, Sequence) or not texts:
        raise ValueError(f"vqa_accuracy: reference {index} must be a string or a non-empty list of strings")
    return {normalize_answer(check_text(t, metric="vqa_accuracy", what=f"reference {index}")) for t in texts}


def _closed_flags(answer_sets: list[set[str]], answer_types: Sequence[str] | None) -> list[bool]:
    """Whether each question is closed: from `answer_types` when given, else from the reference answers."""
    if answer_types is None:
        return [bool(answers & _CLOSED_ANSWERS) for answers in answer_sets]
    if len(answer_types) != len(answer_sets):
        raise ValueError(
            f"vqa_accuracy: length mismatch: {len(answer_types)} answer_types vs {len(answer_sets)} references"
        )
    flags = []
    for i, answer_type in enumerate(answer_types):
        kind = str(answer_type).strip().lower()
        if kind not in ("closed", "open"):
            raise ValueError(
                f"vqa_accuracy: answer_types[{i}] is {answer_type!r}; expected 'closed' or 'open'"
            )
        flags.append(kind == "closed")
    return flags


def vqa_accuracy(
    predictions: Sequence[str],
    references: Sequence,
    *,
    answer_types: Sequence[str] | None = None,
) -> dict[str, float]:
    """Exact-match accuracy of normalized answers; a prediction is right if it equals any reference answer.

    Returns accuracy, closed_accuracy, open_accuracy (NaN when the split has no question) and the split sizes
    closed_count and open_count.
    """
    check_pairs(predictions, references, metric="vqa_accuracy")
    answer_sets = [_answer_set(entry, i) for i, entry in enumerate(references)]
    closed = _closed_flags(answer_sets, answer_types)
    correct = [
        normalize_answer(check_text(p, metric="vqa_accuracy", what="a prediction")) in answers
        for p, answers in zip(predictions, answer_sets)
    ]

    def mean_where(want_closed: bool) -> tuple[float, int]:
        hits = [c for c, is_closed in zip(correct, closed) if is_closed == want_closed]
        return (sum(hits) / len(hits) if hits else math.nan), len(hits)

    closed_accuracy, closed_count = mean_where(True)
    open_accuracy, open_count = mean_where(False)
    return {
        "accuracy": sum(correct) / len(correct),
        "closed_accuracy": closed_accuracy,
        "open_accuracy": open_accuracy,
        "closed_count": float(closed_count),
        "open_count": float(open_count),
    }
