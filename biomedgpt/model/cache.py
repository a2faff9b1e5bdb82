"""Key/value caches for incremental decoding.

The decoder's attention talks to a cache through three calls: `update_self`, `cross` and `set_cross`.
- `HFCache` adapts transformers' `EncoderDecoderCache` (what `generate()` creates and reorders for beams).
- `StaticKVCache` preallocates (layers, batch, heads, max_len, head_dim) buffers once, so a decoding step writes
  in place instead of concatenating; our own decoding loop (`biomedgpt.model.generation`) uses it.
Shapes everywhere: (batch, heads, seq, head_dim).
"""

from __future__ import annotations

import torch
from transformers.cache_utils import EncoderDecoderCache


class HFCache:
    """transformers' EncoderDecoderCache behind our three-call protocol."""

    def __init__(self, cache: EncoderDecoderCache) -> None:
        self.cache = cache

    def get_seq_length(self) -> int:
        return self.cache.get_seq_length()

    def update_self(
        self, layer: int, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cache.self_attention_cache.update(key, value, layer)

    def cross(self, layer: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        if not self.cache.is_updated.get(layer):
            return None
        entry = self.cache.cross_attention_cache.layers[layer]
        return entry.keys, entry.values

    def set_cross(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> None:
        self.cache.cross_attention_cache.update(key, value, layer)
        self.cache.is_updated[layer] = True

    def advance(self, num_tokens: int) -> None:
        """transformers' caches grow as each layer updates; nothing to do."""


class StaticKVCache:
    """Preallocated self-attention keys/values plus the cross-attention keys/values of each layer."""

    def __init__(
        self,
        *,
        num_layers: int,
        batch: int,
        num_heads: int,
        head_dim: int,
        max_len: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        shape = (num_layers, batch, num_heads, max_len, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.cross_kv: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * num_layers
        self.length = 0
        self.max_len = max_len

    def get_seq_length(self) -> int:
        return self.length

    def update_self(
        self, layer: int, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + key.shape[2]
        if end > self.max_len:
            raise ValueError(f"StaticKVCache holds {self.max_len} positions; step would reach {end}")
        self.keys[layer, :, :, self.length : end] = key
        self.values[layer, :, :, self.length : end] = value
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def cross(self, layer: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.cross_kv[layer]

    def set_cross(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> None:
        self.cross_kv[layer] = (key, value)

    def advance(self, num_tokens: int) -> None:
        self.length += num_tokens

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep cache rows `rows` (beam search: each surviving beam inherits its parent's keys and values)."""
        self.keys = self.keys.index_select(1, rows)
        self.values = self.values.index_select(1, rows)


def as_kv_cache(cache: object | None) -> HFCache | StaticKVCache | None:
    if cache is None or isinstance(cache, (HFCache, StaticKVCache)):
        return cache
    if isinstance(cache, EncoderDecoderCache):
        return HFCache(cache)
    raise TypeError(
        f"unsupported cache type {type(cache).__name__}; pass an EncoderDecoderCache or StaticKVCache"
    )
