"""The LightningModule: BiomedGPT + label-smoothed cross-entropy on target tokens (Gaussian over neighbouring
bins where the target is a location, with `train.location_sigma`), AdamW, warmup/decay, EMA.

The loss is computed once per step, here: the model is called with decoder inputs and no labels (it would
otherwise compute an unsmoothed full-vocabulary loss of its own).

Batches come from `biomedgpt.data.pipeline` collation: input_ids, attention_mask, patch_images, patch_masks,
labels (-100 where ignored), optional code_masks, plus `tasks` (a list of task names) for per-task logging.
Precision (bf16 autocast), gradient clipping and accumulation are Lightning's, set by the launcher.
"""

from __future__ import annotations

from collections import defaultdict

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from biomedgpt.model.modeling import shift_tokens_right
from biomedgpt.train.config import TrainConfig
from biomedgpt.train.optim import EMA, build_optimizer, build_scheduler

MODEL_INPUTS = ("input_ids", "attention_mask", "patch_images", "patch_masks", "code_masks")


def token_loss(logits: torch.Tensor, labels: torch.Tensor, *, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over target tokens (labels != -100), in fp32 whatever the autocast dtype. `logits`
    (B, L, V) with `labels` (B, L), or only the labelled positions' (N, V) with (N,)."""
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=-100,
        label_smoothing=label_smoothing,
    )


def location_aware_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    label_smoothing: float,
    bins: tuple[int, int],
    sigma: float,
) -> torch.Tensor:
    """`token_loss` of (N, V) logits against (N,) labels, except that where the label is a location token
    (`bins` = the first and last `<bin>` ids) the target is a Gaussian over the bins of standard deviation `sigma`
    (in bins) around it, not the bin alone. The label smoothing's uniform share is kept for every token: with no
    location label, this equals `token_loss`."""
    logp = F.log_softmax(logits.float(), dim=-1)
    nll = -logp.gather(1, labels[:, None]).squeeze(1)
    first, last = bins
    is_bin = labels.ge(first) & labels.le(last)
    if bool(is_bin.any()):
        grid = torch.arange(last - first + 1, device=labels.device, dtype=torch.float32)
        centre = (labels[is_bin] - first).float()[:, None]
        weights = torch.softmax(-0.5 * ((grid[None, :] - centre) / sigma) ** 2, dim=-1)  # each row sums to 1
        nll = nll.masked_scatter(is_bin, -(weights * logp[is_bin, first : last + 1]).sum(dim=-1))
    return ((1.0 - label_smoothing) * nll - label_smoothing * logp.mean(dim=-1)).mean()


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, L) cross-entropy of each target token in fp32, 0 where labels are -100."""
    return F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=-100, reduction="none")


def per_sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B,) mean token loss of each sample (for per-task logging)."""
    counts = labels.ne(-100).sum(dim=1).clamp(min=1)
    return token_losses(logits, labels).sum(dim=1) / counts


class BiomedGPTModule(pl.LightningModule):
    def __init__(
        self, model: torch.nn.Module, train_cfg: TrainConfig, *, location_bins: tuple[int, int] | None = None
    ) -> None:
        """`location_bins`: the first and last `<bin>` ids of the vocabulary, for `train.location_sigma`."""
        super().__init__()
        if train_cfg.location_sigma > 0 and location_bins is None:
            raise ValueError("train.location_sigma needs the vocabulary's <bin> ids (location_bins)")
        self.location_bins = location_bins
        # The ResNet stem's weights and inputs channels-last take oneDNN's NHWC convolutions, forward and backward:
        # a demo step (tiny, 64 px, batch 16, one core) 0.61 -> 0.53 s. Set before DDP wraps the model, so its
        # gradient buckets take the same strides; safetensors and EMA read the values whatever the layout.
        self.model = model.to(memory_format=torch.channels_last)
        self.train_cfg = train_cfg
        self.ema = EMA(model, train_cfg.ema_decay) if train_cfg.ema_decay else None
        self._ema_swapped = False

    def forward(self, batch: dict, logits_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, V) logits of the targets, teacher-forced: the decoder reads the labels shifted right; with
        `logits_mask` (B, L) bool, only those positions' logits, (N, V).

        The model is called without `labels`, so it computes no loss of its own: the step computes the loss once,
        with its label smoothing (`step_loss`)."""
        inputs = {k: batch[k] for k in MODEL_INPUTS if batch.get(k) is not None}
        if "patch_images" in inputs:  # channels-last, as the stem's weights (__init__)
            inputs["patch_images"] = inputs["patch_images"].contiguous(memory_format=torch.channels_last)
        config = self.model.config
        decoder_input_ids = shift_tokens_right(
            batch["labels"], config.pad_token_id, config.decoder_start_token_id
        )
        return self.model(**inputs, decoder_input_ids=decoder_input_ids, logits_mask=logits_mask).logits

    def step_loss(self, batch: dict) -> torch.Tensor:
        """The training loss of a batch: label-smoothed token cross-entropy, computed once, on the labelled
        positions only (the logits of padding are never computed: in a batch that mixes one-word answers with
        masks of a hundred tokens, they are most of the vocabulary projection's work)."""
        labelled = batch["labels"].ne(-100)
        logits = self(batch, logits_mask=labelled)  # (N, V)
        labels, smoothing = batch["labels"][labelled], self.train_cfg.label_smoothing
        if self.location_bins is not None and self.train_cfg.location_sigma > 0:
            first, last = self.location_bins
            # sigma in input pixels -> bins (bin = coord / size * (num_bins - 1))
            sigma = self.train_cfg.location_sigma * (last - first) / self.model.config.image_size
            return location_aware_loss(
                logits, labels, label_smoothing=smoothing, bins=self.location_bins, sigma=sigma
            )
        return token_loss(logits, labels, label_smoothing=smoothing)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.step_loss(batch)
        size = batch["labels"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log(
            "train/target_tokens", batch["labels"].ne(-100).sum().float(), reduce_fx="sum", batch_size=size
        )
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=size)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self(batch)
        labels = batch["labels"]
        size = labels.shape[0]
        mask = labels.ne(-100)
        losses = token_losses(logits, labels)  # once: the batch mean and the per-sample means come from it
        self.log("val/loss", losses.sum() / mask.sum(), prog_bar=True, batch_size=size, sync_dist=True)
        correct = (logits.argmax(-1).eq(labels) & mask).sum().float() / mask.sum().clamp(min=1)
        self.log("val/token_acc", correct, batch_size=size, sync_dist=True)
        per_sample = losses.sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        by_task: dict[str, list[torch.Tensor]] = defaultdict(list)
        for task, value in zip(batch.get("tasks", []), per_sample):
            by_task[task].append(value)
        for task, values in by_task.items():
            self.log(f"val/loss_{task}", torch.stack(values).mean(), batch_size=len(values), sync_dist=True)

    def configure_optimizers(self):
        optimizer = build_optimizer(self.model, self.train_cfg)
        scheduler = build_scheduler(optimizer, self.train_cfg)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # EMA: update right after each optimizer step (before any callback, so a checkpoint written at step k holds the
    # average including step k); evaluate and publish with the averaged weights.
    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update(self.model)

    def on_validation_start(self) -> None:
        if self.ema is not None and not self._ema_swapped:
            self.ema.swap(self.model)
            self._ema_swapped = True

    def on_validation_end(self) -> None:
        if self.ema is not None and self._ema_swapped:
            self.ema.swap(self.model)
            self._ema_swapped = False

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.ema is not None:
            checkpoint["ema"] = self.ema.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.ema is not None and "ema" in checkpoint:
            self.ema.load_state_dict(checkpoint["ema"])
