"""The PyTorch engine: a checkpoint or model folder decoded with our torch loop (`biomedgpt.model.generation`).

Selectable with `biomedgpt serve --engine torch`; the default is ONNX Runtime (`ort_engine.py`). This is the
only serving module that imports torch, and only when chosen.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from biomedgpt.model.decode_spec import DecodeSpec
from biomedgpt.serve.engine import Engine, EngineLimits

# Files of a model folder that `load_pretrained` (transformers) may read.
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
)


class TorchEngine(Engine):
    name: ClassVar[str] = "torch"

    def __init__(
        self,
        model_dir: str | Path,
        *,
        limits: EngineLimits | None = None,
        device: str = "cpu",
        num_threads: int | None = None,
        verify: bool = True,
    ) -> None:
        import torch

        from biomedgpt.model.folders import resolve_checkpoint
        from biomedgpt.model.processing import load_pretrained

        if num_threads:
            torch.set_num_threads(num_threads)
        model_dir = resolve_checkpoint(model_dir)
        # A folder with a manifest.json (checkpoints, imports) has its weights and the rest checked first.
        super().__init__(model_dir, limits=limits, verify=verify)
        self.model, _ = load_pretrained(model_dir, device=device)
        self.device = device
        self.max_target_positions = self.model.config.max_target_positions
        self._step_model = None

    @classmethod
    def model_files(cls, model_dir: Path, **options: Any) -> list[str]:
        """What `load_pretrained` reads besides the engine's own files: config, weights (a sharded model's index
        and every shard it names), the transformers tokenizer's files."""
        files = [*super().model_files(model_dir), *MODEL_FILES]
        index = model_dir / "model.safetensors.index.json"
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text()).get("weight_map") or {}
            except (OSError, ValueError, AttributeError):
                weight_map = {}  # the index itself is checked (and fails) with the rest
            files += sorted({str(v) for v in weight_map.values()}) if isinstance(weight_map, dict) else []
        return files

    @classmethod
    def verify_folder(cls, model_dir: str | Path, **options: Any) -> list[str]:
        from biomedgpt.model.folders import resolve_checkpoint

        return super().verify_folder(resolve_checkpoint(model_dir), **options)

    def step_model(self):
        """The model's modules behind the scheduler's two calls (the graphs the ONNX export writes)."""
        if self._step_model is None:
            from biomedgpt.serve.torch_step import TorchStepModel

            self._step_model = TorchStepModel(self.model, device=self.device)
        return self._step_model

    def _decode(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, pixels: np.ndarray, spec: DecodeSpec
    ) -> tuple[np.ndarray, np.ndarray]:
        import torch

        from biomedgpt.model.generation import generate

        out = generate(
            self.model,
            input_ids=torch.from_numpy(input_ids).to(self.device),
            attention_mask=torch.from_numpy(attention_mask).to(self.device),
            patch_images=torch.from_numpy(pixels).to(self.device),
            options=spec,
        )
        return out.sequences.cpu().numpy(), out.scores.float().cpu().numpy()
