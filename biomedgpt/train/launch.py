"""One per-worker training function, two launchers: local (`Trainer.fit` here) and Ray Train (`TorchTrainer`).

`train_worker(cfg)` builds everything a worker needs (tokenizer/processor, model, data loaders, Lightning Trainer)
and runs `fit`. `launch_local` calls it in this process; `biomedgpt.train.ray_launch.launch_ray` runs it on Ray
workers with Ray's DDP/FSDP strategy, environment and checkpoint reporting. Resume (`train.resume=true`) restores
weights, optimizer, schedule, step and RNG from the newest complete checkpoint and fast-forwards the
deterministic data stream by the batches already consumed, so the loss curve continues as if never stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


class SkipFirst:
    """Iterate a loader, skipping its first `skip` batches once (deterministic fast-forward on resume)."""

    def __init__(self, loader: Iterable, skip: int) -> None:
        self.loader = loader
        self.skip = skip

    def __iter__(self) -> Iterator:
        iterator = iter(self.loader)
        for _ in range(self.skip):
            next(iterator, None)
        self.skip = 0
        return iterator


def build_model(cfg: RunConfig, processor):
    """A fresh model of cfg.model.arch, or the weights of cfg.model.init_from (a checkpoint/model folder)."""
    from biomedgpt.model.configuration import BiomedGPTConfig
    from biomedgpt.model.modeling import BiomedGPTForConditionalGeneration

    if cfg.model.init_from:
        path = Path(cfg.model.init_from)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model.init_from={path} is not a model folder (no config.json)")
        model = BiomedGPTForConditionalGeneration.from_pretrained(path, use_safetensors=True)
        if model.config.vocab_size != len(processor.tokenizer):
            raise ValueError(
                f"{path} has vocabulary {model.config.vocab_size}, the tokenizer {len(processor.tokenizer)}"
            )
        return model
    config = BiomedGPTConfig.from_arch(
        cfg.model.arch,
        vocab_size=len(processor.tokenizer),
        image_size=cfg.model.image_size,
        dropout=cfg.model.dropout,
        attention_dropout=cfg.model.attention_dropout,
        encoder_drop_path_rate=cfg.model.drop_path_rate,
        decoder_drop_path_rate=cfg.model.drop_path_rate,
        max_source_positions=cfg.model.max_source_positions,
        max_target_positions=cfg.model.max_target_positions,
    )
    return BiomedGPTForConditionalGeneration(config)


def build_processor(cfg: RunConfig):
    from biomedgpt.model.processing import BiomedGPTProcessor

    if cfg.model.init_from and (Path(cfg.model.init_from) / "tokenizer.json").is_file():
        return BiomedGPTProcessor.from_pretrained(cfg.model.init_from)
    return BiomedGPTProcessor.default(image_size=cfg.model.image_size)


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
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    from biomedgpt.config import dump_yaml
    from biomedgpt.train.callbacks import CurvesPlot, TorchRngState
    from biomedgpt.train.checkpoint import TRAINER_STATE, SelfDescribingCheckpoint, latest_checkpoint
    from biomedgpt.train.module import BiomedGPTModule

    hooks = hooks or WorkerHooks()
    run_dir = Path(cfg.train.output_dir)
    ckpt_root = run_dir / "checkpoints"
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
    processor = build_processor(cfg)
    module = BiomedGPTModule(build_model(cfg, processor), cfg.train)
    resume = hooks.resume_from or (latest_checkpoint(ckpt_root) if cfg.train.resume else None)
    if cfg.train.resume and resume is None:
        log.warning("train.resume=true but %s holds no complete checkpoint: starting from scratch", ckpt_root)
    start_step = _checkpoint_step(resume) if resume else 0
    train_loader, val_loader = build_loaders(cfg, processor, rank=hooks.rank, world_size=hooks.world_size)
    if start_step:
        train_loader = SkipFirst(train_loader, start_step * cfg.train.accumulate)

    callbacks = [
        SelfDescribingCheckpoint(
            ckpt_root, every=cfg.train.ckpt_every, processor=processor, run_config_yaml=dump_yaml(cfg)
        ),
        CurvesPlot(run_dir),
        TorchRngState(),
        *hooks.callbacks,
    ]
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
            CSVLogger(run_dir, name="logs", version=""),
            TensorBoardLogger(run_dir, name="tensorboard", version=""),
        ],
        callbacks=callbacks,
        enable_checkpointing=False,  # our SelfDescribingCheckpoint writes the checkpoints
        use_distributed_sampler=False,  # the webdataset pipeline splits by node and worker itself
        default_root_dir=run_dir,
        enable_progress_bar=True,
    )
    if hooks.prepare_trainer is not None:
        trainer = hooks.prepare_trainer(trainer)
    ckpt_path = str(resume / TRAINER_STATE) if resume else None
    trainer.fit(
        module,
        train_dataloaders=train_loader,
        val_dataloaders=val_loader,
        ckpt_path=ckpt_path,
        weights_only=True,
    )
    return latest_checkpoint(ckpt_root)


def _checkpoint_step(folder: Path) -> int:
    import json

    return int(json.loads((folder / "manifest.json").read_text())["step"])


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
