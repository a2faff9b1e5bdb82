"""Image classification: ` what class does this image show?` -> the class name.

BiomedGPT asks with its caption prompt ` what does the image describe?` (`biomedgpt_prompt`, what an import
records); our models learn an instruction of their own, so one multitask model tells classes from captions.

Decoded closed-set with a trie over the class names of the TRAIN split (OFA's ImageNet recipe), so
the output is always a known class. Scored with accuracy and macro-F1.
"""

from __future__ import annotations

from typing import Any

from biomedgpt.data.schema import Sample
from biomedgpt.tasks.base import Task, clean_text, text_target


class ClassificationTask(Task):
    name = "classification"
    prompt = " what class does this image show?"
    biomedgpt_prompt = " what does the image describe?"
    train_templates = (
        prompt,
        " what is the diagnosis for this image?",
        " classify this image.",
        " which category does this image belong to?",
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
    served = True
    title = "Classification"
    output_kind = "label"

    def reference(self, sample: Sample) -> tuple[Any, dict[str, Any]]:
        return sample.fields["label"], {}

    def score(self, predictions: list, references: list, options: list[dict[str, Any]]) -> dict[str, float]:
        from biomedgpt.eval.metrics import classification_metrics

        return classification_metrics(predictions, references)

    def answer_text(self, sample: Sample) -> str | None:
        return clean_text(sample.fields["label"])

    def build_target(
        self, sample: Sample, tokenizer: Any, *, image_size: int | None = None, max_tokens: int | None = None
    ) -> list[int]:
        return text_target(tokenizer, self.answer_text(sample), max_tokens=max_tokens)


TASK = ClassificationTask()
