"""The per-worker training function that both launchers run (`biomedgpt.train.launch`: local and Ray Train).

`train_worker(cfg)` builds everything a worker needs (tokenizer/processor, model, data loaders, Lightning Trainer)
and runs `fit`. `biomedgpt.train.launch.launch` calls it in this process; `biomedgpt.train.ray_launch.launch_ray`
runs it on Ray workers with Ray's DDP/FSDP strategy, environment and checkpoint reporting (through `WorkerHooks`).
Resume (`train.resume=true`) restores weights, optimizer, schedule, step and RNG from the newest complete checkpoint
and fast-forwards the deterministic data stream to the data position in its manifest (data epoch, batches
consumed), so the loss curve continues as if never stopped; logs/metrics.csv keeps the rows logged before the
checkpoint.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biomedgpt.errors import UserError
from biomedgpt.run_config import RunConfig

log = logging.getLogger(__name__)


@dataclass
class WorkerHooks:
    """What a launcher adds to the worker: Lightning strategy/plugins/callbacks and a trainer wrapper (Ray)."""

    strategy: Any = "auto"
    plugins: list = field(default_factory=list)
    callbacks: list = field(default_factory=list)
    prepare_trainer: Any = None
    resume_from: Path | None = None  # a checkpoint folder restored by the launcher (Ray after a failure)
    rank: int = 0
    world_size: int = 1
    progress_bar: bool = True  # Lightning's progress bar (Ray workers print step lines)


class BatchStream:
    """A data loader as the Trainer sees it: it starts at a data position (data epoch `epoch`, its first `skip`
    batches skipped: the deterministic fast-forward on resume) and keeps torch's global RNG out of batch making.

    The RNG: with data.num_workers=0 batches are made in this process, and whatever the pipeline draws from torch's
    global generator (e.g. a task that builds its image tokenizer model on first use) would shift the dropout masks
    of a resumed run against an uninterrupted one. Lazy: Lightning calls `iter()` once on an iterable that is not
    a DataLoader just to check it, and nothing may be read or counted then (a StreamingLoader moves to its next
    epoch at every `iter()`). Fresh and resumed runs use it alike, so the Trainer treats both the same.
    """

    def __init__(self, loader: Iterable, *, epoch: int = 0, skip: int = 0) -> None:
        self.loader, self.epoch, self.skip = loader, epoch, skip
        self._first = True

    def __iter__(self) -> Iterator:
        return self._batches()

    def _batches(self) -> Iterator:
        import torch

        with torch.random.fork_rng(devices=[]):
            if self._first and hasattr(self.loader, "set_epoch"):
                self.loader.set_epoch(self.epoch)
            iterator = iter(self.loader)
            skip, self.skip, self._first = self.skip, 0, False
            for _ in range(skip):
                if next(iterator, None) is None:
                    return  # the checkpoint was written at the end of this epoch
        while True:
            with torch.random.fork_rng(devices=[]):
                batch = next(iterator, None)
            if batch is None:
                return
            yield batch


def build_loaders(cfg: RunConfig, processor, *, rank: int, world_size: int):
    from biomedgpt.data.pipeline import build_loader

    common = dict(
        tokenizer=processor.tokenizer, image_size=cfg.model.image_size, rank=rank, world_size=world_size
    )
    train = build_loader(cfg.data, split="train", training=True, **common)
    val = None
    if cfg.train.val_every and cfg.data.val_shards:
        val = build_loader(cfg.data, split="val", training=False, **common)
    return train, val


def train_worker(cfg: RunConfig, hooks: WorkerHooks | None = None) -> Path | None:
    """Train on this worker; returns the newest checkpoint folder (on every rank)."""
    from biomedgpt.model.build import build_model, build_processor, check_init_from  # no torch at import
    from biomedgpt.train.run_folders import TRAINER_STATE, latest_checkpoint

    hooks = hooks or WorkerHooks()
    run_dir = Path(cfg.train.output_dir)
    ckpt_root = run_dir / "checkpoints"
    # The folders a run starts from are checked before PyTorch Lightning loads (about 8 s of CPU): a wrong
    # model.init_from or a changed checkpoint fails in a second, not after the imports.
    if cfg.model.init_from:
        check_init_from(Path(cfg.model.init_from))
    resume = hooks.resume_from or (latest_checkpoint(ckpt_root) if cfg.train.resume else None)
    if cfg.train.resume and resume is None:
        log.warning("train.resume=true but %s holds no complete checkpoint: starting from scratch", ckpt_root)
    if resume is not None:
        check_resume(resume)

    import pytorch_lightning as pl
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    from biomedgpt.config import dump_yaml
    from biomedgpt.train.artifacts import run_artifacts
    from biomedgpt.train.callbacks import CurvesPlot, TorchRngState
    from biomedgpt.train.checkpoint import SelfDescribingCheckpoint
    from biomedgpt.train.module import BiomedGPTModule

    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
    processor = build_processor(cfg)
    module = BiomedGPTModule(
        build_model(cfg, processor), cfg.train, location_bins=processor.tokenizer.layout.bin_range
    )
    # serving.json, answers.json, baselines.json: from the TRAIN shards, once (rank 0 writes the checkpoints).
    artifacts = run_artifacts(cfg, resume=resume) if hooks.rank == 0 else None
    train_loader, val_loader = build_loaders(cfg, processor, rank=hooks.rank, world_size=hooks.world_size)
    start_step, epoch, skip = _data_position(resume, accumulate=cfg.train.accumulate) if resume else (0, 0, 0)
    train_batches = BatchStream(train_loader, epoch=epoch, skip=skip)
    val_batches = BatchStream(val_loader) if val_loader is not None else None

    callbacks = [
        SelfDescribingCheckpoint(
            ckpt_root,
            every=cfg.train.ckpt_every,
            processor=processor,
            run_config_yaml=dump_yaml(cfg),
            artifacts=artifacts,
        ),
        CurvesPlot(run_dir),
        TorchRngState(),
        *hooks.callbacks,
    ]
    csv_logger = CSVLogger(run_dir, name="logs", version="")
    if resume and hooks.rank == 0:
        _keep_logged_history(csv_logger, before_step=start_step)
    trainer = pl.Trainer(
        max_steps=cfg.train.max_steps,
        precision=cfg.train.precision,
        accelerator="gpu" if cfg.dist.use_gpu else "cpu",
        devices="auto" if hooks.prepare_trainer else 1,
        strategy=hooks.strategy,
        plugins=hooks.plugins or None,
        gradient_clip_val=cfg.train.grad_clip or None,
        accumulate_grad_batches=cfg.train.accumulate,
        log_every_n_steps=cfg.train.log_every,
        val_check_interval=cfg.train.val_every if val_loader is not None else None,
        check_val_every_n_epoch=None,
        limit_val_batches=None if val_loader is not None else 0,
        num_sanity_val_steps=0,
        logger=[
            csv_logger,
            TensorBoardLogger(run_dir, name="tensorboard", version=""),
        ],
        callbacks=callbacks,
        enable_checkpointing=False,  # our SelfDescribingCheckpoint writes the checkpoints
        use_distributed_sampler=False,  # the webdataset pipeline splits by node and worker itself
        default_root_dir=run_dir,
        enable_progress_bar=hooks.progress_bar,
    )
    if hooks.prepare_trainer is not None:
        trainer = hooks.prepare_trainer(trainer)
    ckpt_path = str(resume / TRAINER_STATE) if resume else None
    try:
        trainer.fit(
            module,
            train_dataloaders=train_batches,
            val_dataloaders=val_batches,
            ckpt_path=ckpt_path,
            weights_only=True,
        )
    except pickle.UnpicklingError as err:
        if ckpt_path is None:
            raise
        raise UserError(
            f"refusing to resume from {ckpt_path}: {_refusal(err)}; nothing in it was run. Start from its weights "
            f"instead (model.init_from={resume} train.resume=false: safetensors hold no code), or remove {resume} "
            "to resume from an earlier checkpoint"
        ) from None
    return latest_checkpoint(ckpt_root)


def _refusal(err: Exception) -> str:
    """One line of torch's (long, multi-line) weights-only refusal: the global it would not load."""
    import re

    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err)) or re.search(
        r"Unsupported operand \d+", str(err)
    )
    what = f" ({found.group(0)})" if found else ""
    return f"a safe (weights-only) load refuses it: it holds Python objects that are not tensors or plain data{what}"


def check_resume(folder: Path) -> None:
    """The trainer state and manifest of a checkpoint to resume from: present and matching the manifest's sha256
    (a changed state is refused before it is unpickled, even with the weights-only loader)."""
    from biomedgpt.hashing import verify_files
    from biomedgpt.train.run_folders import TRAINER_STATE

    hint = f"remove {folder} to resume from an earlier checkpoint, or set train.resume=false"
    if not (folder / TRAINER_STATE).is_file():
        raise UserError(f"cannot resume from {folder}: it has no {TRAINER_STATE}; {hint}")
    verify_files(
        folder, [str(TRAINER_STATE)], require_manifest=True, what=f"the checkpoint {folder}", hint=hint
    )


def _data_position(folder: Path, *, accumulate: int) -> tuple[int, int, int]:
    """(step, data epoch, batches of that epoch already consumed) of a checkpoint folder's manifest."""
    import json

    manifest = json.loads((folder / "manifest.json").read_text())
    step = int(manifest["step"])
    # Manifests written before the data position was recorded: one epoch, `accumulate` batches per step.
    return step, int(manifest.get("epoch", 0)), int(manifest.get("epoch_batches", step * accumulate))


def _keep_logged_history(csv_logger, *, before_step: int) -> None:
    """Carry the rows an earlier run logged before `before_step` into a resumed run's log.

    Lightning's CSV writer deletes metrics.csv when it opens it; without this, logs/metrics.csv and curves.png of
    a resumed run would start at the checkpoint.
    """
    import csv

    path = Path(csv_logger.log_dir) / "metrics.csv"
    if not path.is_file():
        return
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    writer = csv_logger.experiment  # opening it deletes the old file
    for row in rows:
        step = int(float(row.get("step") or 0))
        values = {k: _number(v) for k, v in row.items() if k != "step" and v not in ("", None)}
        if step < before_step and values:
            writer.log_metrics(values, step)


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)
