"""The PyTorch engine: a checkpoint or model folder decoded with our torch loop (`biomedgpt.model.generation`).

Selectable with `biomedgpt serve --engine torch`; the default is ONNX Runtime (`ort_engine.py`). This is the
only serving module that imports torch, and only when chosen.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from biomedgpt.serve.decoding import DecodeSpec
from biomedgpt.serve.engine import Engine, EngineLimits


class TorchEngine(Engine):
    name: ClassVar[str] = "torch"

    def __init__(
        self,
        model_dir: str | Path,
        *,
        limits: EngineLimits | None = None,
        device: str = "cpu",
        num_threads: int | None = None,
    ) -> None:
        import torch

        from biomedgpt.eval.runner import resolve_checkpoint
        from biomedgpt.model.processing import load_pretrained

        if num_threads:
            torch.set_num_threads(num_threads)
        model_dir = resolve_checkpoint(model_dir)
        super().__init__(model_dir, limits=limits)
        self.model, _ = load_pretrained(model_dir, device=device)
        self.device = device
        self.max_target_positions = self.model.config.max_target_positions

    def _decode(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, pixels: np.ndarray, spec: DecodeSpec
    ) -> tuple[np.ndarray, np.ndarray]:
        import torch

        from biomedgpt.model.generation import DecodeOptions, generate

        options = DecodeOptions(
            max_new_tokens=spec.max_new_tokens,
            min_new_tokens=spec.min_new_tokens,
            num_beams=spec.num_beams,
            length_penalty=spec.length_penalty,
            no_repeat_ngram_size=spec.no_repeat_ngram_size,
            allowed_tokens=torch.from_numpy(spec.allowed_tokens) if spec.allowed_tokens is not None else None,
            trie=spec.trie,
            decoder_prefixes=spec.decoder_prefixes,
        )
        out = generate(
            self.model,
            input_ids=torch.from_numpy(input_ids).to(self.device),
            attention_mask=torch.from_numpy(attention_mask).to(self.device),
            patch_images=torch.from_numpy(pixels).to(self.device),
            options=options,
        )
        return out.sequences.cpu().numpy(), out.scores.float().cpu().numpy()
