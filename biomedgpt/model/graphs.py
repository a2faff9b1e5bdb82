"""The two graphs we export to ONNX: the encoder, and one decoder step over a KV cache whose rows may differ
in length (so requests can join and leave a running batch at any step).

Layout (names follow HF optimum; shapes (batch, heads, seq, head_dim)):

    encoder:  input_ids (B, T) int64, attention_mask (B, T) int64, patch_images (B, 3, H, W) float32,
              patch_masks (B,) bool   False: the sample has no image (its image tokens are masked, as in OFA)
          ->  encoder_attention_bias (B, S)   0 for tokens, -inf for padding (S = H/16 * W/16 + T)
              cross_position_keys (1, Hd, S, hd)   OFA's cross-attention position keys (same for every sample)
              present.{i}.encoder.key / .value (B, Hd, S, hd)   every decoder layer's cross-attention keys/values
    decoder:  input_ids (B, 1) int64, cache_lengths (B,) int64, encoder_attention_bias, cross_position_keys,
              past_key_values.{i}.decoder.key / .value (B, Hd, P, hd)   (P = 0 at the first step)
              past_key_values.{i}.encoder.key / .value (B, Hd, S, hd)
          ->  logits (B, V), new.{i}.decoder.key / .value (B, Hd, 1, hd)

Row b's cache holds `cache_lengths[b]` valid positions (the rest of its P columns are masked), and its new
token sits at position `cache_lengths[b]`: the caller writes the returned keys and values there.

Both wrap the PyTorch modules themselves: the encoder graph is `BiomedGPTEncoder.forward` plus the decoder's
cross-attention projections; the decoder graph runs each `BiomedGPTDecoderLayer` unchanged through a cache
object that concatenates past and new keys. Only the bias assembly of `BiomedGPTDecoder.forward` is restated
here, over tables precomputed from the weights (they are constants of the graph), for text/bin targets: the
served tasks never generate image codes. `biomedgpt.export.parity` checks both against the PyTorch model.
"""

from __future__ import annotations

import torch
from torch import nn

from biomedgpt.model.modeling import BiomedGPTForConditionalGeneration, split_heads
from biomedgpt.model.positions import token_bucket_positions


def past_names(num_layers: int, prefix: str = "past_key_values") -> list[str]:
    """Flat KV names in graph order: for each layer, decoder key, decoder value, encoder key, encoder value."""
    return [
        f"{prefix}.{i}.{part}.{kv}"
        for i in range(num_layers)
        for part in ("decoder", "encoder")
        for kv in ("key", "value")
    ]


def present_names(num_layers: int, part: str, prefix: str = "present") -> list[str]:
    return [f"{prefix}.{i}.{part}.{kv}" for i in range(num_layers) for kv in ("key", "value")]


class EncoderGraph(nn.Module):
    def __init__(self, model: BiomedGPTForConditionalGeneration) -> None:
        super().__init__()
        self.encoder = model.model.encoder
        self.decoder = model.model.decoder
        self.num_heads = model.config.decoder_attention_heads

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        patch_images: torch.Tensor,
        patch_masks: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        out = self.encoder(
            input_ids, attention_mask=attention_mask, patch_images=patch_images, patch_masks=patch_masks
        )
        states = out.last_hidden_state  # (B, S, D)
        bias = torch.zeros(out.padding_mask.shape, dtype=states.dtype).masked_fill(
            out.padding_mask, float("-inf")
        )
        position_keys = split_heads(
            self.decoder.cross_pos_k_linear(out.position_embeddings[:1]), self.num_heads
        )  # (1, H, S, hd)
        cross = []
        for layer in self.decoder.layers:
            attn = layer.encoder_attn
            cross += [
                split_heads(attn.k_proj(states), self.num_heads),
                split_heads(attn.v_proj(states), self.num_heads),
            ]
        return (bias, position_keys, *cross)


class _StepCache:
    """The cache protocol of `BiomedGPTAttention` over tensors: past + new self keys, given cross keys."""

    def __init__(self, past: list[torch.Tensor]) -> None:
        self.past = past  # per layer: decoder key, decoder value, encoder key, encoder value
        self.new: list[torch.Tensor] = []

    def update_self(
        self, layer: int, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.new += [key, value]  # (B, H, 1, hd)
        key = torch.cat([self.past[4 * layer], key], dim=2)  # (B, H, P + 1, hd)
        value = torch.cat([self.past[4 * layer + 1], value], dim=2)
        return key, value

    def cross(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.past[4 * layer + 2], self.past[4 * layer + 3]

    def set_cross(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> None:
        raise RuntimeError("the decoder graph receives cross-attention keys from the encoder graph")


class DecoderStepGraph(nn.Module):
    def __init__(self, model: BiomedGPTForConditionalGeneration, *, max_length: int | None = None) -> None:
        super().__init__()
        config = model.config
        self.decoder = model.model.decoder
        # The output projection gets its own copy of the tied embedding matrix: int8 quantization rewrites the
        # MatMul's weight, and a weight shared with the embedding Gather would be rewritten under it as well.
        self.register_buffer(
            "output_weight", model.lm_head.weight.detach().clone(), persistent=False
        )  # (V, D)
        length = min(max_length or config.max_target_positions, config.max_target_positions)
        with torch.no_grad():
            tables = self.decoder._position_tables(length)
        # Row 0 of each table: text targets. Weight-only, so constants of the graph.
        self.register_buffer("self_q", tables["self_q"][0].detach().clone(), persistent=False)  # (H, L, hd)
        self.register_buffer("self_k", tables["self_k"][0].detach().clone(), persistent=False)
        self.register_buffer("cross_q", tables["cross_q"][0].detach().clone(), persistent=False)
        buckets = token_bucket_positions(config.token_bucket_size, config.max_target_positions)[
            :length, :length
        ]
        self.register_buffer("buckets", buckets.clone(), persistent=False)  # (L, L)
        self.max_length = length

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, 1)
        cache_lengths: torch.Tensor,  # (B,) valid cache positions per row = the new token's position
        encoder_attention_bias: torch.Tensor,  # (B, S)
        cross_position_keys: torch.Tensor,  # (1, H, S, hd)
        *past: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        dec = self.decoder
        batch, width = input_ids.shape[0], past[0].shape[2]
        x = dec.layernorm_embedding(dec.embed_tokens(input_ids) * dec.embed_scale)  # (B, 1, D)
        # Key positions: the cache's columns 0..P-1, then the new token at its row's own position.
        columns = torch.arange(width, device=input_ids.device)[None, :].expand(batch, width)
        key_pos = torch.cat([columns, cache_lengths[:, None]], dim=1)  # (B, P + 1)
        query = self.self_q[:, cache_lengths].permute(1, 0, 2)[:, :, None]  # (B, H, 1, hd)
        keys = self.self_k[:, key_pos].permute(1, 0, 2, 3)  # (B, H, P + 1, hd)
        self_abs = query @ keys.transpose(-1, -2)  # (B, H, 1, P + 1)
        padding = torch.cat(
            [columns >= cache_lengths[:, None], torch.zeros_like(cache_lengths[:, None], dtype=torch.bool)], 1
        )
        self_mask = torch.zeros(padding.shape, dtype=x.dtype).masked_fill(padding, float("-inf"))[
            :, None, None
        ]
        buckets = self.buckets[cache_lengths[:, None], key_pos]  # (B, P + 1)
        cross_query = self.cross_q[:, cache_lengths].permute(1, 0, 2)[:, :, None]  # (B, H, 1, hd)
        cross_abs = cross_query @ cross_position_keys.transpose(-1, -2)  # (B, H, 1, S)
        cross_bias = cross_abs + encoder_attention_bias[:, None, None, :]  # (B, H, 1, S)
        cache = _StepCache(list(past))
        for idx, layer in enumerate(dec.layers):
            rel = dec.token_rel_pos_table_list[idx](buckets).permute(0, 2, 1)[:, :, None]  # (B, H, 1, P + 1)
            x = layer(x, None, self_abs + rel + self_mask, cross_bias, past_key_values=cache)
        x = dec.layer_norm(x)
        logits = x[:, -1] @ self.output_weight.T  # (B, V)
        return (logits, *cache.new)
