"""The evaluation runner: a model folder + held-out shards -> per-task metrics, report.json, predictions.jsonl.

One inference path: every sample is answered by the serving `Engine` (`biomedgpt.serve.engine`), as the API
answers a request for it, so eval's figures are the API's. For every task present in the shards and every prompt
mode (the prompt the model folder records, and held-out paraphrases the model never saw in training), the task
object says how to ask (`request_field`, templates), what the reference is (`reference`), what to score
(`prediction`, `score`) and how its trivial baseline does (`baseline_scores`). Nothing here names a task.

The model folder alone is enough: model (safetensors) or ONNX graphs, tokenizer, preprocessor, and what training
recorded there: prompts (serving.json), closed-set answer lists (answers.json), baselines (baselines.json).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from biomedgpt.model.folders import resolve_checkpoint
from biomedgpt.run_config import RunConfig

log = logging.getLogger(__name__)


def resolve_shards(patterns: Iterable[str], *, split: str | None = None) -> list[Path]:
    """Folders (their `*-{split}-*.tar`), globs and brace patterns -> existing shard files, in order."""
    from biomedgpt.data.pipeline import expand_shards

    paths = [Path(p) for p in expand_shards(patterns, split=split)]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"shards do not exist: {', '.join(missing[:5])}")
    return paths


def iter_samples(
    shards: Iterable[Path], *, split: str | None = None, tasks: set[str] | None = None
) -> Iterator:
    """Decoded `Sample`s of the shards, optionally filtered by split and task; unreadable ones are skipped."""
    from biomedgpt.data.schema import decode_sample
    from biomedgpt.data.shards import iter_tar_samples

    for shard in shards:
        for members in iter_tar_samples(shard):
            try:
                sample = decode_sample(members)
            except Exception as err:  # a corrupt sample must not end the evaluation
                log.warning("skipping an undecodable sample in %s: %s", shard, err)
                continue
            if (split is None or sample.split == split) and (not tasks or sample.task in tasks):
                yield sample


def held_out_samples(
    shards: list[Path],
    *,
    split: str,
    tasks: set[str] | None = None,
    max_samples: int | None = None,
    with_image: bool = False,
) -> dict[str, list]:
    """The first `max_samples` samples of each task in `split`, in shard order (the same ones on every run: eval,
    the int8 gate and the product check score the same samples)."""
    by_task: dict[str, list] = defaultdict(list)
    for sample in iter_samples(shards, split=split, tasks=tasks):
        if with_image and sample.image is None:
            continue
        if max_samples is None or len(by_task[sample.task]) < max_samples:
            by_task[sample.task].append(sample)
    return dict(by_task)


def sample_request(engine, task, sample, mode: str):
    """The API request for `sample` in prompt mode `mode`: "fixed" sends what a client sends (the task and its
    field; the engine fills in the prompt the model folder records), "eval" a held-out paraphrase as the
    instruction (never seen in training)."""
    from biomedgpt.model.image_processing import to_rgb_uint8
    from biomedgpt.serve.types import TaskRequest
    from biomedgpt.tasks.base import template_fields

    image = to_rgb_uint8(sample.image) if task.needs_image and sample.image is not None else None
    template = engine.prompt_template(task)
    if mode == "fixed" and template_fields(template) <= {task.request_field}:
        slot = task.request_field
        fields = {slot: task.request_value(sample)} if slot else {}
        return TaskRequest(task=task.name, image=image, fields=fields)
    if mode != "fixed":
        template = task.choose_template(mode, key=sample.key)
    return TaskRequest(task=task.name, image=image, instruction=task.build_prompt(sample, template=template))


def score_engine(
    engine,
    by_task: dict[str, list],
    *,
    modes: Iterable[str] = ("fixed",),
    batch_size: int = 16,
    baselines: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Answer every sample through `engine` (as the API would) and score it with its task: per task `samples`,
    one score dict per prompt mode, `answer_list_size`, `baseline` (when `baselines` has the task); and one
    prediction row per sample and mode."""
    from biomedgpt.tasks import get_task

    tasks: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for name in sorted(by_task):
        task, samples = get_task(name), by_task[name]
        entry: dict[str, Any] = {"samples": len(samples)}
        refs, opts = (list(column) for column in zip(*(task.reference(s) for s in samples)))
        for mode in modes:
            preds = []
            for i in range(0, len(samples), batch_size):
                prepared = [
                    engine.prepare(sample_request(engine, task, s, mode)) for s in samples[i : i + batch_size]
                ]
                preds += [task.prediction(r.output) for r in engine.run(prepared, max_rows=batch_size)]
            rows += [
                {
                    "key": s.key,
                    "task": name,
                    "prompt_mode": mode,
                    "prediction": _jsonable(p),
                    "reference": _jsonable(r),
                }
                for s, p, r in zip(samples, preds, refs)
            ]
            entry[mode] = _finite(task.score(preds, refs, opts))
        if name in engine.answers:
            entry["answer_list_size"] = len(engine.answers[name])
        if (baselines or {}).get(name) is not None:
            scores = task.baseline_scores(baselines[name], samples, refs, opts)
            entry["baseline"] = {
                k: _finite(v) if isinstance(v, dict) else v for k, v in _finite(scores).items()
            }
        tasks[name] = entry
    return tasks, rows


class Evaluator:
    """Scores one model folder through the serving `Engine`; `run()` returns the report and the predictions.

    The engine is the one the API serves (`eval.engine`: PyTorch for a checkpoint, ONNX Runtime for an export),
    so a sample is answered exactly as an API request for it would be. What the model folder records is used
    as is: the prompt each task was trained with, the closed-set answer lists (answers.json) and the trivial
    baselines fitted on the training split (baselines.json).
    """

    def __init__(self, cfg: RunConfig, *, device: str = "cpu") -> None:
        from biomedgpt.model.decode_spec import DecodeSpec
        from biomedgpt.serve.engine import EngineLimits, read_folder_json
        from biomedgpt.serve.engines import load_engine

        checkpoint = cfg.eval.checkpoint
        if not checkpoint:
            raise ValueError("eval.checkpoint is not set: give a model or checkpoint folder")
        self.cfg = cfg
        self.checkpoint = resolve_checkpoint(checkpoint)
        kind = cfg.eval.engine
        if kind == "auto":
            kind = "onnxruntime" if (self.checkpoint / "encoder.onnx").is_file() else "torch"
        options: dict[str, Any] = {"device": device} if kind == "torch" else {}
        # Eval reads every prompt in full and may ask for long outputs: the limits are the model's, not a server's.
        limits = EngineLimits(max_prompt_tokens=MAX_POSITIONS, max_new_tokens=MAX_POSITIONS)
        self.engine = load_engine(self.checkpoint, engine=kind, limits=limits, **options)
        # Served or not, eval scores every task the model learned.
        self.engine.tasks = self.engine.trained_tasks
        self.engine.defaults = DecodeSpec.from_config(cfg.generation)
        self.baselines: dict[str, Any] = read_folder_json(self.checkpoint / "baselines.json")

    def run(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        from biomedgpt.tasks import get_task

        ecfg = self.cfg.eval
        shards = resolve_shards(ecfg.shards or self.cfg.data.val_shards, split=ecfg.split)
        if not shards:
            raise ValueError("no shards to evaluate: set eval.shards (or data.val_shards)")
        wanted = set(ecfg.tasks) or None
        by_task = held_out_samples(shards, split=ecfg.split, tasks=wanted, max_samples=ecfg.max_samples)
        if not by_task:
            raise ValueError(
                f"no {ecfg.split} samples{' of ' + ', '.join(sorted(wanted)) if wanted else ''} in {len(shards)} shards"
            )
        missing = [t for t in by_task if get_task(t).closed_set and not self.engine.answers.get(t)]
        if missing:
            log.warning(
                "%s has no answer list for %s (answers.json, written by training): they decode open-ended",
                self.checkpoint,
                ", ".join(sorted(missing)),
            )
        started = time.perf_counter()
        tasks, predictions = score_engine(
            self.engine,
            by_task,
            modes=ecfg.prompt_modes,
            batch_size=ecfg.batch_size,
            baselines=self.baselines,
        )
        report: dict[str, Any] = {
            "checkpoint": str(ecfg.checkpoint),
            "engine": self.engine.name,
            "split": ecfg.split,
            "shards": [str(s) for s in shards],
            "tasks": tasks,
            "seconds": round(time.perf_counter() - started, 2),
        }
        return report, predictions


MAX_POSITIONS = 1024
"""The longest prompt and output eval asks of an engine (the positions of OFA's largest models)."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        from biomedgpt.eval.rle import mask_to_rle

        return mask_to_rle(value)
    return value


def _finite(scores: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in scores.items()}


def evaluate(cfg: RunConfig, *, device: str = "cpu") -> dict[str, Any]:
    """Run the evaluation of cfg.eval and write report.json + predictions.jsonl; returns the report."""
    evaluator = Evaluator(cfg, device=device)
    report, predictions = evaluator.run()
    out_dir = Path(cfg.eval.output_dir or evaluator.checkpoint / "eval")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    with (out_dir / "predictions.jsonl").open("w") as f:
        for row in predictions:
            f.write(json.dumps(row) + "\n")
    report["output_dir"] = str(out_dir)
    return report
