"""Summarization (text only): OFA/BiomedGPT's ` what is the summary of article " {text} "?` -> the summary.

The source text sits inside the prompt, so long reports are cut by the pipeline's prompt limit
(OFA cuts the source to `max_src_length` words the same way). Scored with ROUGE-L.
"""

from __future__ import annotations

import random
from typing import Any

from biomedgpt.data.schema import Sample
from biomedgpt.tasks.base import Task, clean_text, text_target


class SummarizationTask(Task):
    name = "summarization"
    prompt = ' what is the summary of article " {text} "?'
    train_templates = (
        prompt,
        ' summarize " {text} ".',
        ' give the impression for " {text} ".',
        ' what is the main conclusion of " {text} "?',
        ' write a one-line summary of " {text} ".',
        ' condense " {text} " into a short summary.',
    )
    eval_templates = (
        ' briefly summarize the following: " {text} ".',
        ' what is the gist of " {text} "?',
        ' shorten " {text} " to its key point.',
    )
    needs_image = False
    metrics = ("rouge_l",)

    def reference(self, sample: Sample) -> tuple[Any, dict[str, Any]]:
        return sample.fields["summary"], {}

    def score(self, predictions: list, references: list, options: list[dict[str, Any]]) -> dict[str, float]:
        from biomedgpt.eval.metrics import summarization_metrics

        return summarization_metrics(predictions, references)

    def prompt_fields(self, sample: Sample, *, rng: random.Random | None = None) -> dict[str, str]:
        return {"text": clean_text(sample.fields["text"])}

    def build_target(
        self, sample: Sample, tokenizer: Any, *, image_size: int | None = None, max_tokens: int | None = None
    ) -> list[int]:
        return text_target(tokenizer, sample.fields["summary"], max_tokens=max_tokens)


TASK = SummarizationTask()
