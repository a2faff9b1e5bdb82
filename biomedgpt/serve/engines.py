"""Pick and load a serving backend by name: "onnxruntime" (`ort_engine.OrtEngine`) or "torch" (`torch_engine`).

Kept apart from `engine.py` so that the backends, which subclass `biomedgpt.serve.engine.Engine`, and the engine
base do not import each other. Importing this module imports no torch; `engine_class("torch")` imports the torch
engine's module, which itself imports torch only when a model loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from biomedgpt.serve.engine import Engine, EngineLimits


def engine_class(engine: str) -> type[Engine]:
    """The class of the engine called `engine` (importing it imports no torch)."""
    if engine == "onnxruntime":
        from biomedgpt.serve.ort_engine import OrtEngine

        return OrtEngine
    if engine == "torch":
        from biomedgpt.serve.torch_engine import TorchEngine

        return TorchEngine
    raise ValueError(f"unknown engine {engine!r}; expected 'onnxruntime' or 'torch'")


def verify_model_folder(model_dir: str | Path, *, engine: str = "onnxruntime", **options: Any) -> list[str]:
    """What loading `model_dir` with `engine` checks first, on its own (`biomedgpt serve` before it starts)."""
    return engine_class(engine).verify_folder(model_dir, **options)


def load_engine(
    model_dir: str | Path, *, engine: str = "onnxruntime", limits: EngineLimits | None = None, **kwargs: Any
) -> Engine:
    """The engine called `engine` over `model_dir` ("onnxruntime" needs an export folder; "torch" a checkpoint).

    `verify=False` in `kwargs` skips checking the files against the folder's manifest.json (`--no-verify`).
    """
    return engine_class(engine)(model_dir, limits=limits, **kwargs)
