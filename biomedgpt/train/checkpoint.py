"""Self-describing, atomically written checkpoint folders, and the Lightning callback that writes them.

    <output_dir>/checkpoints/step-00000100/
        model.safetensors, config.json, generation_config.json    the model (safetensors only)
        tokenizer.json, tokenizer_config.json, preprocessor_config.json
        run_config.yaml                                           the resolved run config
        serving.json                                              the tasks trained and the prompt of each
        answers.json                                              closed-set answers of the TRAIN split, per task
        baselines.json                                            trivial baselines fitted on the TRAIN split
        manifest.json                                             step, data position, versions, sha256 of every file
        trainer_state/lightning.ckpt                              optimizer, schedule, loop and EMA state
    <output_dir>/checkpoints/latest                               name of the newest complete folder

A folder is written under a hidden `.partial` name and renamed when complete; `latest` is replaced atomically
after that. A kill at any moment leaves `latest` naming a complete folder. `biomedgpt.model.load_pretrained`
reads any checkpoint folder alone; the trainer state is only read to resume, with `weights_only=True`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from biomedgpt.hashing import sha256_file
from biomedgpt.train.run_folders import TRAINER_STATE, clean_partials, publish


def _versions() -> dict[str, str]:
    import torch
    import transformers

    from biomedgpt import __version__

    return {
        "biomedgpt": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "pytorch_lightning": pl.__version__,
    }


def write_manifest(folder: Path, *, step: int, extra: dict | None = None) -> None:
    files = {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}
    manifest = {
        "step": step,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": _versions(),
        "files": files,
        **(extra or {}),
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


class SelfDescribingCheckpoint(pl.Callback):
    """Writes a checkpoint folder every `every` optimizer steps (0: only at the end) and at the end of training."""

    def __init__(
        self,
        root: str | Path,
        *,
        every: int,
        processor,
        run_config_yaml: str,
        artifacts: dict[str, Any] | None = None,
    ) -> None:
        self.root = Path(root)
        self.every = every
        self.processor = processor
        self.run_config_yaml = run_config_yaml
        self.artifacts = dict(artifacts or {})
        """{file name: JSON document} written into every folder (`biomedgpt.train.artifacts.run_artifacts`:
        serving.json, answers.json, baselines.json), computed once when the run starts."""
        self._last_step = -1
        self.last_saved: Path | None = None
        """The folder of the newest `save` (on every rank; launchers report it, e.g. to Ray Train)."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.root.mkdir(parents=True, exist_ok=True)
            clean_partials(self.root)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every and step > 0 and step % self.every == 0 and step != self._last_step:
            self.save(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step != self._last_step:
            self.save(trainer, pl_module)

    def save(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Path:
        step = trainer.global_step
        final = self.root / f"step-{step:08d}"
        partial = self.root / f".{final.name}.partial"
        # Every rank takes part (sharded strategies gather state); rank 0 writes the files.
        trainer.save_checkpoint(
            partial / TRAINER_STATE, weights_only=False
        )  # full state: optimizer, loops, EMA
        if trainer.is_global_zero:
            model = pl_module.model
            swapped = pl_module.ema is not None
            if swapped:  # the published weights are the averaged ones; the trainer state keeps both
                pl_module.ema.swap(model)
            try:
                model.save_pretrained(partial)
            finally:
                if swapped:
                    pl_module.ema.swap(model)
            self.processor.save_pretrained(partial)
            (partial / "run_config.yaml").write_text(self.run_config_yaml)
            # Tasks and prompts (what `biomedgpt serve` offers), closed-set answers, baselines: export copies them.
            for name, doc in self.artifacts.items():
                (partial / name).write_text(json.dumps(doc, indent=2) + "\n")
            # Where the data stream stood: a resumed run starts its loader at this epoch and skips these batches.
            position = {
                "epoch": trainer.current_epoch,
                "epoch_batches": trainer.fit_loop.epoch_loop.batch_progress.current.processed,
            }
            write_manifest(partial, step=step, extra={"ema": swapped, **position})
            publish(partial, final)
        trainer.strategy.barrier()
        self._last_step = step
        self.last_saved = final
        return final
