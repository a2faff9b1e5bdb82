"""The `--format NAME` side of `biomedgpt shard`: converter options and the handler per format.

`biomedgpt.commands.shard` puts ``FORMAT_HANDLERS`` into its ``FORMATS`` table and calls
``add_arguments``; it hands each handler the command line to record in manifest.json, so that this
module needs nothing from the command (ingestion sits below the commands). Every option here
defaults to None/False so that the manifest's command line (which omits options left at their
defaults) shows only what was typed; ``ConvertOptions`` holds the real defaults. Importing this
module imports nothing heavy.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from biomedgpt.ingest.converters import CONVERTERS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "dataset converters",
        f"--format {{{','.join(CONVERTERS)}}} --input DIR converts a public dataset layout "
        "(see data_shards/README.md); licence defaults to the original dataset's, noted as user-provided",
    )
    group.add_argument("--max-side", type=int, metavar="PX", help="downscale images to this longer side")
    group.add_argument("--language", help="slake: q_lang to keep (default en; 'all' keeps every one)")
    group.add_argument("--flag", help="medmnist: dataset flag, e.g. pathmnist (default: the .npz name)")
    group.add_argument("--labels", type=Path, help='medmnist: JSON class names {"0": name, ...}')
    group.add_argument(
        "--allow-burned-in", action="store_true", help="dicom-folder: convert BurnedInAnnotation=YES files"
    )
    group.add_argument("--target", help="volumes: structure the masks show (default lesion)")
    group.add_argument(
        "--empty-fraction", type=float, metavar="F", help="volumes: share of empty slices kept (default 0.1)"
    )
    group.add_argument("--modality", help="volumes: image modality, e.g. CT or MR (default: dataset.json)")


def options_from_args(args: argparse.Namespace) -> Any:
    """`ConvertOptions` from the parsed options; unset ones keep the dataclass defaults."""
    from biomedgpt.ingest.converters.common import ConvertOptions

    given = {
        "max_side": args.max_side,
        "language": args.language,
        "flag": args.flag,
        "labels": args.labels,
        "allow_burned_in": args.allow_burned_in or None,
        "target": args.target,
        "empty_fraction": args.empty_fraction,
        "modality": args.modality,
    }
    return ConvertOptions(**{name: value for name, value in given.items() if value is not None})


def run_format(args: argparse.Namespace, command_line: list[str]) -> tuple[Any, list[Any]]:
    """Convert `args.input` as `args.format`; returns (DatasetSummary, skipped items).

    `command_line` is the command as typed, for manifest.json (`biomedgpt.commands.shard.command_line`)."""
    from biomedgpt.ingest.converters import convert

    result = convert(
        args.format,
        args.input,
        args.out,
        options=options_from_args(args),
        command_line=command_line,
        name=args.name,
        overwrite=args.overwrite,
        max_samples_per_shard=args.max_per_shard,
        licence=None if args.licence == "unknown" else args.licence,
        progress=not args.no_progress,
    )
    if result.skipped:
        from biomedgpt.ingest.converters.common import SkipLog

        summary = SkipLog(list(result.skipped)).summary()
        print(f"{args.format}: skipped {summary} input items", file=sys.stderr)
    return result.summary, result.skipped


FormatHandler = Callable[[argparse.Namespace, list[str]], tuple[Any, list[Any]]]
"""(parsed args, command line for manifest.json) -> (DatasetSummary, skipped items)."""
FORMAT_HANDLERS: dict[str, FormatHandler] = dict.fromkeys(CONVERTERS, run_format)
"""--format name -> handler, for `biomedgpt.commands.shard.FORMATS`."""
