"""`biomedgpt finetune -c configs/finetune/RECIPE.yaml model.init_from=CKPT [KEY=VALUE ...]`.

The same training loop as pretraining, started from a checkpoint (`model.init_from`, a model or checkpoint folder)
with a recipe's task mixture, learning rate and schedule. Closed-set tasks decode with the answer trie built from
the training split only.
"""

from __future__ import annotations

import argparse
import sys

from biomedgpt.commands._config_args import add_config_arguments, resolve_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    cfg = resolve_config(args)
    if not cfg.model.init_from:
        print(
            "warning: model.init_from is not set: fine-tuning a randomly initialized model", file=sys.stderr
        )
    if not cfg.data.shards:
        print("error: data.shards is empty: give the fine-tuning shards", file=sys.stderr)
        return 2
    from biomedgpt.train.launch import launch

    final = launch(cfg)
    print(f"done: checkpoint {final}" if final else "done (no checkpoint written)")
    return 0
