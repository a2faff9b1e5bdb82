"""Image captioning: BiomedGPT's prompt ` what does the image describe?` -> the caption text.

Target as in OFA's caption dataset: BPE(" " + caption) + `</s>`. Scored with BLEU-4, ROUGE-L, CIDEr.
"""

from __future__ import annotations

from typing import Any

from biomedgpt.data.schema import Sample
from biomedgpt.tasks.base import Task, text_target


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

    def build_target(
        self, sample: Sample, tokenizer: Any, *, image_size: int | None = None, max_tokens: int | None = None
    ) -> list[int]:
        return text_target(tokenizer, sample.fields["text"], max_tokens=max_tokens)


TASK = CaptionTask()
