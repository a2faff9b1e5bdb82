"""Shared `-c FILE` / `KEY=VALUE` / `--dump-config` arguments for every command that takes a run config.

A command module uses them like this:

    def add_arguments(parser):
        add_config_arguments(parser)

    def run(args):
        cfg = resolve_config(args)   # exits 2 with "error: ..." on a bad config
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from biomedgpt.run_config import RunConfig


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `-c/--config FILE` (repeatable), positional `KEY=VALUE` overrides and `--dump-config`."""
    parser.add_argument(
        "-c",
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        help="run-config YAML; repeat to layer files (later files win)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted overrides applied after the files, e.g. train.lr=3e-4 data.shards='[a.tar, b.tar]'",
    )
    parser.add_argument(
        "--dump-config",
        action="store_true",
        help="print the resolved config as YAML and exit",
    )


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """The validated `RunConfig` of `args`; on a bad config print "error: ..." and exit 2.

    With `--dump-config` it prints the resolved YAML and exits 0.
    """
    from biomedgpt.config import ConfigError, dump_yaml, load_config
    from biomedgpt.run_config import RunConfig

    try:
        cfg = load_config(RunConfig, args.config, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.dump_config:
        sys.stdout.write(dump_yaml(cfg))
        raise SystemExit(0)
    return cfg
