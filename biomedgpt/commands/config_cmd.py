"""`biomedgpt config`: resolve `-c` YAML files and `KEY=VALUE` overrides, print the run config.

Examples:

    biomedgpt config -c configs/quickstart.yaml train.lr=3e-4          # YAML
    biomedgpt config -c configs/quickstart.yaml --json                 # JSON
    biomedgpt config --keys                                            # every key, its type and meaning
"""

from __future__ import annotations

import argparse
import json
import sys

from biomedgpt.commands._config_args import add_config_arguments, resolve_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the resolved config as JSON")
    output.add_argument(
        "--keys",
        action="store_true",
        help="list every key with its type, resolved value and meaning",
    )


def run(args: argparse.Namespace) -> int:
    from biomedgpt.config import describe_keys, dump_yaml, to_dict

    cfg = resolve_config(args)
    if args.json:
        print(json.dumps(to_dict(cfg), indent=2))
    elif args.keys:
        values = to_dict(cfg)
        for key, type_name, doc in describe_keys(type(cfg)):
            print(f"{key} = {json.dumps(_lookup(values, key))}  [{type_name}]")
            if doc:
                print(f"    {' '.join(doc.split())}")
    else:
        sys.stdout.write(dump_yaml(cfg))
    return 0


def _lookup(data: dict, key: str) -> object:
    """The value at a dotted key of a config dict."""
    for part in key.split("."):
        data = data[part]
    return data
