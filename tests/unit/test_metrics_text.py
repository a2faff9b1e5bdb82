"""Caption metrics against the COCO caption evaluation code (pycocoevalcap) and against hand-computed values.

pycocoevalcap's BLEU, ROUGE-L and CIDEr-D scorers are pure Python; they take pre-tokenized strings, so they
get our tokens joined by spaces, exactly what coco-caption hands them after its (Java) PTB tokenizer.
"""

from __future__ import annotations

import math
import random

import pytest

from biomedgpt.eval.metrics.text import bleu, caption_metrics, cider_d, rouge_l, tokenize

CORPORA = {
    "single_reference": (
        ["the heart size is normal", "small left pleural effusion", "no pneumothorax is seen"],
        ["heart size is normal", "there is a small left pleural effusion", "no pneumothorax"],
    ),
    "multi_reference": (
        [
            "A chest X-ray showing cardiomegaly.",
            "The lungs are clear, no effusion.",
            "Right lower lobe opacity, possibly pneumonia.",
            "Normal study.",
        ],
        [
            ["Chest radiograph shows an enlarged heart.", "Cardiomegaly on a chest X-ray."],
            [
                "Lungs are clear.",
                "No pleural effusion; the lungs are clear.",
                "Clear lungs without effusion.",
            ],
            ["Opacity in the right lower lobe, concerning for pneumonia.", "Right basilar pneumonia."],
            ["No acute cardiopulmonary process.", "Normal chest radiograph.", "Normal study."],
        ],
    ),
    "short_and_long": (
        [
            "effusion",
            "there is a large right sided pleural effusion with adjacent atelectasis and a small pneumothorax",
        ],
        [
            ["small effusion", "pleural effusion"],
            ["large right pleural effusion", "right effusion and atelectasis"],
        ],
    ),
}


def _random_corpus(seed: int) -> tuple[list[str], list[list[str]]]:
    rng = random.Random(seed)
    vocab = [
        "the",
        "a",
        "heart",
        "lungs",
        "are",
        "clear",
        "no",
        "effusion",
        "pleural",
        "small",
        "left",
        "right",
        "is",
        "normal",
        "size",
        "of",
        "pneumothorax",
    ]
    n = rng.randint(5, 30)

    def sentence() -> str:
        return " ".join(rng.choices(vocab, k=rng.randint(1, 14)))

    return [sentence() for _ in range(n)], [[sentence() for _ in range(rng.randint(1, 5))] for _ in range(n)]


def _coco_scores(predictions: list[str], references: list) -> dict[str, float]:
    bleu_mod = pytest.importorskip("pycocoevalcap.bleu.bleu")
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    refs = [[r] if isinstance(r, str) else r for r in references]
    gts = {i: [" ".join(tokenize(r)) for r in rs] for i, rs in enumerate(refs)}
    res = {i: [" ".join(tokenize(p))] for i, p in enumerate(predictions)}
    scores, _ = bleu_mod.Bleu(4).compute_score(gts, res, verbose=0)
    out = {f"bleu_{n + 1}": s for n, s in enumerate(scores)}
    out["rouge_l"] = float(Rouge().compute_score(gts, res)[0])
    out["cider"] = float(Cider().compute_score(gts, res)[0])
    return out


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_matches_pycocoevalcap_on_small_corpora(name: str) -> None:
    predictions, references = CORPORA[name]
    ours = caption_metrics(predictions, references)
    theirs = _coco_scores(predictions, references)
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-6), key


@pytest.mark.parametrize("seed", range(8))
def test_matches_pycocoevalcap_on_random_corpora(seed: int) -> None:
    predictions, references = _random_corpus(seed)
    ours = caption_metrics(predictions, references)
    theirs = _coco_scores(predictions, references)
    for key in ours:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-6), key


def test_identical_candidate_and_reference() -> None:
    text = ["the heart size is normal and the lungs are clear"]
    scores = bleu(text, text)
    for n in range(1, 5):
        assert scores[f"bleu_{n}"] == pytest.approx(1.0, abs=1e-6)
    assert rouge_l(text, text) == pytest.approx(1.0)


def test_bleu_hand_computed() -> None:
    # unigram 5/6, bigram 3/5, trigram 1/4, no 4-gram; equal lengths, so no brevity penalty
    scores = bleu(["the cat sat on the mat"], ["the cat is on the mat"])
    assert scores["bleu_1"] == pytest.approx(5 / 6, abs=1e-6)
    assert scores["bleu_2"] == pytest.approx(math.sqrt(5 / 6 * 3 / 5), abs=1e-6)
    assert scores["bleu_3"] == pytest.approx(0.5, abs=1e-6)
    assert scores["bleu_4"] < 1e-4  # zero 4-gram matches, only bleu_scorer's 1e-15 guard remains


def test_bleu_brevity_penalty_hand_computed() -> None:
    # 2 candidate tokens against 6 reference tokens: BP = exp(1 - 6/2)
    assert bleu(["the cat"], ["the cat sat on the mat"])["bleu_1"] == pytest.approx(math.exp(-2), abs=1e-6)


def test_bleu_closest_reference_length_ties_go_to_the_shorter() -> None:
    # candidate 4 tokens, references 2 and 6 tokens: both 2 away; the shorter one (2) gives no penalty
    assert bleu(["a b c d"], [["a b", "a b c d e f"]])["bleu_1"] == pytest.approx(1.0, abs=1e-6)


def test_rouge_l_hand_computed() -> None:
    # LCS "the cat on the mat" = 5 of 6 tokens on both sides: P = R = F = 5/6
    assert rouge_l(["the cat sat on the mat"], ["the cat is on the mat"]) == pytest.approx(5 / 6)


def test_cider_d_hand_computed() -> None:
    # two images, each candidate equal to its only reference, no shared n-grams: every 1..4-gram cosine is 1,
    # so 10 * mean(1, 1, 1, 1) = 10; with 2-token captions the 3- and 4-gram terms are 0: 10 * 2/4 = 5
    texts = ["the heart is normal", "lungs are clear today"]
    assert cider_d(texts, texts) == pytest.approx(10.0)
    assert cider_d(["heart normal", "lungs clear"], ["heart normal", "lungs clear"]) == pytest.approx(5.0)


def test_cider_d_single_image_is_zero() -> None:
    # IDF is log(N / df) with N = 1 image, so every weight is 0 (as in coco-caption)
    assert cider_d(["heart normal"], ["heart normal"]) == 0.0


def test_tokenize() -> None:
    assert tokenize("The X-ray shows a 3.5 cm nodule, isn't it?") == [
        "the",
        "x-ray",
        "shows",
        "a",
        "3.5",
        "cm",
        "nodule",
        "isn",
        "t",
        "it",
    ]
    assert tokenize("No effusion.\nHeart: normal (stable).") == [
        "no",
        "effusion",
        "heart",
        "normal",
        "stable",
    ]


def test_punctuation_and_case_do_not_change_scores() -> None:
    assert caption_metrics(["No effusion."], ["no effusion"]) == caption_metrics(
        ["no effusion"], ["no effusion"]
    )


def test_empty_candidate_scores_zero() -> None:
    scores = caption_metrics(["", "lungs clear"], ["heart normal", "lungs clear"])
    assert scores["rouge_l"] == pytest.approx(0.5)
    assert all(math.isfinite(v) for v in scores.values())


@pytest.mark.parametrize(
    ("predictions", "references", "message"),
    [
        (["a"], ["a", "b"], "length mismatch"),
        ([], [], "empty"),
        (["a"], [[]], "non-empty list"),
        ([1], ["a"], "must be a string"),
        ("a", ["a"], "must be a list"),
    ],
)
def test_invalid_inputs(predictions, references, message: str) -> None:
    for metric in (bleu, rouge_l, cider_d, caption_metrics):
        with pytest.raises(ValueError, match=message):
            metric(predictions, references)
