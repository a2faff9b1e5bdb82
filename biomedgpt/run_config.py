"""The run-config tree: one `RunConfig` with a section per component, each defined next to its package.

    model:       biomedgpt.model.run_config.ModelConfig
    data:        biomedgpt.data.config.DataConfig
    train:       biomedgpt.train.config.TrainConfig
    generation:  biomedgpt.model.run_config.GenerationConfig
    dist:        biomedgpt.train.config.DistConfig
    eval:        biomedgpt.eval.config.EvalConfig

Built with `biomedgpt.config.load_config(RunConfig, files, overrides)`; see `biomedgpt config --keys`.
Light on purpose: importing it never imports torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from biomedgpt.config import check, to_dict
from biomedgpt.data.config import DataConfig
from biomedgpt.eval.config import EvalConfig
from biomedgpt.model.run_config import GenerationConfig, ModelConfig
from biomedgpt.train.config import DistConfig, TrainConfig


@dataclass(kw_only=True)
class RunConfig:
    """Everything one run needs: model, data, training and decoding settings."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """Which model to build and from which weights."""
    data: DataConfig = field(default_factory=DataConfig)
    """Which shards to read and how to batch them."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimizer, schedule, precision and loop cadence."""
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    """How outputs are decoded at validation, evaluation and serving time."""
    dist: DistConfig = field(default_factory=DistConfig)
    """Where training runs: in this process or on Ray workers, CPU or GPU."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """What `biomedgpt eval` scores: checkpoint, held-out shards, prompt modes."""

    def __post_init__(self) -> None:
        # Checks that span sections; each section validates its own fields.
        check(
            self.data.max_prompt_tokens <= self.model.max_source_positions,
            "data.max_prompt_tokens",
            f"must be <= model.max_source_positions ({self.model.max_source_positions}), "
            f"got {self.data.max_prompt_tokens}",
        )
        check(
            self.data.max_target_tokens <= self.model.max_target_positions,
            "data.max_target_tokens",
            f"must be <= model.max_target_positions ({self.model.max_target_positions}), "
            f"got {self.data.max_target_tokens}",
        )
        check(
            self.generation.max_new_tokens <= self.model.max_target_positions,
            "generation.max_new_tokens",
            f"must be <= model.max_target_positions ({self.model.max_target_positions}), "
            f"got {self.generation.max_new_tokens}",
        )


def absolute_paths(cfg: RunConfig) -> RunConfig:
    """`cfg` with its local paths made absolute (URLs, `pipe:` and `file:` sources kept as they are): what the Ray
    launcher gives its workers, each in a working directory of its own, and so what a Ray run records."""

    def absolute(path: str) -> str:
        if "://" in path or path.startswith(("pipe:", "file:")):
            return path
        return str(Path(path).expanduser().absolute())

    data = dataclasses.replace(
        cfg.data,
        shards=[absolute(p) for p in cfg.data.shards],
        val_shards=[absolute(p) for p in cfg.data.val_shards],
    )
    model = dataclasses.replace(cfg.model, init_from=cfg.model.init_from and absolute(cfg.model.init_from))
    train = dataclasses.replace(cfg.train, output_dir=absolute(cfg.train.output_dir))
    dist = dataclasses.replace(cfg.dist, storage=cfg.dist.storage and absolute(cfg.dist.storage))
    return dataclasses.replace(cfg, data=data, model=model, train=train, dist=dist)


def recipe_changes(recorded: RunConfig, wanted: RunConfig) -> list[str]:
    """ "key: old -> new" for each dotted key whose value differs between a run's recorded config and the recipe
    (`train.resume` aside: it says how a run started, not what it trains). Paths are compared absolute, as the Ray
    launcher records them (`absolute_paths`)."""

    def flat(tree: object, prefix: str = "") -> dict[str, object]:
        if not isinstance(tree, dict):
            return {prefix[:-1]: tree}
        return {k: v for key, sub in tree.items() for k, v in flat(sub, f"{prefix}{key}.").items()}

    old, new = flat(to_dict(absolute_paths(recorded))), flat(to_dict(absolute_paths(wanted)))
    return [
        f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
        for key in sorted(old.keys() | new.keys())
        if key != "train.resume" and old.get(key) != new.get(key)
    ]
