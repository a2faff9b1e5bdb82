"""Caption and report metrics: BLEU-1..4, ROUGE-L and CIDEr-D, as the COCO caption evaluation computes them.

The scorers reproduce the pure-Python scorers of the COCO caption evaluation code (coco-caption, packaged as
`pycocoevalcap`; Chen et al. 2015, "Microsoft COCO Captions: Data Collection and Evaluation Server"):

- BLEU (Papineni et al. 2002) as in `bleu/bleu_scorer.py`: corpus-level modified n-gram precisions (clipped by
  the maximum count over an image's references), the brevity penalty from the sum over images of the reference
  length closest to the candidate length (ties go to the shorter reference), and that file's guards against
  zero counts (`tiny` = 1e-15 added to the matches, `small` = 1e-9 to the guesses).
- ROUGE-L (Lin 2004) as in `rouge/rouge.py`: per image, the LCS precision and recall against each reference,
  each maximised over the references, combined as an F-measure with beta = 1.2; the corpus score is the mean
  over images.
- CIDEr-D (Vedantam et al. 2015) as in `cider/cider_scorer.py`: TF-IDF vectors of 1..4-grams with document
  frequencies counted over the references of the evaluated set (one document per image), per-n cosine
  similarity with the candidate's weights clipped at the reference's, a Gaussian length penalty (sigma = 6),
  the mean over n, the mean over references, times 10; the corpus score is the mean over images.

Tokenization. coco-caption runs Stanford's Java PTBTokenizer (lower-cased) and then drops punctuation tokens.
We need no Java, so `tokenize` is a fallback that gives the same tokens on ordinary prose:

1. lower-case the text (`str.lower`);
2. a token is a maximal run of letters and digits, where a single `-` or `.` between two letters/digits stays
   inside the token (`x-ray`, `3.5`, `t2-weighted`);
3. every other character (whitespace and all other punctuation, including apostrophes, slashes, brackets)
   separates tokens and is dropped.

It differs from PTB + punctuation removal only on clitics and symbols: PTB keeps `'s` and `n't` as tokens and
`/`, `(`...`)` handling differs; we give `patient s`, `don t`. The scorers take the tokens joined by single
spaces, exactly what coco-caption feeds its own scorers after tokenization.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

from biomedgpt.eval.metrics._checks import check_pairs, check_text

__all__ = ["bleu", "caption_metrics", "cider_d", "rouge_l", "tokenize"]

_TOKEN_RE = re.compile(r"[^\W_]+(?:[-.][^\W_]+)*")
_BLEU_TINY = 1e-15  # bleu_scorer.py: added to the matches so that a zero count gives ~0, not 0/0
_BLEU_SMALL = 1e-9  # bleu_scorer.py: added to the guesses and the reference length


def tokenize(text: str) -> list[str]:
    """Lower-case `text` and split it into word tokens, dropping punctuation (module docstring)."""
    return _TOKEN_RE.findall(text.lower())


def _ngram_counts(tokens: Sequence[str], max_n: int) -> Counter:
    """Counts of every 1..max_n-gram of `tokens`, keyed by tuple."""
    counts: Counter = Counter()
    for n in range(1, max_n + 1):
        for i in range(len(tokens) - n + 1):
            counts[tuple(tokens[i : i + n])] += 1
    return counts


def _prepare(predictions: Sequence, references: Sequence, *, metric: str) -> tuple[list, list]:
    """Tokenize candidates and references; a reference entry is a string or a non-empty list of strings."""
    check_pairs(predictions, references, metric=metric)
    candidates = [tokenize(check_text(p, metric=metric, what="a prediction")) for p in predictions]
    reference_sets = []
    for i, entry in enumerate(references):
        texts = [entry] if isinstance(entry, str) else entry
        if not isinstance(texts, Sequence) or not texts:
            raise ValueError(f"{metric}: reference {i} must be a string or a non-empty list of strings")
        reference_sets.append([tokenize(check_text(t, metric=metric, what=f"reference {i}")) for t in texts])
    return candidates, reference_sets


def bleu(predictions: Sequence[str], references: Sequence, *, max_n: int = 4) -> dict[str, float]:
    """Corpus BLEU-1..max_n: {"bleu_1": ..., "bleu_4": ...}. references[i] is a string or a list of strings."""
    candidates, reference_sets = _prepare(predictions, references, metric="bleu")
    matches = [0] * max_n
    guesses = [0] * max_n
    candidate_length = 0
    reference_length = 0
    for tokens, refs in zip(candidates, reference_sets):
        max_ref_counts: Counter = Counter()
        for ref in refs:
            max_ref_counts |= _ngram_counts(ref, max_n)  # element-wise max over the references
        for ngram, count in _ngram_counts(tokens, max_n).items():
            matches[len(ngram) - 1] += min(count, max_ref_counts[ngram])
        for n in range(1, max_n + 1):
            guesses[n - 1] += max(0, len(tokens) - n + 1)
        candidate_length += len(tokens)
        # closest reference length; on a tie the shorter one (min over (distance, length) pairs)
        reference_length += min((abs(len(ref) - len(tokens)), len(ref)) for ref in refs)[1]
    ratio = (candidate_length + _BLEU_TINY) / (reference_length + _BLEU_SMALL)
    brevity = math.exp(1 - 1 / ratio) if ratio < 1 else 1.0
    scores: dict[str, float] = {}
    product = 1.0
    for n in range(1, max_n + 1):
        product *= (matches[n - 1] + _BLEU_TINY) / (guesses[n - 1] + _BLEU_SMALL)
        scores[f"bleu_{n}"] = product ** (1 / n) * brevity
    return scores


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (O(len(a) * len(b)) dynamic program)."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for token_a in a:
        current = [0]
        for j, token_b in enumerate(b):
            current.append(previous[j] + 1 if token_a == token_b else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def _rouge_l_single(candidate: list[str], refs: list[list[str]], beta: float) -> float:
    """ROUGE-L of one candidate: best LCS precision and best LCS recall over the references, F_beta of the two.

    An empty candidate or reference gives precision/recall 0 for that pair (coco-caption would split "" into
    one empty token instead).
    """
    precisions, recalls = [], []
    for ref in refs:
        lcs = _lcs_length(ref, candidate)
        precisions.append(lcs / len(candidate) if candidate else 0.0)
        recalls.append(lcs / len(ref) if ref else 0.0)
    precision, recall = max(precisions), max(recalls)
    if precision == 0 or recall == 0:
        return 0.0
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)


def rouge_l(predictions: Sequence[str], references: Sequence, *, beta: float = 1.2) -> float:
    """Mean over images of ROUGE-L (LCS F-measure, beta 1.2, precision and recall each maxed over references)."""
    candidates, reference_sets = _prepare(predictions, references, metric="rouge_l")
    scores = [_rouge_l_single(c, refs, beta) for c, refs in zip(candidates, reference_sets)]
    return sum(scores) / len(scores)


def _tfidf(counts: Counter, document_frequency: Counter, log_num_docs: float, max_n: int) -> tuple:
    """Per-n TF-IDF weights {ngram: tf * (log N - log max(1, df))} and their L2 norms."""
    vectors: list[dict] = [{} for _ in range(max_n)]
    norms = [0.0] * max_n
    for ngram, term_frequency in counts.items():
        weight = term_frequency * (log_num_docs - math.log(max(1.0, document_frequency[ngram])))
        vectors[len(ngram) - 1][ngram] = weight
        norms[len(ngram) - 1] += weight**2
    return vectors, [math.sqrt(x) for x in norms]


def _cider_similarity(hyp: tuple, ref: tuple, length_delta: int, *, sigma: float) -> list[float]:
    """Per-n clipped cosine similarity times the Gaussian length penalty (CIDEr-D, eq. 5 of the paper)."""
    (hyp_vectors, hyp_norms), (ref_vectors, ref_norms) = hyp, ref
    penalty = math.exp(-(length_delta**2) / (2 * sigma**2))
    values = []
    for n, hyp_vector in enumerate(hyp_vectors):
        ref_vector = ref_vectors[n]
        value = sum(min(w, ref_vector.get(g, 0.0)) * ref_vector.get(g, 0.0) for g, w in hyp_vector.items())
        if hyp_norms[n] != 0 and ref_norms[n] != 0:
            value /= hyp_norms[n] * ref_norms[n]
        values.append(value * penalty)
    return values


def cider_d(predictions: Sequence[str], references: Sequence, *, max_n: int = 4, sigma: float = 6.0) -> float:
    """Corpus CIDEr-D (mean of the per-image scores), document frequencies from these references.

    The length penalty uses the difference of the token counts; coco-caption counts bigrams instead, which
    differs only when one side is empty, and then the similarity is 0 anyway.
    """
    candidates, reference_sets = _prepare(predictions, references, metric="cider_d")
    ref_counts = [[_ngram_counts(ref, max_n) for ref in refs] for refs in reference_sets]
    document_frequency: Counter = Counter()
    for counts_of_image in ref_counts:
        document_frequency.update(set().union(*counts_of_image))
    log_num_docs = math.log(len(reference_sets))
    scores = []
    for tokens, refs, counts_of_image in zip(candidates, reference_sets, ref_counts):
        hyp = _tfidf(_ngram_counts(tokens, max_n), document_frequency, log_num_docs, max_n)
        totals = [0.0] * max_n
        for ref, counts in zip(refs, counts_of_image):
            ref_tfidf = _tfidf(counts, document_frequency, log_num_docs, max_n)
            similarity = _cider_similarity(hyp, ref_tfidf, len(tokens) - len(ref), sigma=sigma)
            totals = [t + s for t, s in zip(totals, similarity)]
        scores.append(sum(totals) / max_n / len(refs) * 10.0)
    return sum(scores) / len(scores)


def caption_metrics(predictions: Sequence[str], references: Sequence) -> dict[str, float]:
    """BLEU-1..4, ROUGE-L and CIDEr-D of generated captions/reports: keys bleu_1..bleu_4, rouge_l, cider."""
    scores = bleu(predictions, references)
    scores["rouge_l"] = rouge_l(predictions, references)
    scores["cider"] = cider_d(predictions, references)
    return scores
