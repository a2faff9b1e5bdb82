"""The engine behind the API and the demo: requests -> prompts and pixels -> decoding -> structured outputs.

`Engine` holds everything that is the same for every backend and needs no torch: the tokenizer, the image
processor, the answer lists of closed-set tasks, prompt building, request validation, grouping a batch by
decoding settings, and task postprocessing. A backend implements `_decode` only:
`biomedgpt.serve.ort_engine.OrtEngine` (ONNX Runtime, the default) and `biomedgpt.serve.torch_engine.TorchEngine`.

A model folder holds `tokenizer.json`, `preprocessor_config.json`, and optionally `serving.json` (default decoding
settings, trained tasks, model id) and `answers.json` (closed-set answers per task, from the TRAIN split:
`biomedgpt export` writes both).

Served tasks: exactly the tasks the folder says the model was trained on: `serving.json`'s `tasks` (exports,
imports, and checkpoints the trainer writes), else the tasks weighted above 0 in `run_config.yaml`'s
`data.mixture` (older checkpoints); a folder that records neither serves every image task, with a warning.

Verified files: where the folder has a `manifest.json` with a sha256 per file (`files`: exports, imports,
checkpoints), every file the engine reads is hashed once at load and must match; a file that differs, is listed
but missing, or is read but not listed refuses the load (`ModelFileError`, one line naming the file). An export
folder must have such a manifest (the ONNX Runtime engine); `verify=False` (`--no-verify`) skips the checks.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from biomedgpt.hashing import verify_files
from biomedgpt.model.constraints import AnswerTrie, decoder_prefix
from biomedgpt.model.decode_spec import DecodeSpec, SpecialIds
from biomedgpt.model.image_processing import BiomedGPTImageProcessor
from biomedgpt.serve.scheduler import Job, Scheduler, SchedulerLimits
from biomedgpt.serve.sequences import Constraints, new_sequence
from biomedgpt.serve.tokenizer import ServeTokenizer
from biomedgpt.serve.types import SERVED_TASKS, RequestError, TaskRequest, TaskResult

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class EngineLimits:
    """What one request may ask for; breaking a limit is a 4xx, never a crash."""

    max_prompt_tokens: int = 256
    """Prompt tokens (with <s> and </s>); longer prompts answer 422."""
    max_new_tokens: int = 1024
    """Largest `max_new_tokens` a request may ask for (also bounded by the model's decoder positions)."""
    max_image_pixels: int = 40_000_000
    """Images with more pixels answer 413."""
    max_beams: int = 8


@dataclass
class RequestPlan:
    """What a request asks of the model, validated without its image."""

    prompt: str
    prompt_ids: list[int]
    max_new_tokens: int
    num_beams: int
    use_trie: bool
    token_cap: int = 0
    """The largest `max_new_tokens` this request may ask for: the server's cap, less a forced decoder prefix."""


@dataclass
class Prepared:
    """A validated request, ready to batch."""

    request: TaskRequest
    prompt: str
    prompt_ids: list[int]
    pixels: np.ndarray | None  # (3, S, S); None: a text-only request (no image part)
    orig_size: tuple[int, int]  # (width, height) of the input image
    max_new_tokens: int
    num_beams: int
    use_trie: bool


# What every engine reads from a model folder (each backend adds its own); checked against manifest.json.
ENGINE_FILES = (
    "tokenizer.json",
    "preprocessor_config.json",
    "serving.json",
    "answers.json",
    "run_config.yaml",
)


class Engine(abc.ABC):
    name: ClassVar[str]
    manifest_required: ClassVar[bool] = False
    """Refuse a folder without a manifest.json that records a sha256 per file (export folders always have one)."""

    def __init__(
        self, model_dir: str | Path, *, limits: EngineLimits | None = None, verify: bool = True
    ) -> None:
        self.model_dir = Path(model_dir)
        # Before anything is read: each file this engine reads, hashed once against manifest.json.
        self.verified_files: list[str] = (
            self.verify_folder(self.model_dir, **self._file_options()) if verify else []
        )
        self.limits = limits or EngineLimits()
        self.tokenizer = ServeTokenizer.from_dir(self.model_dir)
        self.image_processor = BiomedGPTImageProcessor.from_pretrained(self.model_dir)
        self.image_size = self.image_processor.image_size
        serving = read_folder_json(self.model_dir / "serving.json")
        self.model_id: str = serving.get("model_id") or self.model_dir.name
        self.defaults = DecodeSpec(**serving.get("generation", {}))
        self.max_target_positions: int = serving.get("max_target_positions", 1024)
        self.trained_tasks: tuple[str, ...] = trained_tasks(self.model_dir, serving)
        """Every task the folder says its model learned, served or not (eval answers them all)."""
        self.tasks: tuple[str, ...] = tuple(t for t in SERVED_TASKS if t in self.trained_tasks)
        """The tasks the API answers: the trained tasks a server may offer (`Task.served`)."""
        if not self.tasks:
            log.warning(
                "%s was trained on no served task (%s)", self.model_dir, ", ".join(self.trained_tasks)
            )
        self.answers: dict[str, list[str]] = read_folder_json(self.model_dir / "answers.json")
        # The prompt each task was trained with, as the model folder records it (imports: BiomedGPT's own).
        self.prompts: dict[str, str] = dict(serving.get("prompts") or {})
        # Tasks whose decoder reads the prompt again before the answer (BiomedGPT's VQA: prev_output).
        self.decoder_prefix: dict[str, str] = dict(serving.get("decoder_prefix") or {})
        self._tries: dict[str, AnswerTrie] = {}
        self._allowed_masks: dict[str, np.ndarray] = {}
        self._grouped_masks: dict[str, np.ndarray | None] = {}
        layout = self.tokenizer.layout
        self.special_ids = SpecialIds(
            pad=layout.pad_id, bos=layout.bos_id, eos=layout.eos_id, decoder_start=layout.bos_id
        )
        self.vocab_size = layout.vocab_size

    @classmethod
    def model_files(cls, model_dir: Path, **options: Any) -> list[str]:
        """The files (relative to `model_dir`) this engine reads with `options`: those checked against manifest.json."""
        return list(ENGINE_FILES)

    @classmethod
    def verify_folder(cls, model_dir: str | Path, **options: Any) -> list[str]:
        """Check the files this engine would read from `model_dir` against its manifest.json (hashing each once);
        returns the names checked. `ModelFileError` names a file that differs, is missing or is not listed."""
        model_dir = Path(model_dir)
        return verify_files(
            model_dir, cls.model_files(model_dir, **options), require_manifest=cls.manifest_required
        )

    def _file_options(self) -> dict[str, Any]:
        """The `model_files` options of this instance (the ONNX precision)."""
        return {}

    # --- validation --------------------------------------------------------------------------------
    def plan(self, request: TaskRequest) -> RequestPlan:
        """Validate everything but the image and build the prompt; `RequestError` (4xx) names what is wrong.

        Cheap (no pixels): the server calls it before it spends anything on decoding the upload.
        """
        from biomedgpt.tasks import get_task

        if request.task not in self.tasks:
            raise RequestError(self.unserved_task_message(request.task), status=404, field="task")
        task = get_task(request.task)
        if request.instruction is not None:
            prompt = " " + " ".join(request.instruction.split())
            if not prompt.strip():
                raise RequestError("the instruction is empty", field="instruction")
        else:
            slot = task.request_field
            value = (request.fields.get(slot) or "").strip() if slot else ""
            if slot and not value:
                raise RequestError(f"task {request.task} needs the field {slot!r}", field=slot)
            prompt = task.build_prompt(task.request_sample(value), template=self.prompt_template(task))
        prompt_ids = self.tokenizer.encode_prompt(prompt)
        if len(prompt_ids) > self.limits.max_prompt_tokens:
            raise RequestError(
                f"the prompt has {len(prompt_ids)} tokens, more than the limit of {self.limits.max_prompt_tokens}",
                field="prompt",
            )
        # The decoder positions left after its start token and any forced prefix (VQA's question).
        mode = self.decoder_prefix.get(request.task)
        ids = self.special_ids
        prefix = len(decoder_prefix(prompt_ids, mode, bos=ids.bos, eos=ids.eos)) if mode else 0
        cap = max(1, min(self.limits.max_new_tokens, self.max_target_positions - 1 - prefix))
        # A request that names no budget gets the task's default, cut to the server's cap (segmentation's
        # default can exceed a small cap); one that names a budget above the cap is refused.
        max_new = (
            request.max_new_tokens
            if request.max_new_tokens is not None
            else min(self.default_max_new_tokens(request.task), cap)
        )
        if not 1 <= max_new <= cap:
            raise RequestError(f"max_new_tokens must be in 1..{cap}, got {max_new}", field="max_new_tokens")
        beams = request.num_beams if request.num_beams is not None else self.defaults.num_beams
        if request.sampling is not None:
            if request.num_beams not in (None, 1):
                raise RequestError("sampling decodes one beam: num_beams must be 1", field="num_beams")
            beams = 1
        if not 1 <= beams <= self.limits.max_beams:
            raise RequestError(
                f"num_beams must be in 1..{self.limits.max_beams}, got {beams}", field="num_beams"
            )
        use_trie = task.closed_set and bool(self.answers.get(task.name)) and request.closed_set is not False
        return RequestPlan(prompt, prompt_ids, max_new, beams, use_trie, token_cap=cap)

    def prepare(self, request: TaskRequest) -> Prepared:
        """`plan` the request, then check and preprocess its image (none: a text-only request, for the tasks whose
        answer is text, `Task.text_output`); `RequestError` (4xx) names what is wrong."""
        from biomedgpt.tasks import get_task

        plan = self.plan(request)
        task = get_task(request.task)
        if request.image is None:
            # Text only, as OFA runs text tasks: the encoder sees the prompt and no image (patch_masks off).
            if not task.text_output:
                raise RequestError(f"task {request.task} needs an image", field="image")
            return Prepared(
                request,
                plan.prompt,
                plan.prompt_ids,
                None,
                (self.image_size, self.image_size),
                plan.max_new_tokens,
                plan.num_beams,
                plan.use_trie,
            )
        width, height = request.orig_size or request.image.size
        if width * height > self.limits.max_image_pixels:
            raise RequestError(
                f"the image has {width * height} pixels, more than the limit of {self.limits.max_image_pixels}",
                status=413,
                field="image",
            )
        pixels = task.transform_pixels(self.image_processor.preprocess_one(request.image))
        # The upload is no longer needed: drop it, so a request waiting for its batch holds only `pixels`.
        request = dataclasses.replace(request, image=None)
        return Prepared(
            request,
            plan.prompt,
            plan.prompt_ids,
            pixels,
            (width, height),
            plan.max_new_tokens,
            plan.num_beams,
            plan.use_trie,
        )

    def unserved_task_message(self, task: str) -> str:
        """The 404 for a task this model does not serve: an untrained one says so."""
        served = ", ".join(self.tasks) or "no image task"
        if task in SERVED_TASKS:
            return f"this model was not trained for task {task!r}; it serves: {served}"
        return f"unknown task {task!r}; this model serves: {served}"

    def default_max_new_tokens(self, task: str) -> int:
        from biomedgpt.tasks import get_task

        return get_task(task).default_max_new_tokens(self.defaults.max_new_tokens, image_size=self.image_size)

    def prompt_template(self, task) -> str:
        """The instruction `task` was trained with, as the model folder records it (serving.json `prompts`); a
        folder that records none was trained with BiomedGPT's (`Task.biomedgpt_prompt`)."""
        recorded = self.prompts.get(task.name)
        return recorded if recorded is not None else task.biomedgpt_prompt

    # --- running -----------------------------------------------------------------------------------
    def step_model(self):
        """The model behind the scheduler's two calls (`scheduler.StepModel`)."""
        return self

    def spec(self, item: Prepared) -> DecodeSpec:
        """How `item` decodes: its task's token range and answer trie, its budget, beams or sampling."""
        from biomedgpt.tasks import get_task

        task = get_task(item.request.task)
        sampling = item.request.sampling
        return DecodeSpec(
            max_new_tokens=item.max_new_tokens,
            num_beams=item.num_beams,
            length_penalty=self.defaults.length_penalty,
            no_repeat_ngram_size=self.defaults.no_repeat_ngram_size,
            allowed_tokens=self._allowed(task),
            trie=self._trie(task) if item.use_trie else None,
            grouped_tokens=self._grouped(task),
            do_sample=sampling is not None,
            temperature=sampling.temperature if sampling else 1.0,
            top_p=sampling.top_p if sampling else 1.0,
            top_k=sampling.top_k if sampling else 0,
            seed=sampling.seed if sampling else None,
        )

    def job(self, item: Prepared, **callbacks: Any) -> Job:
        """`item` as a scheduler job (`on_tokens`, `on_done` callbacks as the scheduler's `Job` takes them)."""
        spec = self.spec(item)
        mode = self.decoder_prefix.get(item.request.task)
        ids = self.special_ids
        prefix = decoder_prefix(item.prompt_ids, mode, bos=ids.bos, eos=ids.eos) if mode else None
        sequence = new_sequence(
            spec, ids, constraints=Constraints(spec, ids, self.vocab_size), prefix=prefix, seed=spec.seed
        )
        return Job(
            input_ids=np.asarray(item.prompt_ids, dtype=np.int64),
            pixels=item.pixels,
            sequence=sequence,
            **callbacks,
        )

    def result(self, item: Prepared, job: Job) -> TaskResult:
        """The structured answer of a finished job."""
        from biomedgpt.tasks import get_task

        tokens, score = job.sequence.result()
        return self._result(get_task(item.request.task), item, np.asarray(tokens, dtype=np.int64), score)

    def run(self, items: list[Prepared], *, max_rows: int = 64) -> list[TaskResult]:
        """Decode prepared requests (any mix of tasks and decoding modes) together, through the same
        continuous-batching scheduler the server runs; results in input order."""
        jobs = [self.job(item) for item in items]
        rows = min(max_rows, sum(job.sequence.rows for job in jobs))
        limits = SchedulerLimits(
            max_rows=max(rows, *(job.sequence.rows for job in jobs)),
            max_tokens=sum(job.reserved_tokens for job in jobs),
            max_queue=len(jobs),
        )
        Scheduler(self.step_model(), limits).run(jobs)
        for job in jobs:
            if job.error is not None:
                raise job.error
        return [self.result(item, job) for item, job in zip(items, jobs)]

    def __call__(self, request: TaskRequest) -> TaskResult:
        """Validate and run one request (the demo and tests; the server submits to its scheduler)."""
        return self.run([self.prepare(request)])[0]

    def _result(self, task, item: Prepared, row: np.ndarray, score: float) -> TaskResult:
        eos, pad = self.special_ids.eos, self.special_ids.pad
        tokens = [int(t) for t in row if t != pad][: item.max_new_tokens]
        if eos in tokens:
            tokens = tokens[: tokens.index(eos) + 1]
        output = task.postprocess(
            tokens, self.tokenizer, image_size=self.image_size, orig_size=item.orig_size
        )
        if task.closed_set:
            output[task.output_kind] = output.get("text", "")
            output["score"] = math.exp(score) if item.num_beams == 1 else None
        return TaskResult(task=task.name, prompt=item.prompt, output=output, tokens=tokens, score=score)

    def _grouped(self, task) -> np.ndarray | None:
        if task.name not in self._grouped_masks:
            self._grouped_masks[task.name] = task.grouped_token_mask(self.tokenizer.layout)
        return self._grouped_masks[task.name]

    def _allowed(self, task) -> np.ndarray:
        if task.name not in self._allowed_masks:
            self._allowed_masks[task.name] = task.allowed_token_mask(self.tokenizer.layout)
        return self._allowed_masks[task.name]

    def _trie(self, task) -> AnswerTrie:
        if task.name not in self._tries:
            self._tries[task.name] = task.answer_trie(self.answers[task.name], self.tokenizer)
        return self._tries[task.name]

    @abc.abstractmethod
    def _decode(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, pixels: np.ndarray, spec: DecodeSpec
    ) -> tuple[np.ndarray, np.ndarray]:
        """(B, T) ids, (B, T) mask, (B, 3, S, S) pixels -> sequences (B, L) int64, scores (B,)."""

    def describe(self) -> dict[str, Any]:
        return {
            "engine": self.name,
            "model_id": self.model_id,
            "tasks": list(self.tasks),
            "image_size": self.image_size,
        }


def trained_tasks(model_dir: Path, serving: dict[str, Any]) -> tuple[str, ...]:
    """The tasks a model folder says its model was trained on, known ones only (module docstring: "Served
    tasks"); a folder that says nothing: every task."""
    from biomedgpt.tasks import TASKS

    recorded = serving.get("tasks") or None
    if recorded is None:
        recorded = _mixture_tasks(model_dir / "run_config.yaml")
    if recorded is None:
        log.warning(
            "%s records no trained tasks (serving.json `tasks` or run_config.yaml `data.mixture`): serving every "
            "image task",
            model_dir,
        )
        return tuple(TASKS)
    if not isinstance(recorded, list) or not all(isinstance(t, str) for t in recorded):
        raise ValueError(f"{model_dir / 'serving.json'}: `tasks` must be a list of task names")
    return tuple(t for t in TASKS if t in recorded)


def _mixture_tasks(path: Path) -> list[str] | None:
    """Tasks weighted above 0 in a run config's `data.mixture`; None when it names none (or no run config)."""
    if not path.is_file():
        return None
    import yaml

    try:
        run_config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {err}") from err
    data = run_config.get("data") if isinstance(run_config, dict) else None
    mixture = data.get("mixture") if isinstance(data, dict) else None
    if not isinstance(mixture, dict):
        return None
    tasks = [str(t) for t, w in mixture.items() if isinstance(w, (int, float)) and w > 0]
    return tasks or None


def read_folder_json(path: Path) -> dict[str, Any]:
    """A model folder's JSON file (serving.json, answers.json, baselines.json); {} when it is absent."""
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
