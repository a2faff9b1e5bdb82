"""The PyTorch model behind the scheduler's two calls: the exported graphs' modules, run eagerly.

`biomedgpt.model.graphs` wraps the model's own encoder and decoder layers as the two graphs ONNX Runtime
runs; here the same modules run in PyTorch, so both engines decode through one scheduler with the same inputs
and outputs (`scheduler.StepModel`). Imported only by the torch engine.
"""

from __future__ import annotations

import numpy as np
import torch

from biomedgpt.model.graphs import DecoderStepGraph, EncoderGraph


class TorchStepModel:
    def __init__(self, model, *, device: str = "cpu") -> None:
        config = model.config
        self.device = device
        self.num_layers = config.decoder_layers
        self.num_heads = config.decoder_attention_heads
        self.head_dim = config.d_model // self.num_heads
        self.max_target_positions = config.max_target_positions
        self.image_size = config.image_size
        self.encoder = EncoderGraph(model).eval()
        self.decoder = DecoderStepGraph(model).eval()

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    @torch.no_grad()
    def encode(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        pixels: np.ndarray,
        patch_masks: np.ndarray | None = None,
    ) -> list[np.ndarray]:
        if patch_masks is None:
            patch_masks = np.ones(len(input_ids), dtype=bool)
        outputs = self.encoder(
            self._tensor(input_ids),
            self._tensor(attention_mask),
            self._tensor(pixels),
            self._tensor(patch_masks),
        )
        return [t.float().cpu().numpy() for t in outputs]

    @torch.no_grad()
    def decode_step(
        self,
        input_ids: np.ndarray,
        cache_lengths: np.ndarray,
        encoder_attention_bias: np.ndarray,
        cross_position_keys: np.ndarray,
        past: list[np.ndarray],
    ) -> list[np.ndarray]:
        outputs = self.decoder(
            self._tensor(input_ids),
            self._tensor(cache_lengths),
            self._tensor(encoder_attention_bias),
            self._tensor(cross_position_keys),
            *(self._tensor(p) for p in past),
        )
        return [t.float().cpu().numpy() for t in outputs]
