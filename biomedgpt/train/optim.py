"""AdamW with decay only on weight matrices, and the warmup-then-decay learning-rate schedule.

As in BiomedGPT/OFA fine-tuning (fairseq `adam` + `polynomial_decay` / cosine with warmup): no weight decay on
biases, norms (LayerNorm, BatchNorm, NormFormer head scales) and embeddings (token, position, type, relative
position tables), which are not matrices in the usual sense.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from biomedgpt.train.config import TrainConfig

NO_DECAY_TYPES = (nn.LayerNorm, nn.BatchNorm2d, nn.Embedding)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: matrices of Linear/Conv layers decay; biases, norms, embeddings and scales do not."""
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))  # tied weights (embeddings = output projection) counted once
            if isinstance(module, NO_DECAY_TYPES) or name == "bias" or param.ndim < 2:
                no_decay.append(param)
            else:
                decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay, "group": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "group": "no_decay"},
    ]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over `parameter_groups`; the fused CUDA kernel when every parameter lives on a GPU."""
    groups = parameter_groups(model, cfg.weight_decay)
    on_cuda = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=on_cuda or None)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the peak lr at optimizer step `step`: linear warmup, then cosine/linear decay to 0 or constant."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    if cfg.schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))


class EMA:
    """Exponential moving average of the trainable weights (Polyak averaging), used for evaluation when enabled."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for name, param in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(param.detach(), 1.0 - self.decay)

    @torch.no_grad()
    def swap(self, model: nn.Module) -> None:
        """Exchange the model's weights and the averaged ones (call twice to restore)."""
        for name, param in model.named_parameters():
            if name in self.shadow:
                tmp = param.detach().clone()
                param.copy_(self.shadow[name])
                self.shadow[name] = tmp

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, value in state.items():
            if name in self.shadow:
                self.shadow[name].copy_(value)
