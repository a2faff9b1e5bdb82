"""`biomedgpt eval -c CONFIG eval.checkpoint=DIR [eval.shards=...] [--json]`: score a checkpoint on held-out data.

Answered through the serving engine (PyTorch for a checkpoint, ONNX Runtime for an export). Per task and prompt
mode (the prompts the model folder records, and held-out paraphrases), next to the task's trivial baselines:
VQA accuracy overall/closed/open, BLEU-1..4, ROUGE-L, CIDEr-D (+ findings P/R/F1 for reports), Dice/IoU,
classification accuracy and macro-F1, grounding accuracy at IoU 0.5, detection mAP@0.5. Writes report.json and
predictions.jsonl (default: <checkpoint>/eval/).
"""

from __future__ import annotations

import argparse
import json
import sys

from biomedgpt.commands._config_args import add_config_arguments, resolve_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")


def run(args: argparse.Namespace) -> int:
    cfg = resolve_config(args)
    from biomedgpt.eval.runner import evaluate

    try:
        report = evaluate(cfg, device=args.device)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report))
        return 0
    print(
        f"{report['checkpoint']} on {len(report['shards'])} shard(s), split {report['split']}, engine {report['engine']}:"
    )
    for task, result in report["tasks"].items():
        for mode, scores in _score_lines(task, result):
            print(f"  {task:<15} {mode:<28} n={result['samples']:<5} {scores}")
    print(f"report: {report['output_dir']}/report.json")
    return 0


def _score_lines(name: str, result: dict) -> list[tuple[str, str]]:
    """(label, "metric value, ...") per prompt mode and per baseline, main metrics (the task's `metrics`) first."""
    from biomedgpt.tasks import get_task

    main = get_task(name).metrics

    def shown(scores: dict) -> str:
        keys = [k for k in main if k in scores] or [k for k in scores if not isinstance(scores[k], dict)]
        return ", ".join(
            f"{k} {scores[k]:.4f}" if isinstance(scores[k], float) else f"{k} {scores[k]}" for k in keys
        )

    lines = []
    for mode, scores in result.items():
        if mode == "baseline":
            nested = {k: v for k, v in scores.items() if isinstance(v, dict)}
            if "majority_answer" in scores:  # closed-set tasks: the majority answer and its scores
                flat = {k: v for k, v in scores.items() if k not in nested}
                lines.append((f"baseline {scores.get('majority_answer')!r}"[:28], shown(flat)))
            for baseline, values in nested.items():
                lines.append((f"baseline {baseline}", shown(values)))
        elif isinstance(scores, dict):
            lines.append((mode, shown(scores)))
    return lines
