"""Report generation: the image -> a findings/impression report.

BiomedGPT asks for a report with its caption prompt ` what does the image describe?` (recorded by
`biomedgpt import` as `biomedgpt_prompt`); our models are trained with a report instruction of their own and
report-specific paraphrases, so one multitask model tells a report request from a caption request. Scored with
BLEU-4, ROUGE-L, CIDEr and findings F1; the baseline answers every image with the training report of the most
frequent set of findings.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from biomedgpt.data.schema import Sample
from biomedgpt.tasks.base import Task, clean_text, text_target


class ReportTask(Task):
    name = "report"
    prompt = " write the radiology report for this image."
    biomedgpt_prompt = " what does the image describe?"
    train_templates = (
        prompt,
        " write the findings of this image.",
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
    served = True
    title = "Report"

    def reference(self, sample: Sample) -> tuple[Any, dict[str, Any]]:
        return sample.fields["text"], {}

    def score(self, predictions: list, references: list, options: list[dict[str, Any]]) -> dict[str, float]:
        from biomedgpt.eval.metrics import report_metrics

        return report_metrics(predictions, references)

    def fit_baseline(self, samples: Iterable[Sample]) -> str | None:
        """The first training report whose set of positive findings is the most frequent one."""
        from biomedgpt.eval.metrics import label_report

        reports = [clean_text(s.fields["text"]) for s in self.train_samples(samples)]
        findings = [frozenset(o for o, v in label_report(r).items() if v != 0) for r in reports if r]
        if not findings:
            return None
        common = Counter(findings).most_common(1)[0][0]
        return next(r for r, f in zip((r for r in reports if r), findings) if f == common)

    def baseline_predictions(self, baseline: Any, samples: Sequence[Sample]) -> dict[str, list]:
        return {"most_frequent_findings": [baseline] * len(samples)}

    def build_target(
        self, sample: Sample, tokenizer: Any, *, image_size: int | None = None, max_tokens: int | None = None
    ) -> list[int]:
        return text_target(tokenizer, sample.fields["text"], max_tokens=max_tokens)


TASK = ReportTask()
