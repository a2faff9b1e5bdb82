"""`biomedgpt export --checkpoint DIR --out DIR [--int8]`: ONNX graphs with a KV cache, checked against PyTorch.

Writes encoder.onnx + decoder.onnx (dynamic batch, text, image-grid and cache axes), the tokenizer, configs,
serving.json (tasks and prompts as the checkpoint records them), answers.json and baselines.json (closed-set
answers and baselines of the TRAIN split, copied from the checkpoint: no training shard is read) and manifest.json
(graph signatures, opset, sha256 of every file, versions, parity figures). Every export runs `onnx.checker` (full) and a parity check
against PyTorch (two image sizes, two batch sizes); `--int8` adds dynamically quantized graphs, kept only if the
demo evaluation drops by at most one point on every metric. Serve the folder with `biomedgpt serve --model DIR`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from biomedgpt.export.onnx_export import EXPORTERS  # light: torch is imported inside its functions

    parser.add_argument(
        "--checkpoint", required=True, help="a checkpoint folder, or a run folder (its latest checkpoint)"
    )
    parser.add_argument("--out", required=True, help="the export folder to write")
    parser.add_argument("--int8", action="store_true", help="also write int8 graphs, gated by an evaluation")
    parser.add_argument(
        "--gate-shards",
        nargs="+",
        default=None,
        help="held-out shards for the int8 gate (default: the run's val shards)",
    )
    parser.add_argument("--gate-max-samples", type=int, default=64, help="samples per task in the int8 gate")
    parser.add_argument(
        "--exporter",
        choices=EXPORTERS,
        default=EXPORTERS[0],
        help="torch.onnx.export's exporter: torchscript (default, fast) or dynamo (torch.export)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export folder")
    parser.add_argument("--json", action="store_true", help="print the manifest as JSON")


def run(args: argparse.Namespace) -> int:
    from biomedgpt.export.onnx_export import ExportOptions, export_checkpoint
    from biomedgpt.export.parity import ParityError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    options = ExportOptions(
        int8=args.int8,
        gate_shards=args.gate_shards,
        gate_max_samples=args.gate_max_samples,
        exporter=args.exporter,
        overwrite=args.overwrite,
    )
    print(
        f"exporting {args.checkpoint} -> {args.out} (torch.onnx.export, {args.exporter} exporter) ...",
        file=sys.stderr,
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation chatter; real failures raise
            manifest = export_checkpoint(args.checkpoint, args.out, options)
    except (FileNotFoundError, FileExistsError, ParityError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(manifest))
        return 0
    print(f"wrote {args.out} in {manifest['seconds']} s")
    for case in manifest["parity"]["cases"]:
        print(
            f"  parity batch {case['batch']}, {case['image_size']} px: encoder {case['encoder_max_abs_diff']:.2e},"
            f" logits {case['logits_max_abs_diff']:.2e}, greedy identical: {case['greedy_identical']}"
        )
    if "int8" in manifest:
        gate = manifest["int8"]
        verdict = "kept" if gate["accepted"] else f"rejected ({gate.get('reason')})"
        print(f"  int8: {verdict}")
        for task, scores in gate.get("fp32", {}).items():
            shown = ", ".join(
                f"{k} {v:.3f} -> {gate['int8'][task].get(k, float('nan')):.3f}" for k, v in scores.items()
            )
            print(f"    {task}: {shown}")
    print(f"serve it: biomedgpt serve --model {args.out}")
    return 0
