"""`biomedgpt import SRC --out DIR --bpe-dir BPE`: an official OFA / BiomedGPT fairseq checkpoint -> a model folder.

The checkpoint is read without unpickling anything but tensors, plain containers and config records (a file
naming any other global is refused, nothing executed); its options are mapped onto our config and refused if
we do not implement them; every tensor is mapped, or dropped with a reason (the report says which); shapes must
match exactly. The tokenizer is OFA's own (GPT-2 BPE through fairseq's dict.txt), written as `tokenizer.json`.

The folder serves the checkpoint's task (a fine-tuned one: `cfg.task`, or `--task`) or, for a pretrained
checkpoint, BiomedGPT's pretraining tasks, each with BiomedGPT's prompt (`serving.json`); closed-set tasks
take their answers from `--answers` (`answers.json`). Then: `biomedgpt eval`, `export`, `serve`, `demo`,
and `finetune model.init_from=DIR` all take the folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# OFA task names (cfg.task._name) -> ours. `unify_task` is pretraining: every task below that it trains.
OFA_TASKS = {
    "vqa_gen": "vqa",
    "caption": "caption",
    "image_classify": "classification",
    "refcoco": "grounding",
    "summary": "summarization",
}
PRETRAINING_TASKS = ("caption", "vqa", "grounding", "detection")
# OFA's `--prompt-type` (vqa_gen): where the decoder reads the question before the answer. "none": it does not.
PROMPT_TYPES = {"none": None, "prev_output": "prompt", "src": "prompt+eos"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SRC", help="a fairseq checkpoint (.pt) of OFA or BiomedGPT")
    parser.add_argument("--out", required=True, help="the model folder to write")
    parser.add_argument(
        "--bpe-dir", required=True, help="OFA's utils/BPE folder (encoder.json, vocab.bpe, dict.txt)"
    )
    parser.add_argument(
        "--weights", choices=("model", "ema"), default="model", help="the trained weights or the EMA ones"
    )
    parser.add_argument(
        "--answers",
        default=None,
        help="closed-set answers: JSON (list, or answer->label), one answer per line, or trainval_ans2label.pkl",
    )
    parser.add_argument(
        "--task", default=None, help="the task the checkpoint was fine-tuned for (default: cfg.task)"
    )
    parser.add_argument(
        "--image-size", type=int, default=None, help="input side (default: the task's patch size)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    parser.add_argument("--json", action="store_true", help="print the conversion report as JSON")


def read_answers(path: Path) -> list[str]:
    """Answers from JSON (a list, or answer -> label ordered by label), text (one per line) or a plain pickle."""
    from biomedgpt.model.convert.safe_pickle import load_plain_pickle

    if path.suffix in (".pkl", ".pickle", ".p"):
        data: Any = load_plain_pickle(path)
    elif path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
    else:
        data = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if isinstance(data, dict):
        data = [answer for answer, _ in sorted(data.items(), key=lambda item: item[1])]
    if not isinstance(data, list) or not data or not all(isinstance(a, str) for a in data):
        raise ValueError(f"{path}: expected a non-empty list of answer strings (or an answer -> label map)")
    return list(dict.fromkeys(a.strip() for a in data if a.strip()))


def served_tasks(task_cfg: dict[str, Any], requested: str | None) -> list[str]:
    from biomedgpt.tasks import TASKS

    if requested is not None:
        if requested not in TASKS:
            raise ValueError(f"unknown --task {requested!r} (known: {', '.join(TASKS)})")
        return [requested]
    name = task_cfg.get("_name") or task_cfg.get("task")
    if name in (None, "unify_task", "ofa"):  # pretraining, or OFA's base task: every pretraining task
        return list(PRETRAINING_TASKS)
    if name not in OFA_TASKS:
        raise ValueError(f"the checkpoint's task {name!r} has no counterpart here; name one with --task")
    return [OFA_TASKS[name]]


def decoder_prefixes(task_cfg: dict[str, Any], tasks: list[str]) -> dict[str, str]:
    """serving.json's `decoder_prefix`: the VQA task of a checkpoint fine-tuned with `--prompt-type prev_output`
    (or `src`) decodes after its question, as OFA's `vqa_gen` does."""
    prompt_type = task_cfg.get("prompt_type") or "none"
    if prompt_type not in PROMPT_TYPES:
        raise ValueError(f"the checkpoint's task option prompt_type={prompt_type!r} is not supported")
    mode = PROMPT_TYPES[prompt_type]
    return {"vqa": mode} if mode and "vqa" in tasks else {}


def serving_files(
    folder: Path, *, tasks: list[str], answers: list[str] | None, config: Any, task_cfg: dict[str, Any]
) -> None:
    """serving.json (tasks, BiomedGPT's prompt for each, decoder prefixes) and answers.json (closed-set tasks)."""
    from biomedgpt.tasks import get_task

    closed = [t for t in tasks if get_task(t).closed_set]
    if closed and answers is None:
        print(
            f"warning: no --answers: {', '.join(closed)} will decode open-ended (BiomedGPT's fine-tuned models "
            "decode over their answer list: pass --answers FILE for that)",
            file=sys.stderr,
        )
    serving = {
        "model_id": folder.name,
        "arch": config.arch,
        "tasks": tasks,
        "prompts": {t: get_task(t).biomedgpt_prompt for t in tasks},
        "decoder_prefix": decoder_prefixes(task_cfg, tasks),
        "generation": {
            "num_beams": 5,
            "max_new_tokens": 64,
            "length_penalty": 1.0,
            "no_repeat_ngram_size": 0,
        },
        "max_target_positions": config.max_target_positions,
        "image_size": config.image_size,
        "source": "biomedgpt import (OFA/BiomedGPT fairseq checkpoint)",
    }
    (folder / "serving.json").write_text(json.dumps(serving, indent=2) + "\n")
    closed_answers = {t: answers for t in closed} if answers is not None else {}
    (folder / "answers.json").write_text(json.dumps(closed_answers, indent=2) + "\n")


def run(args: argparse.Namespace) -> int:
    from biomedgpt.model.convert.importer import import_checkpoint

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        print(f"error: {out} exists and is not empty; pass --overwrite to replace it", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(f"importing {args.source} -> {out} ...", file=sys.stderr)
    try:
        answers = read_answers(Path(args.answers)) if args.answers else None
        with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
            work = Path(tmp) / out.name
            work.mkdir()
            result = import_checkpoint(
                args.source, work, bpe_dir=args.bpe_dir, weights=args.weights, image_size=args.image_size
            )
            tasks = served_tasks(result.task_config, args.task)
            serving_files(
                work, tasks=tasks, answers=answers, config=result.config, task_cfg=result.task_config
            )
            (work / "conversion.json").write_text(json.dumps(result.report, indent=2) + "\n")
            write_manifest(work, source=result.report["source"])
            _replace(work, out)
    except (OSError, ValueError, KeyError, pickle.UnpicklingError) as err:  # each refusal names its reason
        print(f"error: {err}", file=sys.stderr)
        return 2
    report = result.report
    if args.json:
        print(json.dumps(report))
        return 0
    tensors = report["tensors"]
    print(
        f"wrote {out} in {time.perf_counter() - started:.1f} s: {report['ofa_arch']} -> {result.config.arch}, "
        f"{result.config.image_size} px, vocab {result.config.vocab_size}, tasks {', '.join(tasks)}"
    )
    print(
        f"  {tensors['mapped']} tensors mapped, {len(tensors['tied'])} tied into one embedding, "
        f"{len(tensors['dropped'])} computed buffers checked and dropped, {len(tensors['filled'])} filled"
    )
    print(
        f"next: biomedgpt export --checkpoint {out} --out {out}-onnx --int8   (then biomedgpt serve --model ...)"
    )
    return 0


def write_manifest(folder: Path, *, source: dict[str, Any]) -> None:
    """manifest.json: the source checkpoint's sha256, versions, and the sha256 of every file written."""
    import torch
    import transformers

    from biomedgpt import __version__
    from biomedgpt.hashing import sha256_file

    files = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}
    manifest = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "imported_from": source,
        "versions": {
            "biomedgpt": __version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "files": files,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _replace(new: Path, target: Path) -> None:
    """Move the finished folder into place; an existing one is swapped out first, removed only after."""
    backup = None
    if target.exists():
        backup = target.with_name(f".{target.name}.old-{int(time.time())}")
        target.rename(backup)
    new.rename(target)
    if backup is not None:
        shutil.rmtree(backup)
