"""`biomedgpt shard`: write webdataset shards from a JSONL manifest or synthetic data.

    biomedgpt shard --input manifest.jsonl --out DIR [--name NAME] [--skip-invalid] [--overwrite]
    biomedgpt shard --synthetic N --out DIR [--seed S]
    biomedgpt shard --demo --out data_shards/demo [--demo-limit N] [--synthetic N]

Converters for public dataset formats plug in as `--format NAME --input PATH` through the
`FORMATS` table below (name -> function(args, command line) -> (summary, skipped problems)); `--demo` builds
the demo corpus from real registry data (biomedgpt.ingest.demo, data_shards/DEMO_DATA_CARD.md).
Exit codes: 0 on success, 2 on invalid input (every bad manifest line is printed as
`line N: field: message`).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from biomedgpt.ingest.converters import cli as converter_cli

# --format NAME -> function(args, command line for manifest.json) -> (DatasetSummary, skipped problems).
# Converters add one entry.
FORMATS: dict[str, converter_cli.FormatHandler] = {**converter_cli.FORMAT_HANDLERS}
DEFAULTS: dict[str, Any] = {
    "format": "jsonl",
    "max_per_shard": 1000,
    "licence": "unknown",
    "seed": 0,
    "image_size": 128,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # One of --input, --synthetic, --demo is required (checked in run(): --demo may take --synthetic).
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input", type=Path, help="JSONL manifest (or, with --format, a dataset folder)")
    source.add_argument(
        "--synthetic",
        type=int,
        metavar="N",
        help="write N synthetic samples (all tasks); with --demo: mix them in",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="build the demo corpus from real registry data (DEMO_DATA_CARD.md)",
    )
    parser.add_argument(
        "--demo-limit", type=int, metavar="N", help="with --demo: at most N samples per source"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="output folder for the shards and manifest.json"
    )
    parser.add_argument(
        "--format", default=DEFAULTS["format"], help="input format of --input (default: jsonl)"
    )
    parser.add_argument("--name", help="shard name prefix (default: the manifest's stem, or 'synthetic')")
    parser.add_argument("--skip-invalid", action="store_true", help="write the valid lines, report the rest")
    parser.add_argument("--overwrite", action="store_true", help="replace shards already in --out")
    parser.add_argument(
        "--max-per-shard", type=int, default=DEFAULTS["max_per_shard"], metavar="N", help="samples per shard"
    )
    parser.add_argument(
        "--licence", default=DEFAULTS["licence"], help="licence of the --input data, for manifest.json"
    )
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="seed of --synthetic")
    parser.add_argument(
        "--image-size", type=int, default=DEFAULTS["image_size"], help="image side of --synthetic samples"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    converter_cli.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from biomedgpt.data.shards import ShardsExistError
    from biomedgpt.ingest.manifest_input import ManifestError

    if args.demo:
        return _shard_demo(args)
    if args.demo_limit is not None:
        return _not_available("--demo-limit needs --demo")
    if args.input is None and args.synthetic is None:
        return _not_available("one of --input, --synthetic or --demo is required")
    if args.input is not None and args.format != "jsonl" and args.format not in FORMATS:
        known = ", ".join(["jsonl", *sorted(FORMATS)])
        return _not_available(
            f"--format {args.format}: this converter is not available yet (available: {known})"
        )
    if args.max_per_shard < 1:
        return _not_available("--max-per-shard must be >= 1")
    try:
        if args.synthetic is not None:
            summary, skipped = _shard_synthetic(args), []
        elif args.format == "jsonl":
            summary, skipped = _shard_jsonl(args)
        else:
            summary, skipped = FORMATS[args.format](args, command_line(args))
    except ManifestError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        print(
            f"error: {len(err.bad_lines)} invalid manifest lines; nothing was written "
            "(fix them, or pass --skip-invalid to write the rest)",
            file=sys.stderr,
        )
        return 2
    except ShardsExistError as err:
        print(f"error: {err} (pass --overwrite to replace them)", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for problem in skipped:
        print(f"skipped {problem}", file=sys.stderr)
    note = f"; skipped {len({p.line for p in skipped})} invalid lines" if skipped else ""
    print(summary.one_line() + note)
    return 0


def _not_available(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _shard_jsonl(args: argparse.Namespace) -> tuple[Any, list[Any]]:
    from biomedgpt.ingest.manifest_input import shard_manifest

    result = shard_manifest(
        args.input,
        args.out,
        name=args.name or _default_name(args.input),
        skip_invalid=args.skip_invalid,
        overwrite=args.overwrite,
        max_samples_per_shard=args.max_per_shard,
        licence=args.licence,
        command_line=command_line(args),
        progress=not args.no_progress,
    )
    return result.summary, result.skipped


def _shard_synthetic(args: argparse.Namespace) -> Any:
    from biomedgpt import __version__
    from biomedgpt.data.shards import SourceInfo, write_dataset
    from biomedgpt.ingest import synthetic

    if args.synthetic < 1:
        raise ValueError("--synthetic needs N >= 1")
    source = SourceInfo(name=synthetic.SOURCE, version=__version__, licence=synthetic.LICENCE)
    return write_dataset(
        synthetic.synthetic_samples(args.synthetic, seed=args.seed, image_size=args.image_size),
        args.out,
        name=args.name or "synthetic",
        overwrite=args.overwrite,
        max_samples_per_shard=args.max_per_shard,
        sources=[source],
        command_line=command_line(args),
        progress=not args.no_progress,
        total=args.synthetic,
    )


def _shard_demo(args: argparse.Namespace) -> int:
    """`--demo`: the demo corpus from real registry data (biomedgpt.ingest.demo, DEMO_DATA_CARD.md)."""
    import logging

    from biomedgpt.data.shards import ShardsExistError
    from biomedgpt.ingest.demo.builder import build_demo
    from biomedgpt.ingest.demo.common import DemoOptions

    if args.input is not None:
        return _not_available("--demo builds from the registry cache; it takes no --input")
    if args.max_per_shard < 1:
        return _not_available("--max-per-shard must be >= 1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        options = DemoOptions(limit=args.demo_limit, synthetic=args.synthetic or 0, seed=args.seed)
        result = build_demo(
            args.out,
            options=options,
            name=args.name or "demo",
            overwrite=args.overwrite,
            progress=not args.no_progress,
            max_samples_per_shard=args.max_per_shard,
            command_line=command_line(args),
        )
    except ShardsExistError as err:
        print(f"error: {err} (pass --overwrite to replace them)", file=sys.stderr)
        return 2
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, report in result.reports.items():
        if report.skip_reasons:
            reasons = ", ".join(f"{n} {why}" for why, n in sorted(report.skip_reasons.items()))
            print(f"{name}: {report.num_samples} samples; skipped {reasons}", file=sys.stderr)
    for name in result.unavailable:
        print(f"warning: source {name} unavailable (see {result.report_path})", file=sys.stderr)
    print(f"{result.summary.one_line()} in {result.seconds:.0f} s; report: {result.report_path}")
    return 0


def _default_name(path: Path) -> str:
    stem = path.name.split(".")[0]
    return re.sub(r"[^A-Za-z0-9_-]", "_", stem).strip("_-") or "dataset"


def command_line(args: argparse.Namespace) -> list[str]:
    """The command as typed (options left at their defaults omitted), for manifest.json."""
    words = ["biomedgpt", "shard"]
    for name, value in vars(args).items():
        if value is None or value is False or (name in DEFAULTS and value == DEFAULTS[name]):
            continue
        flag = "--" + name.replace("_", "-")
        words += [flag] if value is True else [flag, str(value)]
    return words
