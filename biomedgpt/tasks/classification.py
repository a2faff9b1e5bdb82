"""Image classification: BiomedGPT's prompt ` what does the image describe?` -> the class name.

Decoded closed-set with a trie over the class names of the TRAIN split (OFA's ImageNet recipe), so
the output is always a known class. Scored with accuracy and macro-F1.
"""

from __future__ import annotations

from typing import Any

from biomedgpt.data.schema import Sample
from biomedgpt.tasks.base import Task, clean_text, text_target


class ClassificationTask(Task):
    name = "classification"
    prompt = " what does the image describe?"
    train_templates = (
        prompt,
        " what is the diagnosis for this image?",
        " classify this image.",
        " which category does this image belong to?",
        " what class does this image show?",
        " what is the label of this image?",
        " what finding does this image show?",
    )
    eval_templates = (
        " assign a class to this image.",
        " to which class should this image be assigned?",
        " what is the correct category for this scan?",
    )
    closed_set = True
    metrics = ("accuracy", "macro_f1")

    def answer_text(self, sample: Sample) -> str | None:
        return clean_text(sample.fields["label"])

    def build_target(
        self, sample: Sample, tokenizer: Any, *, image_size: int | None = None, max_tokens: int | None = None
    ) -> list[int]:
        return text_target(tokenizer, self.answer_text(sample), max_tokens=max_tokens)


TASK = ClassificationTask()
