"""The `eval:` run-config section: which checkpoint to score, on which shards, with which prompts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from biomedgpt.config import check

PromptMode = Literal["fixed", "eval"]


@dataclass(kw_only=True)
class EvalConfig:
    """The `eval:` section of a run config (used by `biomedgpt eval`)."""

    checkpoint: str | None = None
    """Model or checkpoint folder to evaluate (a run's checkpoints/step-* or any save_pretrained folder)."""
    shards: list[str] = field(default_factory=list)
    """Held-out shards to score (brace patterns, globs or folders); empty: data.val_shards."""
    split: str = "test"
    """Which split of those shards to score when a folder or mixed shards are given."""
    answer_shards: list[str] = field(default_factory=list)
    """No longer read (run configs recorded by earlier checkpoints still carry it): closed-set answer lists come
    from the model folder's answers.json, which training writes."""
    engine: Literal["auto", "torch", "onnxruntime"] = "auto"
    """The serving engine that answers the samples: auto is ONNX Runtime for an export folder, PyTorch otherwise."""
    tasks: list[str] = field(default_factory=list)
    """Tasks to score; empty: every task present in the shards."""
    prompt_modes: list[PromptMode] = field(default_factory=lambda: ["fixed", "eval"])
    """fixed: the prompts the model folder records (those it was trained with); eval: held-out paraphrases
    never seen in training. Each is reported."""
    max_samples: int | None = None
    """Score at most this many samples per task (null: all)."""
    batch_size: int = 16
    """Samples decoded together."""
    output_dir: str | None = None
    """Where report.json and predictions.jsonl go; null: <checkpoint>/eval."""

    def __post_init__(self) -> None:
        if self.answer_shards:
            import logging

            logging.getLogger(__name__).warning(
                "eval.answer_shards is no longer read: closed-set answers come from the model folder's answers.json"
            )
        check(
            self.split in ("train", "val", "test"), "split", f"must be train, val or test, got {self.split!r}"
        )
        check(bool(self.prompt_modes), "prompt_modes", "must name at least one of fixed, eval")
        check(
            self.max_samples is None or self.max_samples >= 1,
            "max_samples",
            f"must be >= 1, got {self.max_samples}",
        )
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
