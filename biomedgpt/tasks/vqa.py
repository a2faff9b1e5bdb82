"""Visual question answering: the question itself is the prompt (` {question}?`) -> the answer text.

As in OFA/BiomedGPT's VQA dataset, the question is normalized to end with exactly one `?`
(`question + '?' if not question.endswith('?')`; here repeated marks and spaces before them are
folded too). Answers are decoded closed-set, with a trie over the answers of the TRAIN split
(BiomedGPT's `ans2label` trie); the sample's `answer_type` (closed/open) splits the accuracy.

Two trivial baselines, fitted on the TRAIN split: the majority answer over all questions, and the majority answer
of each question (a question never seen in training gets the overall one). The second is the bar a model must
clear to show it looks at the image: "is there a lesion in this slice?" answered "no" without looking is often
right.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from biomedgpt.data.schema import Sample
from biomedgpt.tasks.base import Task, clean_text, text_target


def normalize_question(question: str) -> str:
    """One line, exactly one trailing `?`: "is there a lesion ??" -> "is there a lesion?"."""
    return clean_text(question).rstrip("? ") + "?"


class VqaTask(Task):
    name = "vqa"
    prompt = " {question}"
    train_templates = (
        prompt,
        " question: {question} answer:",
        " answer the question about the image: {question}",
        " {question} answer briefly.",
        " looking at the image, {question}",
        " based on the image, {question}",
    )
    eval_templates = (
        " please answer: {question}",
        " {question} respond in a few words.",
        " given this medical image, {question}",
    )
    closed_set = True
    metrics = ("accuracy", "closed_accuracy", "open_accuracy")
    served = True
    title = "VQA"
    output_kind = "answer"
    request_field = "question"
    field_label = "Question"
    field_example = "what modality is this?"

    def fields_from_request(self, value: str) -> dict[str, Any]:
        return {"question": value, "answer": ""}

    def reference(self, sample: Sample) -> tuple[Any, dict[str, Any]]:
        return sample.fields["answer"], {"answer_type": sample.fields.get("answer_type")}

    def score(self, predictions: list, references: list, options: list[dict[str, Any]]) -> dict[str, float]:
        """Accuracy, split into closed and open questions when every sample says which it is."""
        from biomedgpt.eval.metrics import vqa_accuracy

        types = [o.get("answer_type") for o in options]
        return vqa_accuracy(predictions, references, **({"answer_types": types} if all(types) else {}))

    def prompt_fields(self, sample: Sample, *, rng: random.Random | None = None) -> dict[str, str]:
        return {"question": normalize_question(sample.fields["question"])}

    def answer_text(self, sample: Sample) -> str | None:
        return clean_text(sample.fields["answer"])

    def fit_baseline(self, samples: Iterable[Sample]) -> dict[str, Any] | None:
        """{"majority_answer": the TRAIN split's most frequent answer, "per_question": {question: its most
        frequent answer}} (questions normalized as the prompt is)."""
        train = list(self.train_samples(samples))
        overall = super().fit_baseline(train)
        if overall is None:
            return None
        by_question: dict[str, Counter] = defaultdict(Counter)
        for sample in train:
            by_question[normalize_question(sample.fields["question"])][self.answer_text(sample)] += 1
        per_question = {q: counts.most_common(1)[0][0] for q, counts in by_question.items()}
        return {"majority_answer": overall, "per_question": per_question}

    def baseline_scores(
        self, baseline: Any, samples: Sequence[Sample], references: list, options: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """The overall majority answer's scores (`majority_answer` and its figures, as every closed-set task), and
        `per_question_majority`: each question's TRAIN majority answer. A folder written before the per-question
        baseline existed records the overall answer alone."""
        if not isinstance(baseline, dict):
            return super().baseline_scores(baseline, samples, references, options)
        overall = baseline["majority_answer"]
        scores = super().baseline_scores(overall, samples, references, options)
        per_question = baseline.get("per_question") or {}
        answers = [per_question.get(normalize_question(s.fields["question"]), overall) for s in samples]
        scores["per_question_majority"] = self.score(answers, references, options)
        return scores

    def build_target(
        self, sample: Sample, tokenizer: Any, *, image_size: int | None = None, max_tokens: int | None = None
    ) -> list[int]:
        return text_target(tokenizer, self.answer_text(sample), max_tokens=max_tokens)


TASK = VqaTask()
