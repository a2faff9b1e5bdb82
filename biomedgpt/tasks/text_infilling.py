"""Text infilling (text only): ` what is the complete text of " {masked} "?` -> the original text.

Masking follows OFA's `add_whole_word_mask` at its defaults (mask_ratio 0.3, span-poisson with
lambda 3, replace_length 1): spans of whole words, their lengths drawn from Poisson(3), are chosen
until 30% of the words (rounded up) are covered, and each span becomes ONE `<mask>` token. OFA does
this on BPE word starts; here it is done on whitespace words, which is the same for BPE text that
marks word starts with a leading space. The masking rng comes from the pipeline (seeded per sample),
so evaluation prompts are reproducible. Scored with exact match and ROUGE-L.
"""

from __future__ import annotations

import math
import random
from typing import Any

from biomedgpt.data.schema import Sample
from biomedgpt.tasks.base import Task, clean_text, text_target
from biomedgpt.tokenization.layout import MASK_TOKEN

MASK_RATIO = 0.3
POISSON_LAMBDA = 3.0


def _poisson(rng: random.Random, lam: float) -> int:
    """Knuth's method; fine for small lambda."""
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def mask_words(text: str, rng: random.Random, *, ratio: float = MASK_RATIO) -> str:
    """Replace spans covering ceil(ratio * words) words with one `<mask>` each."""
    words = clean_text(text).split(" ")
    if not words or words == [""]:
        return MASK_TOKEN
    budget = math.ceil(len(words) * ratio)
    masked = [False] * len(words)
    while budget > 0:
        length = min(max(_poisson(rng, POISSON_LAMBDA), 1), budget)
        start = rng.randrange(len(words))
        for i in range(start, min(start + length, len(words))):
            if not masked[i]:
                masked[i] = True
                budget -= 1
    out: list[str] = []
    for word, is_masked in zip(words, masked):
        if not is_masked:
            out.append(word)
        elif not out or out[-1] != MASK_TOKEN:
            out.append(MASK_TOKEN)
    return " ".join(out)


class TextInfillingTask(Task):
    name = "text_infilling"
    prompt = ' what is the complete text of " {masked} "?'
    train_templates = (
        prompt,
        ' fill in the blanks: " {masked} "',
        ' complete the text " {masked} ".',
        ' restore the masked words in " {masked} ".',
        ' what is the original text of " {masked} "?',
        ' reconstruct the sentence " {masked} ".',
    )
    eval_templates = (
        ' recover the full sentence from " {masked} ".',
        ' what does " {masked} " say without gaps?',
        ' write out " {masked} " with the missing words filled in.',
    )
    needs_image = False
    metrics = ("exact_match", "rouge_l")

    def reference(self, sample: Sample) -> tuple[Any, dict[str, Any]]:
        return sample.fields["text"], {}

    def score(self, predictions: list, references: list, options: list[dict[str, Any]]) -> dict[str, float]:
        """Exact match (after VQA's answer normalization) and ROUGE-L against the original text."""
        from biomedgpt.eval.metrics import rouge_l, vqa_accuracy

        exact = vqa_accuracy(predictions, references)["accuracy"]
        return {"exact_match": exact, "rouge_l": rouge_l(predictions, references)}

    def prompt_fields(self, sample: Sample, *, rng: random.Random | None = None) -> dict[str, str]:
        return {"masked": mask_words(sample.fields["text"], rng or random.Random(sample.key))}

    def build_target(
        self, sample: Sample, tokenizer: Any, *, image_size: int | None = None, max_tokens: int | None = None
    ) -> list[int]:
        return text_target(tokenizer, sample.fields["text"], max_tokens=max_tokens)


TASK = TextInfillingTask()
