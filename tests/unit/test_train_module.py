"""The training step's loss: computed once (the model is called without labels), label-smoothed, ignoring -100."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from biomedgpt.train.config import TrainConfig
from biomedgpt.train.module import BiomedGPTModule, per_sample_loss, token_loss, token_losses
from tests.conftest import lively_model


def _batch(batch: int = 3, *, vocab: int = 300, image_size: int = 64, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (batch, 7), generator=g)
    ids[1, 5:] = 1  # padded prompt
    ids[:, 0] = 0
    labels = torch.randint(4, vocab, (batch, 6), generator=g)
    labels[:, -1] = 2  # eos
    labels[0, -2:] = -100  # a shorter target, padded with the ignore index
    return {
        "input_ids": ids,
        "attention_mask": ids.ne(1),
        "patch_images": torch.randn(batch, 3, image_size, image_size, generator=g),
        "patch_masks": torch.tensor([True, True, False]),
        "labels": labels,
        "tasks": ["vqa", "caption", "vqa"],
    }


def test_the_training_loss_is_one_label_smoothed_cross_entropy_of_the_logits():
    model = lively_model("tiny", dropout=0.0).eval()
    module = BiomedGPTModule(model, TrainConfig(label_smoothing=0.1))
    batch = _batch()
    calls = []
    model.register_forward_hook(
        lambda _, args, kwargs, out: calls.append((kwargs.get("labels"), out.loss)), with_kwargs=True
    )
    loss = module.step_loss(batch)
    assert calls == [(None, None)], "the model must not compute a loss of its own"

    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "patch_images", "patch_masks")}
    with torch.no_grad():
        own = model(**inputs, labels=batch["labels"])  # the model's path: decoder inputs from the labels
    labels = batch["labels"]
    expected = F.cross_entropy(
        own.logits.flatten(0, 1), labels.flatten(), ignore_index=-100, label_smoothing=0.1
    )
    torch.testing.assert_close(loss, expected)
    assert not torch.isclose(loss, own.loss), "label smoothing is applied"

    loss.backward()  # one graph, and it reaches the weights
    assert model.model.shared.weight.grad is not None and model.model.shared.weight.grad.abs().sum() > 0


def test_the_validation_losses_come_from_one_per_token_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, 50, generator=g)
    labels = torch.randint(0, 50, (3, 6), generator=g)
    labels[0, -2:] = -100
    losses = token_losses(logits, labels)
    mask = labels.ne(-100)
    assert losses.shape == (3, 6) and not losses[~mask].any()
    torch.testing.assert_close(losses.sum() / mask.sum(), token_loss(logits, labels))
    torch.testing.assert_close(losses.sum(dim=1) / mask.sum(dim=1), per_sample_loss(logits, labels))
    torch.testing.assert_close(
        per_sample_loss(logits, labels)[0], F.cross_entropy(logits[0, :4], labels[0, :4])
    )
