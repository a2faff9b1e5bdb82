"""The evaluation runner: a checkpoint folder + held-out shards -> per-task metrics, report.json, predictions.jsonl.

For every task present in the shards and every prompt mode (BiomedGPT's fixed prompts, and held-out paraphrases
the model never saw in training), samples are decoded with the task's constraint (text / bins / codes) and, for
closed-set tasks (VQA, classification), the answer trie built from the TRAIN split only, then postprocessed into
structured outputs and scored with `biomedgpt.eval.metrics`. The checkpoint folder alone is enough: model,
tokenizer and preprocessor are read from it (safetensors only).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

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


def reference_of(sample) -> tuple[Any, dict[str, Any]]:
    """The reference a task's metric compares with, plus per-sample metric options (VQA answer type)."""
    fields, task = sample.fields, sample.task
    if task in ("caption", "report", "text_infilling"):
        return fields["text"], {}
    if task == "summarization":
        return fields["summary"], {}
    if task == "vqa":
        return fields["answer"], {"answer_type": fields.get("answer_type")}
    if task == "classification":
        return fields["label"], {}
    if task == "grounding":
        return fields["boxes"][0]["box"], {}
    if task == "detection":
        return [{"box": b["box"], "label": b["label"]} for b in fields["boxes"]], {}
    if task == "segmentation":
        return np.asarray(sample.mask) > 0, {}
    return None, {}


def prediction_of(task: str, output: dict[str, Any]) -> Any:
    if task == "grounding":
        return output.get("box")
    if task == "detection":
        return output.get("objects", [])
    if task == "segmentation":
        return output["mask"]
    return output.get("text", "")


def score(task: str, predictions: list, references: list, options: list[dict]) -> dict[str, float]:
    from biomedgpt.eval.metrics import METRICS, compute

    if task == "text_infilling":
        from biomedgpt.eval.metrics import rouge_l, vqa_accuracy

        exact = vqa_accuracy(predictions, references)["accuracy"]
        return {"exact_match": exact, "rouge_l": rouge_l(predictions, references)}
    if task not in METRICS:
        return {}
    extra: dict[str, Any] = {}
    if task == "vqa":
        types = [o.get("answer_type") for o in options]
        if all(types):
            extra["answer_types"] = types
    return compute(task, predictions, references, **extra)


def resolve_checkpoint(path: str | Path) -> Path:
    """A model folder as is; a run folder or its checkpoints/ folder -> the checkpoint its `latest` file names."""
    path = Path(path)
    if (path / "config.json").is_file():
        return path
    for root in (path, path / "checkpoints"):
        pointer = root / "latest"
        if pointer.is_file() and (root / pointer.read_text().strip() / "config.json").is_file():
            return root / pointer.read_text().strip()
    raise FileNotFoundError(
        f"{path} is neither a model folder (config.json) nor a run with checkpoints/latest"
    )


class Evaluator:
    """Decodes and scores one checkpoint; `run()` returns the report dict."""

    def __init__(self, cfg: RunConfig, *, device: str = "cpu") -> None:
        from biomedgpt.model.processing import load_pretrained

        checkpoint = cfg.eval.checkpoint
        if not checkpoint:
            raise ValueError("eval.checkpoint is not set: give a model or checkpoint folder")
        self.cfg = cfg
        self.checkpoint = resolve_checkpoint(checkpoint)
        self.model, self.processor = load_pretrained(self.checkpoint, device=device)
        self.tokenizer = self.processor.tokenizer
        self.layout = self.tokenizer.layout
        self.image_size = self.processor.image_processor.image_size
        self.device = device
        serving_file = self.checkpoint / "serving.json"
        serving = json.loads(serving_file.read_text()) if serving_file.is_file() else {}
        # Tasks whose decoder reads the prompt again before the answer (imported BiomedGPT VQA: prev_output).
        self.decoder_prefix: dict[str, str] = dict(serving.get("decoder_prefix") or {})

    def train_statistics(self, tasks: set[str]) -> tuple[dict[str, list[str]], dict[str, Any]]:
        """From the TRAIN split of eval.answer_shards (default data.shards): the closed-set answer lists per task,
        and the trivial baselines: the majority answer (VQA, classification) and the mean mask (segmentation)."""
        from collections import Counter

        from biomedgpt.tasks import get_task

        wanted = {t for t in tasks if get_task(t).closed_set or t == "segmentation"}
        patterns = self.cfg.eval.answer_shards or self.cfg.data.shards
        if not wanted or not patterns:
            if any(get_task(t).closed_set for t in tasks):
                log.warning("no training shards given (data.shards): closed-set tasks decode open-ended")
            return {}, {}
        samples = list(iter_samples(resolve_shards(patterns, split="train"), split="train", tasks=wanted))
        answers, baselines = {}, {}
        for name in wanted:
            task = get_task(name)
            if task.closed_set:
                answers[name] = task.candidate_answers(samples)
                counts = Counter(task.answer_text(s) for s in samples if s.task == name)
                if counts:
                    baselines[name] = counts.most_common(1)[0][0]
            elif name == "segmentation":
                masks = [
                    _resize_mask(s.mask, (64, 64)) for s in samples if s.task == name and s.mask is not None
                ]
                if masks:
                    baselines[name] = np.mean(masks, axis=0) >= 0.5
        return answers, baselines

    def baseline_scores(self, name: str, refs: list, opts: list, baseline: Any) -> dict:
        """Scores of the trivial baselines on the same samples, for comparison with the model."""
        if name in ("vqa", "classification"):
            return {"majority_answer": baseline, **_finite(score(name, [baseline] * len(refs), refs, opts))}
        if name == "segmentation":
            empty = score(name, [np.zeros_like(r) for r in refs], refs, opts)
            mean = score(name, [_resize_mask(baseline, r.shape) for r in refs], refs, opts)
            return {"empty_mask": _finite(empty), "mean_mask": _finite(mean)}
        return {}

    def _decoder_prefixes(self, task: str, batch) -> list[list[int]]:
        from biomedgpt.model.constraints import decoder_prefix

        bos, eos = self.layout.bos_id, self.layout.eos_id
        rows = zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist())
        mode = self.decoder_prefix[task]
        return [
            decoder_prefix([t for t, m in zip(ids, mask) if m], mode, bos=bos, eos=eos) for ids, mask in rows
        ]

    def decode(self, task, samples: list, mode: str, answers: list[str] | None) -> list[dict[str, Any]]:
        import torch

        from biomedgpt.model.generation import DecodeOptions, generate

        options = DecodeOptions.from_config(
            self.cfg.generation,
            min_new_tokens=0,
            allowed_tokens=torch.from_numpy(task.allowed_token_mask(self.layout)),
            trie=task.answer_trie(answers, self.tokenizer) if answers else None,
        )
        if task.name == "segmentation":
            from biomedgpt.tasks.segmentation_codec import max_tokens

            options = replace(
                options, max_new_tokens=max(options.max_new_tokens, max_tokens(self.image_size) + 1)
            )
        prompts = [task.build_prompt(s, template=task.choose_template(mode, key=s.key)) for s in samples]
        images = [s.image if task.needs_image else None for s in samples]
        batch = self.processor(text=prompts, images=images)
        if "patch_images" in batch:
            pixels = batch["patch_images"].numpy()
            batch["patch_images"] = torch.from_numpy(np.stack([task.transform_pixels(p) for p in pixels]))
        if self.decoder_prefix.get(task.name):
            options = replace(options, decoder_prefixes=self._decoder_prefixes(task.name, batch))
        batch = {k: v.to(self.device) for k, v in batch.items()}
        out = generate(self.model, **batch, options=options)
        results = []
        for sample, ids in zip(samples, out.sequences.cpu()):
            orig = (sample.image.shape[1], sample.image.shape[0]) if sample.image is not None else None
            results.append(task.postprocess(ids, self.tokenizer, image_size=self.image_size, orig_size=orig))
        return results

    def run(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        from biomedgpt.tasks import get_task

        ecfg = self.cfg.eval
        shards = resolve_shards(ecfg.shards or self.cfg.data.val_shards, split=ecfg.split)
        if not shards:
            raise ValueError("no shards to evaluate: set eval.shards (or data.val_shards)")
        wanted = set(ecfg.tasks) or None
        by_task: dict[str, list] = defaultdict(list)
        for sample in iter_samples(shards, split=ecfg.split, tasks=wanted):
            if ecfg.max_samples is None or len(by_task[sample.task]) < ecfg.max_samples:
                by_task[sample.task].append(sample)
        if not by_task:
            raise ValueError(
                f"no {ecfg.split} samples{' of ' + ', '.join(sorted(wanted)) if wanted else ''} in {len(shards)} shards"
            )
        answers, baselines = self.train_statistics(set(by_task))
        report: dict[str, Any] = {
            "checkpoint": str(ecfg.checkpoint),
            "split": ecfg.split,
            "shards": [str(s) for s in shards],
            "tasks": {},
        }
        predictions: list[dict[str, Any]] = []
        started = time.perf_counter()
        for name in sorted(by_task):
            task = get_task(name)
            samples = by_task[name]
            report["tasks"][name] = {"samples": len(samples)}
            for mode in ecfg.prompt_modes:
                preds, refs, opts = [], [], []
                for i in range(0, len(samples), ecfg.batch_size):
                    chunk = samples[i : i + ecfg.batch_size]
                    for sample, output in zip(chunk, self.decode(task, chunk, mode, answers.get(name))):
                        ref, opt = reference_of(sample)
                        preds.append(prediction_of(name, output))
                        refs.append(ref)
                        opts.append(opt)
                        predictions.append(
                            {
                                "key": sample.key,
                                "task": name,
                                "prompt_mode": mode,
                                "prediction": _jsonable(prediction_of(name, output)),
                                "reference": _jsonable(ref),
                            }
                        )
                report["tasks"][name][mode] = _finite(score(name, preds, refs, opts))
            if name in answers:
                report["tasks"][name]["answer_list_size"] = len(answers[name])
            if name in baselines:
                report["tasks"][name]["baseline"] = self.baseline_scores(name, refs, opts, baselines[name])
        report["seconds"] = round(time.perf_counter() - started, 2)
        return report, predictions


def _resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a mask to (height, width), as float in {0, 1}."""
    mask = np.asarray(mask) > 0
    rows = (np.arange(shape[0]) * mask.shape[0] // shape[0]).clip(0, mask.shape[0] - 1)
    cols = (np.arange(shape[1]) * mask.shape[1] // shape[1]).clip(0, mask.shape[1] - 1)
    return mask[rows][:, cols].astype(np.float32)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        from biomedgpt.eval.rle import mask_to_rle

        return mask_to_rle(value)
    return value


def _finite(scores: dict[str, float]) -> dict[str, float | None]:
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
