"""The `train:` run-config section: optimizer, schedule, precision, loop cadence and output folder.

Plain dataclass, no torch or Lightning import. AdamW with linear warmup then the chosen decay,
label-smoothed cross-entropy, as in BiomedGPT/OFA fine-tuning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from biomedgpt.config import check

Schedule = Literal["cosine", "linear", "constant"]
Precision = Literal["32", "bf16-mixed", "16-mixed"]


@dataclass(kw_only=True)
class TrainConfig:
    """The `train:` section of a run config."""

    lr: float = 1e-4
    """Peak learning rate of AdamW, reached after warmup_steps."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay (not applied to biases and norms)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW (beta1, beta2), each in [0, 1)."""
    warmup_steps: int = 100
    """Optimizer steps of linear warmup from 0 to lr; at most max_steps."""
    max_steps: int = 1000
    """Optimizer steps in the whole run (the schedule decays over them)."""
    schedule: Schedule = "cosine"
    """Learning-rate decay after warmup: cosine or linear to 0, or constant."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this; 0 turns clipping off."""
    label_smoothing: float = 0.1
    """Label smoothing of the token cross-entropy; in [0, 1)."""
    location_sigma: float = 0.0
    """Where the target is a `<bin>` token, spread its probability over the neighbouring bins as a Gaussian of this
    standard deviation, in pixels of the model's input (0: the bin alone, as any other token). A box corner one
    pixel off then costs less than one across the image, so locations learn from the distance they are off."""
    precision: Precision = "32"
    """Lightning precision: 32 (fp32, CPU), bf16-mixed (GPU default), 16-mixed (fp16 with loss scaling)."""
    accumulate: int = 1
    """Batches whose gradients are summed per optimizer step."""
    seed: int = 0
    """Seed of model initialization, dropout and everything else random in training."""
    ema_decay: float | None = None
    """Keep an exponential moving average of the weights with this decay, in (0, 1); null: no EMA."""
    log_every: int = 10
    """Optimizer steps between metric logs."""
    val_every: int = 200
    """Optimizer steps between validation runs; 0: never."""
    ckpt_every: int = 500
    """Optimizer steps between checkpoints; 0: only the last one."""
    output_dir: str = "runs/default"
    """Run folder: checkpoints, logs, the resolved config."""
    resume: bool = False
    """Continue from the last checkpoint in output_dir (optimizer, schedule and step included)."""

    def __post_init__(self) -> None:
        check(math.isfinite(self.lr) and self.lr > 0, "lr", f"must be a finite number > 0, got {self.lr}")
        check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        check(
            all(0.0 <= b < 1.0 for b in self.betas),
            "betas",
            f"each must be in [0, 1), got {list(self.betas)}",
        )
        check(self.max_steps >= 1, "max_steps", f"must be >= 1, got {self.max_steps}")
        check(
            0 <= self.warmup_steps <= self.max_steps,
            "warmup_steps",
            f"must be in 0..max_steps ({self.max_steps}), got {self.warmup_steps}",
        )
        check(self.grad_clip >= 0, "grad_clip", f"must be >= 0 (0: off), got {self.grad_clip}")
        check(
            0.0 <= self.label_smoothing < 1.0,
            "label_smoothing",
            f"must be in [0, 1), got {self.label_smoothing}",
        )
        check(
            math.isfinite(self.location_sigma) and self.location_sigma >= 0,
            "location_sigma",
            f"must be a finite number >= 0 (0: off), got {self.location_sigma}",
        )
        check(self.accumulate >= 1, "accumulate", f"must be >= 1, got {self.accumulate}")
        check(
            self.ema_decay is None or 0.0 < self.ema_decay < 1.0,
            "ema_decay",
            f"must be in (0, 1) or null, got {self.ema_decay}",
        )
        check(self.log_every >= 1, "log_every", f"must be >= 1, got {self.log_every}")
        check(self.val_every >= 0, "val_every", f"must be >= 0 (0: never), got {self.val_every}")
        check(self.ckpt_every >= 0, "ckpt_every", f"must be >= 0 (0: last only), got {self.ckpt_every}")
        check(self.output_dir != "", "output_dir", "must be a folder path, got ''")


Launcher = Literal["local", "ray"]
Strategy = Literal["ddp", "fsdp"]


@dataclass(kw_only=True)
class DistConfig:
    """The `dist:` section: where and on how many workers training runs."""

    launcher: Launcher = "local"
    """local: Lightning's Trainer.fit in this process; ray: Ray Train's TorchTrainer, one process per worker."""
    num_workers: int = 1
    """Training processes (Ray workers); each gets one GPU when use_gpu is true."""
    use_gpu: bool = False
    """Train on GPUs (bf16 autocast is the usual companion: train.precision=bf16-mixed)."""
    strategy: Strategy = "ddp"
    """Data parallelism: ddp (replicated weights) or fsdp (sharded weights, for the large sizes)."""
    cpus_per_worker: int = 1
    """CPUs Ray reserves for each worker (its data loading runs there)."""
    address: str | None = None
    """Ray cluster address (ray://host:10001 or auto); null starts a local Ray instance."""
    storage: str | None = None
    """Where Ray Train keeps reported checkpoints: a local path or any fsspec URL (s3://, gs://); null: <output_dir>/ray."""
    max_failures: int = 0
    """Worker failures Ray Train recovers from by restarting from the last reported checkpoint; -1: unlimited."""

    def __post_init__(self) -> None:
        check(self.num_workers >= 1, "num_workers", f"must be >= 1, got {self.num_workers}")
        check(self.cpus_per_worker >= 1, "cpus_per_worker", f"must be >= 1, got {self.cpus_per_worker}")
        check(
            self.max_failures >= -1, "max_failures", f"must be >= -1 (-1: unlimited), got {self.max_failures}"
        )
        check(
            self.launcher == "ray" or self.num_workers == 1,
            "num_workers",
            f"the local launcher runs one process; use dist.launcher=ray for {self.num_workers} workers",
        )
