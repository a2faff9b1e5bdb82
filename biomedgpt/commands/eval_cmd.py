"""`biomedgpt eval -c CONFIG eval.checkpoint=DIR [eval.shards=...] [--json]`: score a checkpoint on held-out data.

Per task and prompt mode (BiomedGPT's fixed prompts and held-out paraphrases): VQA accuracy overall/closed/open,
BLEU-1..4, ROUGE-L, CIDEr-D (+ findings P/R/F1 for reports), Dice/IoU, classification accuracy and macro-F1,
grounding accuracy at IoU 0.5, detection mAP@0.5. Writes report.json and predictions.jsonl (default:
<checkpoint>/eval/).
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
    print(f"{report['checkpoint']} on {len(report['shards'])} shard(s), split {report['split']}:")
    for task, result in report["tasks"].items():
        for mode, scores in result.items():
            if isinstance(scores, dict):
                shown = ", ".join(
                    f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in scores.items()
                )
                print(f"  {task:<15} {mode:<6} n={result['samples']:<5} {shown}")
    print(f"report: {report['output_dir']}/report.json")
    return 0
