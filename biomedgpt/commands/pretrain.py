"""`biomedgpt pretrain -c configs/pretrain/NAME.yaml [KEY=VALUE ...]`: multitask pretraining over shards.

Local by default (`Trainer.fit` in this process); `dist.launcher=ray dist.num_workers=N [dist.use_gpu=true]` runs
the same worker function on Ray Train. Checkpoints land in `<train.output_dir>/checkpoints/step-*/` (self-describing
folders; `latest` names the newest), logs in `logs/` (CSV) and `tensorboard/`, the curves in `curves.png`.
"""

from __future__ import annotations

import argparse
import sys

from biomedgpt.commands._config_args import add_config_arguments, resolve_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    cfg = resolve_config(args)
    if not cfg.data.shards:
        print(
            "error: data.shards is empty: give the training shards (e.g. data.shards='[data_shards/demo]')",
            file=sys.stderr,
        )
        return 2
    from biomedgpt.train.launch import launch

    final = launch(cfg)
    print(f"done: checkpoint {final}" if final else "done (no checkpoint written)")
    return 0
