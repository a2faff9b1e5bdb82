"""The `data:` run-config section: which shards to stream, how tasks mix, batch shapes and workers.

Plain dataclass, no torch or webdataset import; the streaming pipeline (`biomedgpt.data.pipeline`) reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from biomedgpt.config import check


@dataclass(kw_only=True)
class DataConfig:
    """The `data:` section of a run config."""

    shards: list[str] = field(default_factory=list)
    """Training shards: tar paths, brace patterns (`demo-train-{000000..000003}.tar`) or URLs."""
    val_shards: list[str] = field(default_factory=list)
    """Validation shards, in the same forms; empty skips validation."""
    mixture: dict[str, float] = field(default_factory=dict)
    """Sampling weight per task (`caption: 2.0`, `vqa: 1.0`); >= 0, not all zero. Empty: as the shards come."""
    batch_size: int = 8
    """Samples per batch on each device (before gradient accumulation)."""
    num_workers: int = 2
    """DataLoader worker processes per device; 0 reads in the main process."""
    max_prompt_tokens: int = 64
    """Prompt (encoder text) tokens kept per sample; longer prompts are truncated."""
    max_target_tokens: int = 64
    """Target (decoder) tokens kept per sample; longer targets are truncated."""
    shuffle_buffer: int = 1000
    """Samples held in the in-memory shuffle buffer; 0 turns sample shuffling off."""
    seed: int = 0
    """Seed of shard and sample shuffling."""
    augment: bool = False
    """Training images get mild random crops (tasks without positions in their targets) and intensity jitter
    (`biomedgpt/data/augment.py`); never flips. Validation and evaluation images are never augmented."""
    served_prompt_share: float | None = None
    """Training: the share of samples prompted with their task's served prompt (the one `biomedgpt serve` and eval
    use), the rest with one of its other training paraphrases; null: every training template alike (the served
    prompt one time in seven for most tasks)."""
    resampled: bool = False
    """Draw shards with replacement, endlessly (multi-node training); pair it with epoch_samples."""
    epoch_samples: int | None = None
    """Samples per epoch on each worker when resampled (webdataset `.with_epoch`); null: one pass."""

    def __post_init__(self) -> None:
        for name, shards in (("shards", self.shards), ("val_shards", self.val_shards)):
            for i, shard in enumerate(shards):
                check(shard != "", f"{name}[{i}]", "must be a path or URL, got ''")
        for task, weight in self.mixture.items():
            check(weight >= 0, f"mixture.{task}", f"must be >= 0, got {weight}")
        check(
            not self.mixture or any(w > 0 for w in self.mixture.values()),
            "mixture",
            "needs at least one weight > 0",
        )
        for name, value, low in (
            ("batch_size", self.batch_size, 1),
            ("num_workers", self.num_workers, 0),
            ("max_prompt_tokens", self.max_prompt_tokens, 1),
            ("max_target_tokens", self.max_target_tokens, 1),
            ("shuffle_buffer", self.shuffle_buffer, 0),
        ):
            check(value >= low, name, f"must be >= {low}, got {value}")
        check(
            self.served_prompt_share is None or 0.0 <= self.served_prompt_share <= 1.0,
            "served_prompt_share",
            f"must be in [0, 1] or null, got {self.served_prompt_share}",
        )
        check(
            self.epoch_samples is None or self.epoch_samples >= 1,
            "epoch_samples",
            f"must be >= 1 or null, got {self.epoch_samples}",
        )
