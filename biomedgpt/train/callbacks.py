"""Training callbacks: the loss/metric curve figure written at the end of a run, RNG state for exact resume."""

from __future__ import annotations

import csv
from pathlib import Path

import pytorch_lightning as pl
import torch


def read_metrics_csv(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Lightning's CSVLogger file -> {metric: [(step, value), ...]} (empty cells skipped)."""
    series: dict[str, list[tuple[int, float]]] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            step = int(float(row.get("step") or 0))
            for key, value in row.items():
                if key in ("step", "epoch") or value in ("", None):
                    continue
                series.setdefault(key, []).append((step, float(value)))
    return series


def plot_curves(metrics_csv: Path, out_png: Path) -> Path | None:
    """Plot train/val losses and every other val metric against the step into one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = read_metrics_csv(metrics_csv)
    losses = {k: v for k, v in series.items() if "loss" in k and v}
    others = {k: v for k, v in series.items() if k.startswith("val/") and "loss" not in k and v}
    if not losses:
        return None
    fig, axes = plt.subplots(1, 2 if others else 1, figsize=(11 if others else 6, 4), squeeze=False)
    for name, points in sorted(losses.items()):
        steps, values = zip(*points)
        axes[0][0].plot(steps, values, label=name, marker="." if len(points) < 30 else None)
    axes[0][0].set(xlabel="optimizer step", ylabel="loss", title="loss")
    axes[0][0].legend(fontsize=7)
    if others:
        for name, points in sorted(others.items()):
            steps, values = zip(*points)
            axes[0][1].plot(steps, values, label=name, marker=".")
        axes[0][1].set(xlabel="optimizer step", title="validation metrics")
        axes[0][1].legend(fontsize=7)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


class CurvesPlot(pl.Callback):
    """At the end of training, draw `<run>/curves.png` from the CSV log."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            if isinstance(logger, pl.loggers.CSVLogger):
                logger.save()
                path = Path(logger.log_dir) / "metrics.csv"
                if path.is_file():
                    plot_curves(path, self.run_dir / "curves.png")


class TorchRngState(pl.Callback):
    """Saves and restores torch's CPU (and CUDA) RNG state with the trainer state, so a resumed run draws the
    same dropout masks as an uninterrupted one."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["torch_rng"] = torch.get_rng_state()
        if torch.cuda.is_available():
            checkpoint["cuda_rng"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if "torch_rng" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng"])
        if "cuda_rng" in checkpoint and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(checkpoint["cuda_rng"])
