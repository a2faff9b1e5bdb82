"""fairseq OFA state-dict keys -> our keys, with every source tensor accounted for.

OFA's module tree (`models/ofa/unify_transformer*.py`, `resnet.py`) and ours differ in three ways only:
- everything lives under `model.` in ours (transformers' `BiomedGPTForConditionalGeneration`);
- OFA keeps fc1, fc2 and ffn_layernorm on the layer, ours on a `ffn` child;
- OFA saves the shared token embedding three times (`encoder.embed_tokens`, `decoder.embed_tokens`,
  `decoder.output_projection`); ours has it once (`model.shared.weight`). The three must be identical.

Buffers that OFA stores but we compute (`version`, the relative-position bucket tables, the decoder's code
position ids) are dropped only after checking that they equal what this model computes, so a checkpoint
trained with other bucket sizes cannot slip through. `num_batches_tracked` is absent from checkpoints trained
with `--freeze-resnet` (FrozenBatchNorm2d); it only counts training steps and is filled with 0.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from biomedgpt.model.convert.safe_pickle import LazyTensor

TIED_SOURCES = (
    "encoder.embed_tokens.weight",
    "decoder.embed_tokens.weight",
    "decoder.output_projection.weight",
)
TIED_TARGET = "model.shared.weight"
# Our names of the same tied matrix: not stored (transformers re-ties them at load).
TIED_ALIASES = ("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight", "lm_head.weight")
OFA_CODE_POSITION_FILLERS = 769  # fillers after the code grid in fairseq OFA's decoder image_position_idx
_FFN = re.compile(r"^((?:encoder|decoder)\.layers\.\d+)\.(fc1|fc2|ffn_layernorm)\.(weight|bias)$")


class CheckpointMismatchError(ValueError):
    """The checkpoint's tensors do not fit the model its options describe (missing, unexpected, wrong shape)."""


@dataclass
class ConversionReport:
    """What happened to every source tensor."""

    mapped: dict[str, str] = field(default_factory=dict)
    """source key -> our key"""
    tied: list[str] = field(default_factory=list)
    """source keys merged into the shared embedding (checked identical)"""
    dropped: dict[str, str] = field(default_factory=dict)
    """source key -> why it is not kept (each checked where it can be)"""
    filled: dict[str, str] = field(default_factory=dict)
    """our key -> what it was set to, where the source has no tensor for it"""

    def as_dict(self) -> dict[str, Any]:
        return {
            "mapped": len(self.mapped),
            "tied": self.tied,
            "dropped": self.dropped,
            "filled": self.filled,
            "renamed": {k: v for k, v in self.mapped.items() if v != "model." + k},
        }


def target_key(source: str) -> str:
    """Our name of an OFA parameter (not the tied embeddings or dropped buffers)."""
    match = _FFN.match(source)
    if match:
        return f"model.{match[1]}.ffn.{match[2]}.{match[3]}"
    return "model." + source


def expected_buffers(config: Any) -> dict[str, Any]:
    """The computed buffers OFA saves, as this model computes them (torch tensors), by source key."""
    from biomedgpt.model.positions import (
        bucket_table_size,
        decoder_code_positions,
        image_bucket_positions,
        token_bucket_positions,
    )

    image = image_bucket_positions(config.image_bucket_size)
    out: dict[str, Any] = {}
    for side, max_positions in (
        ("encoder", config.max_source_positions),
        ("decoder", config.max_target_positions),
    ):
        size = bucket_table_size(max_positions)
        out[f"{side}.token_rp_bucket"] = token_bucket_positions(config.token_bucket_size, size)
        out[f"{side}.image_rp_bucket"] = image
        out[f"{side}.version"] = None  # fairseq's format version marker, nothing to compare
    grid = config.code_grid_size
    # OFA: [0, the grid's ids, then 769 fillers]; its HF port has 768 fillers. Compare at the stored length.
    out["decoder.image_position_idx"] = lambda length: decoder_code_positions(
        grid, config.image_bucket_size, length
    )
    return out


def _check_buffer(key: str, tensor: Any, expected: Any) -> None:
    import torch

    if expected is None:
        return
    if callable(expected):
        expected = expected(tensor.shape[0])
    if tuple(tensor.shape) != tuple(expected.shape) or not torch.equal(tensor.long(), expected.long()):
        raise CheckpointMismatchError(
            f"buffer {key} differs from what this model computes for the checkpoint's options "
            f"(shape {tuple(tensor.shape)} vs {tuple(expected.shape)}): bucket sizes or positions do not match"
        )


def map_state_dict(
    source: dict[str, Any], model_state: dict[str, Any], config: Any
) -> tuple[dict[str, Callable[[], Any]], ConversionReport]:
    """OFA tensors (LazyTensor or torch) -> our keys, each with a loader of its tensor, and the report.

    Every source key is mapped, tied or dropped (checked); every key of ours is filled; shapes must match
    exactly. Anything else raises CheckpointMismatchError naming the keys. Nothing is materialized but the
    buffers and embeddings the checks compare; call a loader to read one tensor (in the model's dtype).
    """
    import torch

    report = ConversionReport()
    buffers = expected_buffers(config)
    plan: dict[str, Callable[[], Any]] = {}
    unexpected, mismatched = [], []
    for key in sorted(source):
        if key in buffers:
            _check_buffer(key, _tensor(source[key]), buffers[key])
            checked = buffers[key] is not None
            report.dropped[key] = (
                "computed by the model (checked equal)" if checked else "fairseq format version"
            )
            continue
        if key in TIED_SOURCES:
            continue
        ours = target_key(key)
        if ours not in model_state:
            unexpected.append(key)
            continue
        shape = tuple(source[key].shape)
        if shape != tuple(model_state[ours].shape):
            mismatched.append(f"{key}: checkpoint {shape} vs model {tuple(model_state[ours].shape)}")
            continue
        dtype = model_state[ours].dtype
        plan[ours] = lambda value=source[key], dtype=dtype: _tensor(value).to(dtype)
        report.mapped[key] = ours
    embedding = _check_tied_embedding(source, model_state[TIED_TARGET].shape, report, mismatched)
    plan[TIED_TARGET] = lambda: _tensor(source[embedding]).float()
    if unexpected or mismatched:
        lines = [f"unexpected key {k} (no such module in this model)" for k in unexpected] + [
            f"shape mismatch {m}" for m in mismatched
        ]
        raise CheckpointMismatchError("the checkpoint does not fit the model:\n  " + "\n  ".join(lines))
    missing = []
    for key in model_state:
        if key in plan or key in TIED_ALIASES:
            continue
        if key.endswith("num_batches_tracked"):
            plan[key] = lambda: torch.zeros((), dtype=torch.long)
            report.filled[key] = "0 (the checkpoint's stem is frozen: FrozenBatchNorm2d has no step count)"
            continue
        missing.append(key)
    if missing:
        raise CheckpointMismatchError(
            "the checkpoint lacks tensors this model needs:\n  " + "\n  ".join(_source_names(missing))
        )
    return plan, report


def to_ofa_state_dict(model: Any) -> dict[str, Any]:
    """The inverse mapping: `model`'s weights under OFA's fairseq names, with the buffers OFA saves (its
    bucket tables, code position ids and version markers), as fairseq's OFA would `state_dict()` them."""
    import torch

    state: dict[str, Any] = {}
    for key, value in model.state_dict().items():
        if key == "lm_head.weight" or key.endswith(
            ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
        ):
            continue
        if key == TIED_TARGET:
            for name in TIED_SOURCES:
                state[name] = value.clone()
            continue
        state[key[len("model.") :].replace(".ffn.", ".")] = value.clone()
    for key, expected in expected_buffers(model.config).items():
        if expected is None:
            state[key] = torch.tensor([3.0])
        elif callable(expected):
            state[key] = expected(1 + model.config.code_grid_size**2 + OFA_CODE_POSITION_FILLERS)
        else:
            state[key] = expected.clone()
    return state


def _source_names(keys: list[str]) -> list[str]:
    return [f"{k[len('model.') :].replace('.ffn.', '.')} (ours: {k})" for k in keys]


def _check_tied_embedding(
    source: dict[str, Any], shape: tuple, report: ConversionReport, mismatched: list
) -> str:
    """Check the saved copies of the token embedding are identical (one pair in memory at a time); -> a key."""
    import torch

    present = [k for k in TIED_SOURCES if k in source]
    if "encoder.embed_tokens.weight" not in present:
        raise CheckpointMismatchError(
            "the checkpoint lacks encoder.embed_tokens.weight (the token embedding)"
        )
    first = present[0]
    for key in present[1:]:
        a, b = source[key], source[first]
        if tuple(a.shape) != tuple(b.shape):
            same = False
        elif isinstance(a, LazyTensor) and isinstance(b, LazyTensor):
            same = a.equals(b)  # streamed: neither copy is materialized
        else:
            same = torch.equal(_tensor(a), _tensor(b))
        if not same:
            raise CheckpointMismatchError(
                f"{key} differs from {first}: this model ties all token embeddings (share_all_embeddings)"
            )
    if tuple(source[first].shape) != tuple(shape):
        mismatched.append(f"{first}: checkpoint {tuple(source[first].shape)} vs model {tuple(shape)}")
    report.tied = present
    return first


def _tensor(value: Any) -> Any:
    return value.materialize() if hasattr(value, "materialize") else value
