"""Write a safetensors file one tensor at a time, so converting a checkpoint holds one tensor in memory, not all.

The format (https://github.com/huggingface/safetensors): an 8-byte little-endian header length, a JSON header
giving each tensor's dtype, shape and byte range (plus `__metadata__`), padded with spaces to 8 bytes, then the
tensors' bytes back to back. The header only needs shapes and dtypes, which are known before any tensor is read.
The file is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

_DTYPES = {
    "float32": ("F32", 4),
    "float16": ("F16", 2),
    "bfloat16": ("BF16", 2),
    "float64": ("F64", 8),
    "int64": ("I64", 8),
    "int32": ("I32", 4),
    "int16": ("I16", 2),
    "int8": ("I8", 1),
    "uint8": ("U8", 1),
    "bool": ("BOOL", 1),
}


def write_safetensors(
    path: str | Path,
    specs: Mapping[str, tuple[Any, tuple[int, ...]]],
    load: Mapping[str, Callable[[], Any]],
    *,
    metadata: dict[str, str] | None = None,
) -> None:
    """Write `path` with a tensor per key of `specs` ((torch dtype, shape)), each produced by `load[key]()` when
    its turn comes; a produced tensor whose dtype or shape differs from its spec is an error."""
    import torch

    path = Path(path)
    header: dict[str, Any] = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    names = sorted(specs)
    for name in names:
        dtype, shape = specs[name]
        code, width = _DTYPES[str(dtype).removeprefix("torch.")]
        size = width
        for dim in shape:
            size *= int(dim)
        header[name] = {
            "dtype": code,
            "shape": [int(d) for d in shape],
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name in names:
            tensor = load[name]()
            dtype, shape = specs[name]
            if tensor.dtype != dtype or tuple(tensor.shape) != tuple(shape):
                raise ValueError(
                    f"{name}: produced {tensor.dtype} {tuple(tensor.shape)}, expected {dtype} {shape}"
                )
            f.write(tensor.contiguous().view(-1).view(torch.uint8).numpy())  # the bytes, without a copy
            del tensor
    os.replace(partial, path)
