"""Import an official OFA / BiomedGPT fairseq checkpoint into a self-describing model folder.

    checkpoint.pt  --(restricted reader)-->  options + tensors  --(checked mapping)-->  BiomedGPT model
    utils/BPE      --(dictionary folded into the BPE)------->  tokenizer.json (OFA's exact ids)

`import_checkpoint` writes model.safetensors, config.json, tokenizer files and preprocessor_config.json into a
folder, plus `conversion.json` (options read, ignored, the fate of every tensor) and returns what it did. Task
metadata (which tasks the folder serves, their prompts, answer lists) is written by the caller, which knows the
tasks (`biomedgpt import`, biomedgpt/commands/import_cmd.py).

Memory: tensors are read from the archive one at a time (optimizer state never) and streamed into
model.safetensors as they are converted; the model is only built on the meta device, for its shapes. The peak is
the largest tensor (the token embedding, twice while its saved copies are compared), not the weights.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biomedgpt.hashing import sha256_file
from biomedgpt.model.convert.ofa_config import (
    UnsupportedOptionError,
    ignored_options,
    read_options,
    task_options,
    to_config_kwargs,
)
from biomedgpt.model.convert.ofa_keys import CheckpointMismatchError, map_state_dict
from biomedgpt.model.convert.safe_pickle import LazyTensor, load_torch_checkpoint
from biomedgpt.model.convert.stream_safetensors import write_safetensors

log = logging.getLogger(__name__)

WEIGHTS = ("model", "ema")
# BiomedGPT's input sides when the task config names none (its scripts: tiny/medium 256, base 384).
DEFAULT_IMAGE_SIZE = {"ofa_tiny": 256, "ofa_medium": 256, "ofa_base": 384, "ofa_large": 480, "ofa_huge": 480}


@dataclass(kw_only=True)
class ImportResult:
    """What `import_checkpoint` read and wrote."""

    config: Any
    """The BiomedGPTConfig of the imported model."""
    task_config: dict[str, Any]
    """The checkpoint's task section (task name, patch_image_size, ...)."""
    report: dict[str, Any] = field(default_factory=dict)
    """conversion.json's content."""


def select_weights(checkpoint: dict[str, Any], weights: str) -> dict[str, Any]:
    """The state dict to import: the trained `model` or the `ema` one (fp32 EMA parameters preferred)."""
    if weights not in WEIGHTS:
        raise ValueError(f"--weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    if weights == "model":
        state = checkpoint.get("model")
        if not isinstance(state, dict) or not state:
            raise CheckpointMismatchError("the checkpoint has no 'model' state dict")
        return state
    extra = checkpoint.get("extra_state") or {}
    ema = extra.get("ema") if isinstance(extra, dict) else None
    if not isinstance(ema, dict) or not ema:
        raise CheckpointMismatchError(
            "--weights ema: the checkpoint has no extra_state['ema'] (it was trained without --store-ema)"
        )
    fp32 = extra.get("ema_fp32_params")
    if isinstance(fp32, dict):
        unknown = sorted(set(fp32) - set(ema))
        if unknown:
            raise CheckpointMismatchError(f"ema_fp32_params has keys the EMA state lacks: {unknown[:5]}")
        ema = {**ema, **fp32}  # fairseq's EMA keeps exact fp32 copies of the parameters when --ema-fp32
    return ema


def import_checkpoint(
    source: str | Path, out_dir: str | Path, *, bpe_dir: str | Path, weights: str = "model",
    image_size: int | None = None,
) -> ImportResult:  # fmt: skip
    """Convert `source` into `out_dir` (which must exist and be empty); see the module docstring."""
    import torch
    from transformers import GenerationConfig

    from biomedgpt.model.configuration import BiomedGPTConfig
    from biomedgpt.model.image_processing import BiomedGPTImageProcessor, ImageProcessorConfig
    from biomedgpt.model.modeling import BiomedGPTForConditionalGeneration
    from biomedgpt.model.processing import BiomedGPTProcessor
    from biomedgpt.tokenization.ofa_bpe import build_ofa_tokenizer

    started = time.perf_counter()
    source, out_dir = Path(source), Path(out_dir)
    checkpoint = load_torch_checkpoint(source)
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise CheckpointMismatchError(f"{source} is not a fairseq checkpoint (no 'model' entry)")
    options = read_options(checkpoint)
    task_cfg = task_options(checkpoint)
    state = select_weights(checkpoint, weights)
    embed = state.get("encoder.embed_tokens.weight")
    if not isinstance(embed, (LazyTensor, torch.Tensor)):
        raise CheckpointMismatchError("the state dict lacks encoder.embed_tokens.weight")
    side = image_size or task_cfg.get("patch_image_size") or DEFAULT_IMAGE_SIZE[options.values["arch"]]
    kwargs = to_config_kwargs(options, vocab_size=int(embed.shape[0]), image_size=int(side))
    config = BiomedGPTConfig(**kwargs)

    tokenizer = build_ofa_tokenizer(bpe_dir)
    if len(tokenizer) != config.vocab_size:
        raise CheckpointMismatchError(
            f"the BPE folder gives {len(tokenizer)} ids but the checkpoint's embedding has {config.vocab_size} "
            "rows: this dict.txt is not the one the model was trained with"
        )
    with torch.device("meta"):  # shapes and dtypes only: no memory
        model_state = BiomedGPTForConditionalGeneration(config).state_dict()
    plan, mapping = map_state_dict(state, model_state, config)
    config.architectures = [BiomedGPTForConditionalGeneration.__name__]
    config.save_pretrained(out_dir)
    GenerationConfig.from_model_config(config).save_pretrained(out_dir)
    specs = {key: (model_state[key].dtype, tuple(model_state[key].shape)) for key in plan}
    write_safetensors(out_dir / "model.safetensors", specs, plan, metadata={"format": "pt"})
    processor = BiomedGPTProcessor(
        tokenizer,
        BiomedGPTImageProcessor(ImageProcessorConfig(image_size=config.image_size, mean=0.5, std=0.5)),
    )
    processor.save_pretrained(out_dir)
    dtypes = sorted({str(getattr(t, "dtype", "")) for t in state.values() if isinstance(t, LazyTensor)})
    report = {
        "source": {"path": str(source), "sha256": sha256_file(source), "weights": weights, "dtypes": dtypes},
        "bpe_dir": {
            name: sha256_file(Path(bpe_dir) / name) for name in ("encoder.json", "vocab.bpe", "dict.txt")
        },
        "options_from": options.source,
        "ofa_arch": options.values["arch"],
        "ignored_options": ignored_options(options),
        "tensors": mapping.as_dict(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    log.info("imported %s (%s, %d tensors)", source, options.values["arch"], len(mapping.mapped))
    return ImportResult(config=config, task_config=task_cfg, report=report)


__all__ = [
    "CheckpointMismatchError",
    "ImportResult",
    "UnsupportedOptionError",
    "import_checkpoint",
    "select_weights",
]
