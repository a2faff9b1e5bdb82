"""Report generation: the image -> a findings/impression report.

BiomedGPT reuses the caption prompt ` what does the image describe?` for report generation, so that
stays the canonical prompt; the training paraphrases are report-specific, which lets one multitask
model tell a report request from a caption request. Scored with BLEU-4, ROUGE-L, CIDEr and findings F1.
"""

from __future__ import annotations

from typing import Any

from biomedgpt.data.schema import Sample
from biomedgpt.tasks.base import Task, text_target


class ReportTask(Task):
    name = "report"
    prompt = " what does the image describe?"
    train_templates = (
        prompt,
        " write the radiology report for this image.",
        " generate the findings and impression for this image.",
        " what are the findings in this image?",
        " write a report describing this scan.",
        " dictate a report for this study.",
        " report the findings of this examination.",
    )
    eval_templates = (
        " compose a diagnostic report for this image.",
        " what would the radiologist write about this scan?",
        " produce the full report for this study.",
    )
    metrics = ("bleu_4", "rouge_l", "cider", "findings_micro_f1", "findings_macro_f1")

    def build_target(
        self, sample: Sample, tokenizer: Any, *, image_size: int | None = None, max_tokens: int | None = None
    ) -> list[int]:
        return text_target(tokenizer, sample.fields["text"], max_tokens=max_tokens)


TASK = ReportTask()
