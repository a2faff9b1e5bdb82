"""The training step's loss: computed once (the model is called without labels), label-smoothed, ignoring -100."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from biomedgpt.train.config import TrainConfig
from biomedgpt.train.module import (
    BiomedGPTModule,
    location_aware_loss,
    per_sample_loss,
    token_loss,
    token_losses,
)
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


def test_the_location_aware_loss_spreads_a_bin_target_over_its_neighbours_only():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(5, 120, generator=g)
    bins = (20, 119)  # 100 location tokens
    text = torch.tensor([3, 7, 11, 2, 5])
    # no location label: exactly the label-smoothed cross-entropy
    torch.testing.assert_close(
        location_aware_loss(logits, text, label_smoothing=0.1, bins=bins, sigma=4.0),
        token_loss(logits, text, label_smoothing=0.1),
    )
    # a vanishing sigma is the bin alone
    mixed = torch.tensor([3, 60, 11, 20, 119])
    torch.testing.assert_close(
        location_aware_loss(logits, mixed, label_smoothing=0.1, bins=bins, sigma=1e-3),
        token_loss(logits, mixed, label_smoothing=0.1),
    )
    # with a real sigma, a prediction one bin off costs less than one far off; a text target costs the same
    near = torch.full((1, 120), -10.0)
    near[0, 61] = 10.0
    far = torch.full((1, 120), -10.0)
    far[0, 100] = 10.0
    target = torch.tensor([60])

    def loss(x):
        return location_aware_loss(x, target, label_smoothing=0.0, bins=bins, sigma=3.0)

    assert loss(near) < loss(far) - 1
    assert torch.isclose(token_loss(near, target), token_loss(far, target))


def test_the_training_step_uses_the_location_aware_loss_when_asked():
    model = lively_model("tiny", dropout=0.0).eval()
    bins = (250, 299)
    batch = _batch(vocab=250)  # no label is a location yet

    def losses(batch):
        plain = BiomedGPTModule(model, TrainConfig(label_smoothing=0.1)).step_loss(batch)
        aware = BiomedGPTModule(
            model, TrainConfig(label_smoothing=0.1, location_sigma=1.0), location_bins=bins
        ).step_loss(batch)
        return plain, aware

    plain, aware = losses(batch)
    torch.testing.assert_close(plain, aware)
    batch["labels"][1, :3] = torch.tensor([250, 260, 299])  # three locations
    plain, aware = losses(batch)
    assert torch.isfinite(aware) and not torch.isclose(plain, aware)
    with pytest.raises(ValueError, match="location_bins"):
        BiomedGPTModule(model, TrainConfig(location_sigma=1.0))
