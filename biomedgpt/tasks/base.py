"""`Task`: what every task file defines, and the helpers they share (docs/ARCHITECTURE.md: how to add a task).

A task turns a `Sample` (biomedgpt.data.schema) into "prompt in, tokens out":

- `prompt`: the instruction, leading space included (OFA `encode_text(" ...")`), with `{field}` slots
  filled by `prompt_fields`; `biomedgpt_prompt` is BiomedGPT's own wording where it differs;
  `train_templates` are the paraphrases sampled during training (the first one is always `prompt`),
  `eval_templates` are held out: never trained on, used to measure how well the model follows unseen
  wording. A model folder records the prompt it was trained with; serving and eval read it from there.
- serving attributes (`served`, `title`, `output_kind`, `request_field`, ...): what the API, the demo and
  eval ask of a task instead of branching on its name.
- scoring: `reference`, `prediction`, `score` (its metrics), `fit_baseline` / `baseline_scores` (a trivial
  predictor fitted on the TRAIN split, reported next to the model).
- `build_target` -> decoder token ids, always ending with `</s>` (OFA: `target = tgt_item + eos`;
  the decoder input is `<s> + tgt_item`, made by the model from the labels).
- `constraint` ("text" | "bins" | "codes"): which vocabulary block decoding is restricted to
  (biomedgpt.tokenization.ranges); `closed_set`: decode with a trie over the TRAIN answers.
- `postprocess(ids, ...)` -> structured output (text, a box in original pixels, a mask, codes).

Sizes are `(width, height)` everywhere, as in the sample schema.
"""

from __future__ import annotations

import abc
import contextlib
import random
import string
import weakref
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from biomedgpt.model.constraints import AnswerTrie

if TYPE_CHECKING:
    from biomedgpt.data.schema import Sample

CONSTRAINTS = ("text", "bins", "codes")
OUTPUT_KINDS = ("text", "answer", "label", "box", "objects", "mask")
TEXT_OUTPUTS = ("text", "answer", "label")
"""Output kinds that are text: such a task may be asked without an image (OFA's text-only input) and streams."""


class TaskUnavailableError(RuntimeError):
    """A task needs a component (image VQ tokenizer, mask codec) that this install does not have."""


class TargetTooLongError(ValueError):
    """A structured target (boxes, codes, mask) does not fit `max_tokens` and cannot be cut."""


def template_fields(template: str) -> set[str]:
    """The `{name}` slots of a template."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def clean_text(text: str) -> str:
    """One line, single spaces, no surrounding blanks."""
    return " ".join(str(text).split())


def as_id_list(ids: Any) -> list[int]:
    """A list, tuple, numpy array or torch tensor of ids (1-D) -> list of int."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    return [int(t) for t in ids]


_LAYOUTS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def layout_of(tokenizer: Any) -> Any:
    """`tokenizer.layout`, cached per tokenizer: the property re-verifies the whole vocabulary on every
    access (about 0.5 ms), too slow for once per sample in the data pipeline."""
    try:
        return _LAYOUTS[tokenizer]
    except (KeyError, TypeError):
        layout = tokenizer.layout
        with contextlib.suppress(TypeError):  # not weak-referenceable: no cache
            _LAYOUTS[tokenizer] = layout
        return layout


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """BPE ids of `text` without specials (the backend tokenizer: no Python-side overhead)."""
    return tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids


def text_target(tokenizer: Any, text: str, *, max_tokens: int | None = None) -> list[int]:
    """OFA's text target: BPE(" " + text), cut to leave room for eos, then `</s>`."""
    ids = encode_text(tokenizer, " " + clean_text(text))
    if max_tokens is not None:
        ids = ids[: max(max_tokens - 1, 0)]
    return [*ids, layout_of(tokenizer).eos_id]


def strip_output(ids: Any, layout: Any) -> list[int]:
    """Generated ids -> the answer tokens: a leading `<s>` dropped, everything from `</s>` on cut, pads dropped."""
    out = as_id_list(ids)
    if out and out[0] == layout.bos_id:
        out = out[1:]
    if layout.eos_id in out:
        out = out[: out.index(layout.eos_id)]
    return [t for t in out if t != layout.pad_id]


class Task(abc.ABC):
    """One task: prompts, target serialization, decoding constraint and postprocessing.

    Subclasses set the class attributes and override `prompt_fields`, `build_target` and
    `postprocess`; one instance per task lives in `biomedgpt.tasks.TASKS`.
    """

    name: ClassVar[str]
    prompt: ClassVar[str]
    """The instruction our models are trained with as the task's fixed prompt (leading space, `{field}` slots);
    training records it in the model folder (serving.json `prompts`), and serving reads it from there. Distinct
    per task, so one multitask model knows a caption from a class or a report."""
    biomedgpt_prompt: ClassVar[str] = ""
    """BiomedGPT's own instruction for the task (what `biomedgpt import` records; BiomedGPT asks captioning,
    classification and reports with the same words); empty: the same as `prompt`. A folder that records no
    prompts was trained with these."""
    train_templates: ClassVar[tuple[str, ...]]
    """Instruction paraphrases sampled in training; the first is `prompt`."""
    eval_templates: ClassVar[tuple[str, ...]]
    """Held-out paraphrases, never used in training."""
    constraint: ClassVar[str] = "text"
    """Vocabulary block decoding is restricted to: "text", "bins" or "codes"."""
    closed_set: ClassVar[bool] = False
    """Decode with a trie over the answers seen in the TRAIN split."""
    needs_image: ClassVar[bool] = True
    uses_mask: ClassVar[bool] = False
    """Whether targets read `Sample.mask` (the pipeline skips decoding masks otherwise)."""
    metrics: ClassVar[tuple[str, ...]] = ()
    """The main scores `biomedgpt eval` reports for this task: keys of `score`'s dict, per prompt mode in
    report.json; empty when eval reports none."""

    # --- serving: what the API, the demo and eval ask of a task instead of branching on its name ----------
    served: ClassVar[bool] = False
    """Answered by the API and the demo for an image (training-only otherwise: text-only and image-code tasks)."""
    title: ClassVar[str] = ""
    """Its name for people (the demo's tab)."""
    output_kind: ClassVar[str] = "text"
    """What `postprocess` gives and the demo draws (`OUTPUT_KINDS`): "text" (free text), "answer" / "label" (a
    closed-set answer with its probability, under that key), "box", "objects" (labelled boxes), "mask"."""
    request_field: ClassVar[str | None] = None
    """The request field that fills the prompt's slot (`question`, `text`, `structure`); None: no slot."""
    field_label: ClassVar[str] = ""
    """How the demo labels `request_field`."""
    field_example: ClassVar[str] = ""
    """A value of `request_field` for placeholders and smoke requests."""
    answers_free_instructions: ClassVar[bool] = False
    """The task whose decoding answers a free instruction (the chat endpoint's open text): open text, no slot."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.output_kind not in OUTPUT_KINDS:
            raise TypeError(f"{cls.__name__}: output_kind {cls.output_kind!r} is not one of {OUTPUT_KINDS}")
        if cls.served and not cls.title:
            raise TypeError(f"{cls.__name__}: a served task needs a title")
        slots = template_fields(cls.prompt)
        if cls.request_field is not None and slots != {cls.request_field}:
            raise TypeError(
                f"{cls.__name__}: request_field {cls.request_field!r} must be the prompt's slot {slots}"
            )
        if cls.train_templates[0] != cls.prompt:
            raise TypeError(f"{cls.__name__}: train_templates[0] must be the prompt")
        if not cls.biomedgpt_prompt:
            cls.biomedgpt_prompt = cls.prompt
        for template in (*cls.train_templates, *cls.eval_templates, cls.biomedgpt_prompt):
            if not template.startswith(" ") or template_fields(template) != slots:
                raise TypeError(f"{cls.__name__}: template {template!r} needs a leading space and {slots}")

    # --- availability ------------------------------------------------------------------------------
    def check_available(self) -> None:
        """Raise `TaskUnavailableError` if a component this task needs is missing."""
        return  # most tasks need nothing optional

    # --- prompts -----------------------------------------------------------------------------------
    def prompt_fields(self, sample: Sample, *, rng: random.Random | None = None) -> dict[str, str]:
        """Values for the `{field}` slots of the templates (none by default)."""
        return {}

    def build_prompt(
        self, sample: Sample, *, template: str | None = None, rng: random.Random | None = None
    ) -> str:
        """The encoder text: `template` (default: the task's prompt) filled from `sample`."""
        return (template if template is not None else self.prompt).format(
            **self.prompt_fields(sample, rng=rng)
        )

    def choose_template(
        self, mode: str, *, rng: random.Random | None = None, key: str = "", served_share: float | None = None
    ) -> str:
        """ "fixed": the task's prompt; "train": a random training paraphrase (with `served_share`, the prompt
        itself that often, another paraphrase otherwise); "eval": a held-out paraphrase picked by a stable hash
        of `key` (the same one for a sample on every run)."""
        if mode == "fixed":
            return self.prompt
        if mode == "train":
            rng = rng or random
            others = self.train_templates[1:]
            if served_share is None:
                return rng.choice(self.train_templates)
            return self.prompt if not others or rng.random() < served_share else rng.choice(others)
        if mode == "eval":
            return self.eval_templates[_stable_hash(key) % len(self.eval_templates)]
        raise ValueError(f"unknown prompt mode {mode!r}; expected 'fixed', 'train' or 'eval'")

    # --- targets -----------------------------------------------------------------------------------
    @abc.abstractmethod
    def build_target(
        self,
        sample: Sample,
        tokenizer: Any,
        *,
        image_size: int | None = None,
        max_tokens: int | None = None,
    ) -> list[int]:
        """Decoder target ids ending with `</s>`; `image_size` is the model's input side (segmentation
        needs it); text targets are cut to `max_tokens`, structured ones raise `TargetTooLongError`."""

    def allowed_token_mask(self, layout: Any) -> np.ndarray:
        """(vocab_size,) bool: the ids decoding may emit for this task (its `constraint` block and `</s>`)."""
        from biomedgpt.tokenization.ranges import allowed_token_mask

        return allowed_token_mask(layout, self.constraint)

    def grouped_token_mask(self, layout: Any) -> np.ndarray | None:
        """(vocab_size,) bool: tokens greedy decoding weighs as one choice (`DecodeSpec.grouped_tokens`), or None.
        A task whose output is locations groups the bins: its first decision is "a location or the end", and
        the model spreads a location's probability over 1,000 bins (`constraints.grouped_argmax`)."""
        if self.constraint != "bins":
            return None
        from biomedgpt.tokenization.ranges import allowed_token_mask

        grouped = allowed_token_mask(layout, "bins")
        grouped[layout.eos_id] = False  # the end is the choice the bins are weighed against
        return grouped

    def transform_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Change the normalized (C, S, S) input pixels for this task (image infilling blanks the middle)."""
        return pixels

    # --- outputs -----------------------------------------------------------------------------------
    def postprocess(
        self,
        ids: Any,
        tokenizer: Any,
        *,
        image_size: int,
        orig_size: tuple[int, int] | None = None,
    ) -> dict[str, Any]:
        """Generated ids -> structured output; `orig_size` is the input image's (width, height)."""
        return {"text": tokenizer.decode_text(strip_output(ids, layout_of(tokenizer))).strip()}

    @property
    def text_output(self) -> bool:
        """The answer is text (`TEXT_OUTPUTS`): answerable without an image, streamable."""
        return self.output_kind in TEXT_OUTPUTS

    # --- requests ----------------------------------------------------------------------------------
    def request_sample(self, value: str = "") -> Sample:
        """A sample holding only what `prompt_fields` reads, made from a request's `request_field` value."""
        from biomedgpt.data.schema import Sample

        return Sample(key="request", task=self.name, split="test", fields=self.fields_from_request(value))

    def fields_from_request(self, value: str) -> dict[str, Any]:
        """`Sample.fields` for `request_sample` (none by default: the prompt has no slot)."""
        return {}

    def request_value(self, sample: Sample) -> str | None:
        """The `request_field` value a request for `sample` sends (eval, the demo's examples, the int8 gate)."""
        if self.request_field is None:
            return None
        return self.prompt_fields(sample)[self.request_field]

    def default_max_new_tokens(self, default: int, *, image_size: int) -> int:
        """The decoding budget of a request that names none (`default`: the folder's setting)."""
        return default

    # --- scoring -----------------------------------------------------------------------------------
    def reference(self, sample: Sample) -> tuple[Any, dict[str, Any]]:
        """What `score` compares an output with, and per-sample scoring options (VQA's answer type)."""
        return None, {}

    def prediction(self, output: dict[str, Any]) -> Any:
        """The part of `postprocess`'s output that `score` reads."""
        return output.get("text", "")

    def score(self, predictions: list, references: list, options: list[dict[str, Any]]) -> dict[str, float]:
        """The task's metrics (`metrics` names the main keys); {} when it has none."""
        return {}

    def fit_baseline(self, samples: Iterable[Sample]) -> Any | None:
        """A trivial predictor fitted on this task's TRAIN samples, as JSON-able data (training writes it to
        baselines.json); None: the task has none. Closed-set tasks: the majority answer."""
        if not self.closed_set:
            return None
        counts = Counter(self.answer_text(s) for s in self.train_samples(samples))
        counts.pop(None, None)
        return counts.most_common(1)[0][0] if counts else None

    def baseline_predictions(self, baseline: Any, samples: Sequence[Sample]) -> dict[str, list]:
        """Per baseline name, what the trivial predictor `baseline` answers for `samples` (scored like the model)."""
        return {}

    def baseline_scores(
        self, baseline: Any, samples: Sequence[Sample], references: list, options: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """The baselines' scores on the same samples as the model, for the eval report: closed-set tasks
        `{"majority_answer": ..., <scores>}`, other tasks `{<baseline name>: <scores>}`."""
        if self.closed_set:
            return {
                "majority_answer": baseline,
                **self.score([baseline] * len(references), references, options),
            }
        return {
            name: self.score(predictions, references, options)
            for name, predictions in self.baseline_predictions(baseline, samples).items()
        }

    def train_samples(self, samples: Iterable[Sample]) -> Iterator[Sample]:
        """This task's samples of the TRAIN split (what answer lists and baselines are fitted on, never val/test)."""
        return (s for s in samples if s.split == "train" and s.task == self.name)

    # --- closed-set decoding -----------------------------------------------------------------------
    def answer_text(self, sample: Sample) -> str | None:
        """The answer string a closed-set trie is built from (None for open-ended tasks)."""
        return None

    def candidate_answers(self, samples: Iterable[Sample]) -> list[str]:
        """Distinct answers of this task's TRAIN samples, in first-seen order.

        Samples of other splits and tasks are ignored: a trie built from val/test answers would leak them.
        """
        seen: dict[str, None] = {}
        for sample in self.train_samples(samples):
            answer = self.answer_text(sample)
            if answer:
                seen.setdefault(answer, None)
        return list(seen)

    def answer_trie(self, answers: Sequence[str], tokenizer: Any) -> AnswerTrie:
        """A prefix trie over the answers' target ids (each ending with `</s>`), for constrained decoding."""
        if not self.closed_set:
            raise ValueError(f"task {self.name} is open-ended; it has no answer trie")
        return AnswerTrie(
            (text_target(tokenizer, answer) for answer in answers), eos_token_id=layout_of(tokenizer).eos_id
        )

    def __repr__(self) -> str:
        return f"<Task {self.name}: {self.prompt!r} -> {self.constraint}>"


def most_frequent(texts: Iterable[str]) -> str | None:
    """The most frequent text (the first seen among equals), None when there is none."""
    counts = Counter(t for t in texts if t)
    return counts.most_common(1)[0][0] if counts else None


def _stable_hash(text: str) -> int:
    """A hash that is the same in every process (Python's `hash` of a str is salted per process)."""
    import zlib

    return zlib.crc32(text.encode("utf-8"))


def require_module(module: str, *, task: str, what: str) -> Any:
    """Import `module` or raise `TaskUnavailableError` saying which task needs it for what."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name is None or not module.startswith(err.name):
            raise  # the module exists but one of its own imports is missing: a real error
        raise TaskUnavailableError(
            f"task {task} needs {module} ({what}), which this checkout does not have yet"
        ) from err
