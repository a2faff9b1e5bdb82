"""Two launchers of one per-worker training function (`biomedgpt.train.worker.train_worker`).

`launch(cfg)` runs the worker in this process (Lightning's `Trainer.fit`), or, with `dist.launcher: ray`, hands
the run to `biomedgpt.train.ray_launch.launch_ray`, which runs the same worker on Ray Train's `TorchTrainer`.
The worker lives in its own module so that the two launchers do not import each other.
"""

from __future__ import annotations

from pathlib import Path

from biomedgpt.run_config import RunConfig
from biomedgpt.train.worker import train_worker


def launch(cfg: RunConfig) -> Path | None:
    """Run training with the configured launcher; returns the final checkpoint folder."""
    if cfg.dist.launcher == "ray":
        from biomedgpt.train.ray_launch import launch_ray

        return launch_ray(cfg)
    if cfg.dist.use_gpu:
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("dist.use_gpu=true but no CUDA device is visible")
    return train_worker(cfg)
