"""Image captioning: BiomedGPT's prompt ` what does the image describe?` -> the caption text.

Target as in OFA's caption dataset: BPE(" " + caption) + `</s>`. Scored with BLEU-4, ROUGE-L, CIDEr.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from biomedgpt.data.schema import Sample
from biomedgpt.tasks.base import Task, clean_text, most_frequent, text_target


class CaptionTask(Task):
    name = "caption"
    prompt = " what does the image describe?"
    train_templates = (
        prompt,
        " describe the image.",
        " what is shown in this image?",
        " write a caption for this image.",
        " give a short description of the image.",
        " summarize what the image shows.",
        " caption this medical image.",
        " what can be seen in the image?",
    )
    eval_templates = (
        " provide a brief caption of this picture.",
        " what does this scan depict?",
        " in one sentence, describe this image.",
    )
    metrics = ("bleu_4", "rouge_l", "cider")
    served = True
    title = "Caption"
    answers_free_instructions = True

    def reference(self, sample: Sample) -> tuple[Any, dict[str, Any]]:
        return sample.fields["text"], {}

    def score(self, predictions: list, references: list, options: list[dict[str, Any]]) -> dict[str, float]:
        from biomedgpt.eval.metrics import caption_metrics

        return caption_metrics(predictions, references)

    def fit_baseline(self, samples: Iterable[Sample]) -> str | None:
        """The most frequent training caption."""
        return most_frequent(clean_text(s.fields["text"]) for s in self.train_samples(samples))

    def baseline_predictions(self, baseline: Any, samples: Sequence[Sample]) -> dict[str, list]:
        return {"most_frequent_text": [baseline] * len(samples)}

    def build_target(
        self, sample: Sample, tokenizer: Any, *, image_size: int | None = None, max_tokens: int | None = None
    ) -> list[int]:
        return text_target(tokenizer, sample.fields["text"], max_tokens=max_tokens)


TASK = CaptionTask()
