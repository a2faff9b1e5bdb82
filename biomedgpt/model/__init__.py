"""The BiomedGPT model: configuration, modeling, generation, processor, building one from a run config.

Imports are lazy so that `import biomedgpt.model.run_config` (typed run configs) does not pull in torch.
`from biomedgpt.model import BiomedGPTForConditionalGeneration` imports torch and transformers on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BiomedGPTConfig": "biomedgpt.model.configuration",
    "ARCH_PRESETS": "biomedgpt.model.configuration",
    "BiomedGPTModel": "biomedgpt.model.modeling",
    "BiomedGPTForConditionalGeneration": "biomedgpt.model.modeling",
    "BiomedGPTProcessor": "biomedgpt.model.processing",
    "BiomedGPTImageProcessor": "biomedgpt.model.image_processing",
    "load_pretrained": "biomedgpt.model.processing",
    "DecodeSpec": "biomedgpt.model.decode_spec",
    "generate": "biomedgpt.model.generation",
    "AnswerTrie": "biomedgpt.model.constraints",
    "build_model": "biomedgpt.model.build",
    "build_processor": "biomedgpt.model.build",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'biomedgpt.model' has no attribute {name!r}")
