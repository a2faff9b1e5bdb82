"""Visual question answering: the question itself is the prompt (` {question}?`) -> the answer text.

As in OFA/BiomedGPT's VQA dataset, the question is normalized to end with exactly one `?`
(`question + '?' if not question.endswith('?')`; here repeated marks and spaces before them are
folded too). Answers are decoded closed-set, with a trie over the answers of the TRAIN split
(BiomedGPT's `ans2label` trie); the sample's `answer_type` (closed/open) splits the accuracy.
"""

from __future__ import annotations

import random
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

    def build_target(
        self, sample: Sample, tokenizer: Any, *, image_size: int | None = None, max_tokens: int | None = None
    ) -> list[int]:
        return text_target(tokenizer, self.answer_text(sample), max_tokens=max_tokens)


TASK = VqaTask()
