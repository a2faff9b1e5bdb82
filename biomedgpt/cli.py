"""The `biomedgpt` command line: one table, subcommand -> module that implements it.

Each command module defines `add_arguments(parser)` and `run(args) -> int`. Modules are imported
only when their subcommand runs, so `biomedgpt --help` stays instant and never imports torch. A command that
raises `biomedgpt.errors.UserError` (something the user can fix) prints `error: <message>`, one line without a
traceback, and exits 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from biomedgpt.errors import UserError

# name -> (module implementing it, one-line help). Nested groups use "group name".
COMMANDS: dict[str, tuple[str, str]] = {
    "describe": ("biomedgpt.commands.describe", "print an architecture's size and vocabulary layout"),
    "quickstart": ("biomedgpt.commands.quickstart", "build a tiny model and run generation end to end"),
    "config": ("biomedgpt.commands.config_cmd", "resolve -c YAML files and overrides; print the run config"),
    "tokenizer": ("biomedgpt.commands.tokenizer_cmd", "build or inspect the unified tokenizer"),
    "shard": (
        "biomedgpt.commands.shard",
        "write webdataset shards from a JSONL manifest, a dataset layout or synthetic data",
    ),
    "data": ("biomedgpt.commands.data_cmd", "verify shards or print their statistics"),
    "pretrain": ("biomedgpt.commands.pretrain", "multitask pretraining over shards (local or Ray Train)"),
    "finetune": (
        "biomedgpt.commands.finetune",
        "fine-tune a checkpoint with a recipe from configs/finetune/",
    ),
    "eval": ("biomedgpt.commands.eval_cmd", "score a checkpoint on held-out shards; writes report.json"),
    "import": (
        "biomedgpt.commands.import_cmd",
        "import an official OFA/BiomedGPT fairseq checkpoint into a model folder (safe, checked)",
    ),
    "export": (
        "biomedgpt.commands.export_cmd",
        "export a checkpoint to ONNX (KV cache), checked against PyTorch",
    ),
    "demo": ("biomedgpt.commands.demo", "the Gradio multitask demo over a model folder or the HTTP API"),
    "serve": ("biomedgpt.commands.serve", "serve a model over HTTP: task endpoints + OpenAI-compatible chat"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="biomedgpt",
        formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=16, width=100),
        description="BiomedGPT: one encoder-decoder for biomedical captioning, VQA, reports and more.",
    )
    parser.add_argument("--version", action="store_true", help="print the package version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        name = argv[0]
        module = importlib.import_module(COMMANDS[name][0])
        parser = argparse.ArgumentParser(prog=f"biomedgpt {name}", description=COMMANDS[name][1])
        module.add_arguments(parser)
        args = parser.parse_args(argv[1:])
        try:
            return int(module.run(args) or 0)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from biomedgpt import __version__

        print(__version__)
        return 0
    parser.print_help()
    return 0 if not argv else 2


if __name__ == "__main__":
    raise SystemExit(main())
