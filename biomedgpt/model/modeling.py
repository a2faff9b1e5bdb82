"""BiomedGPT: OFA's unify transformer, the whole forward pass in one file.

Follows OFA (Wang et al., ICML 2022; `models/ofa/unify_transformer*.py`) as used by BiomedGPT
(Zhang et al., Nature Medicine 2024):
- encoder input = [ResNet patch tokens ; text tokens], with a type embedding (text 0, image 1) and
  LayerNorms on both embeddings; no absolute position is added to the input: positions enter the
  attention logits as (a) an "absolute" bias q_pos . k_pos from LayerNormed position embeddings
  projected by their own linears (TUPE-style) and (b) learned relative biases per layer and head,
  1-D log buckets for text, 2-D buckets for image patches;
- pre-LayerNorm layers with the NormFormer extras (Shleifer et al., 2021): a LayerNorm after
  attention (`attn_ln`), one inside the FFN (`ffn_layernorm`) and a learned per-head scale (`c_attn`);
- attention logits scaled by (head_dim * attn_scale_factor) ** -0.5 (OFA uses factor 2);
- one embedding matrix shared by encoder input, decoder input and output projection.
Module and parameter names mirror OFA's so official checkpoints convert by renaming.

Attention runs through `torch.nn.functional.scaled_dot_product_attention` with every bias, the
causal mask and the padding mask folded into one additive `attn_mask`. Decoding keeps a KV cache for
self-attention and cross-attention (transformers' `EncoderDecoderCache`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import Seq2SeqLMOutput, Seq2SeqModelOutput
from transformers.utils import ModelOutput

from biomedgpt.model.cache import HFCache, StaticKVCache, as_kv_cache
from biomedgpt.model.configuration import BiomedGPTConfig
from biomedgpt.model.positions import (
    bucket_table_size,
    decoder_code_positions,
    image_bucket_positions,
    image_grid_positions,
    token_bucket_positions,
)
from biomedgpt.model.resnet import ResNetStem, drop_path, linear_rates

KVCache = HFCache | StaticKVCache

# --------------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------------


@dataclass
class BiomedGPTEncoderOutput(ModelOutput):
    """Encoder states plus what the decoder needs to attend to them.

    position_embeddings are identical for every sample (same image grid, same text positions); they are kept
    expanded to the batch so that `generate()` can repeat them for beams like any other tensor.
    """

    last_hidden_state: torch.Tensor | None = None  # (B, S, D)
    padding_mask: torch.Tensor | None = None  # (B, S) bool, True = padding
    position_embeddings: torch.Tensor | None = None  # (B, S, D), LayerNormed
    hidden_states: tuple[torch.Tensor, ...] | None = None


# --------------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------------


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, T, D) -> (B, H, T, D/H)."""
    batch, length, dim = x.shape
    return x.view(batch, length, num_heads, dim // num_heads).transpose(1, 2)


class BiomedGPTAttention(nn.Module):
    """Multi-head attention with an additive bias, OFA's logit scale factor and NormFormer head scaling."""

    def __init__(
        self, config: BiomedGPTConfig, *, num_heads: int, layer_idx: int, is_cross: bool = False
    ) -> None:
        super().__init__()
        dim = config.d_model
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scaling = (self.head_dim * config.attn_scale_factor) ** -0.5
        self.dropout = config.attention_dropout
        self.layer_idx = layer_idx
        self.is_cross = is_cross
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.c_attn = nn.Parameter(torch.ones(num_heads)) if config.scale_heads else None

    def forward(
        self,
        hidden_states: torch.Tensor,  # (B, Tq, D)
        *,
        attn_bias: torch.Tensor,  # broadcastable to (B, H, Tq, Tk): biases + masks (-inf)
        key_value_states: torch.Tensor | None = None,  # (B, S, D) for cross-attention
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        query = split_heads(self.q_proj(hidden_states), self.num_heads)  # (B, H, Tq, hd)
        if self.is_cross:
            cached = cache.cross(self.layer_idx) if cache is not None else None
            if cached is not None:
                key, value = cached  # (B, H, S, hd), computed at the first decoding step
            else:
                key = split_heads(self.k_proj(key_value_states), self.num_heads)
                value = split_heads(self.v_proj(key_value_states), self.num_heads)
                if cache is not None:
                    cache.set_cross(self.layer_idx, key, value)
        else:
            key = split_heads(self.k_proj(hidden_states), self.num_heads)  # (B, H, Tq, hd)
            value = split_heads(self.v_proj(hidden_states), self.num_heads)
            if cache is not None:
                key, value = cache.update_self(self.layer_idx, key, value)  # (B, H, Tk, hd)
        attn = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=attn_bias.to(query.dtype),
            dropout_p=self.dropout if self.training else 0.0,
            scale=self.scaling,
        )  # (B, H, Tq, hd)
        if self.c_attn is not None:
            attn = attn * self.c_attn.view(1, -1, 1, 1)  # NormFormer head scaling
        batch, _, length, _ = attn.shape
        attn = attn.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim)  # (B, Tq, D)
        return self.out_proj(attn)


class FeedForward(nn.Module):
    """fc1 -> activation -> (NormFormer ffn_layernorm) -> fc2."""

    def __init__(self, config: BiomedGPTConfig, ffn_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.d_model, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, config.d_model)
        self.ffn_layernorm = nn.LayerNorm(ffn_dim) if config.scale_fc else None
        self.activation_dropout = config.activation_dropout
        if config.activation_function not in ("gelu", "relu"):
            raise ValueError(f"activation_function must be gelu or relu, got {config.activation_function}")
        self.activation = F.gelu if config.activation_function == "gelu" else F.relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activation(self.fc1(x))
        x = F.dropout(x, self.activation_dropout, self.training)
        if self.ffn_layernorm is not None:
            x = self.ffn_layernorm(x)
        return self.fc2(x)


class BiomedGPTEncoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: BiomedGPTConfig, *, layer_idx: int, drop_path_rate: float) -> None:
        super().__init__()
        dim = config.d_model
        self.self_attn = BiomedGPTAttention(
            config, num_heads=config.encoder_attention_heads, layer_idx=layer_idx
        )
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.attn_ln = nn.LayerNorm(dim) if config.scale_attn else None
        self.ffn = FeedForward(config, config.encoder_ffn_dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.w_resid = nn.Parameter(torch.ones(dim)) if config.scale_resids else None
        self.dropout = config.dropout
        self.drop_path_rate = drop_path_rate

    def _residual(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        x = F.dropout(x, self.dropout, self.training)
        return residual + drop_path(x, self.drop_path_rate, self.training)

    def forward(self, hidden_states: torch.Tensor, attn_bias: torch.Tensor) -> torch.Tensor:
        x = self.self_attn(self.self_attn_layer_norm(hidden_states), attn_bias=attn_bias)
        if self.attn_ln is not None:
            x = self.attn_ln(x)
        hidden_states = self._residual(x, hidden_states)
        x = self.ffn(self.final_layer_norm(hidden_states))
        if self.w_resid is not None:  # NormFormer residual scaling (OFA --scale-resids)
            hidden_states = hidden_states * self.w_resid
        return self._residual(x, hidden_states)


class BiomedGPTDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: BiomedGPTConfig, *, layer_idx: int, drop_path_rate: float) -> None:
        super().__init__()
        dim, heads = config.d_model, config.decoder_attention_heads
        self.self_attn = BiomedGPTAttention(config, num_heads=heads, layer_idx=layer_idx)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.self_attn_ln = nn.LayerNorm(dim) if config.scale_attn else None
        self.encoder_attn = BiomedGPTAttention(config, num_heads=heads, layer_idx=layer_idx, is_cross=True)
        self.encoder_attn_layer_norm = nn.LayerNorm(dim)
        self.cross_attn_ln = nn.LayerNorm(dim) if config.scale_attn else None
        self.ffn = FeedForward(config, config.decoder_ffn_dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.w_resid = nn.Parameter(torch.ones(dim)) if config.scale_resids else None
        self.dropout = config.dropout
        self.drop_path_rate = drop_path_rate

    def _residual(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        x = F.dropout(x, self.dropout, self.training)
        return residual + drop_path(x, self.drop_path_rate, self.training)

    def forward(
        self,
        hidden_states: torch.Tensor,  # (B, Tq, D)
        encoder_hidden_states: torch.Tensor,  # (B, S, D)
        self_attn_bias: torch.Tensor,
        cross_attn_bias: torch.Tensor,
        past_key_values: KVCache | None = None,
    ) -> torch.Tensor:
        x = self.self_attn(
            self.self_attn_layer_norm(hidden_states), attn_bias=self_attn_bias, cache=past_key_values
        )
        if self.self_attn_ln is not None:
            x = self.self_attn_ln(x)
        hidden_states = self._residual(x, hidden_states)
        x = self.encoder_attn(
            self.encoder_attn_layer_norm(hidden_states),
            attn_bias=cross_attn_bias,
            key_value_states=encoder_hidden_states,
            cache=past_key_values,
        )
        if self.cross_attn_ln is not None:
            x = self.cross_attn_ln(x)
        hidden_states = self._residual(x, hidden_states)
        x = self.ffn(self.final_layer_norm(hidden_states))
        if self.w_resid is not None:  # NormFormer residual scaling (OFA --scale-resids)
            hidden_states = hidden_states * self.w_resid
        return self._residual(x, hidden_states)


# --------------------------------------------------------------------------------------------------
# Pretrained base
# --------------------------------------------------------------------------------------------------


class BiomedGPTPreTrainedModel(PreTrainedModel):
    config: BiomedGPTConfig
    config_class = BiomedGPTConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["BiomedGPTEncoderLayer", "BiomedGPTDecoderLayer"]
    _supports_sdpa = True

    def _bias(
        self, q_linear: nn.Linear, k_linear: nn.Linear, pos_q: torch.Tensor, pos_k: torch.Tensor
    ) -> torch.Tensor:
        return position_bias(
            q_linear,
            k_linear,
            pos_q,
            pos_k,
            num_heads=self.num_heads,
            attn_scale_factor=self.config.attn_scale_factor,
        )

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.init_std
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.Embedding):
            if getattr(module, "zero_init", False):  # relative position tables start at zero, as in OFA
                init.zeros_(module.weight)
            else:
                init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, BiomedGPTAttention) and module.c_attn is not None:
            init.ones_(module.c_attn)


def rel_pos_table(num_buckets: int, num_heads: int) -> nn.Embedding:
    table = nn.Embedding(num_buckets, num_heads)
    table.zero_init = True
    return table


def position_bias(
    q_linear: nn.Linear,
    k_linear: nn.Linear,
    pos_q: torch.Tensor,
    pos_k: torch.Tensor,
    *,
    num_heads: int,
    attn_scale_factor: float,
) -> torch.Tensor:
    """OFA's 'absolute' attention bias: (LN(p_i) W_q) . (LN(p_j) W_k) per head, scaled like attention logits."""
    head_dim = pos_q.shape[-1] // num_heads
    q = split_heads(q_linear(pos_q), num_heads) * (head_dim * attn_scale_factor) ** -0.5  # (b, H, Tq, hd)
    k = split_heads(k_linear(pos_k), num_heads)  # (b, H, Tk, hd)
    return q @ k.transpose(-1, -2)  # (b, H, Tq, Tk)


# --------------------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------------------


class BiomedGPTEncoder(BiomedGPTPreTrainedModel):
    def __init__(self, config: BiomedGPTConfig, embed_tokens: nn.Embedding | None = None) -> None:
        super().__init__(config)
        dim, heads = config.d_model, config.encoder_attention_heads
        self.num_heads = heads
        self.embed_tokens = embed_tokens or nn.Embedding(config.vocab_size, dim, config.pad_token_id)
        self.embed_scale = math.sqrt(dim) if config.scale_embedding else 1.0
        self.embed_images = ResNetStem(
            config.resnet_layers,
            drop_path_rate=config.resnet_drop_path_rate,
            eps=config.resnet_norm_eps,
            frozen=config.freeze_resnet,
        )
        self.image_proj = nn.Linear(ResNetStem.out_channels, dim)
        self.patch_layernorm_embedding = nn.LayerNorm(dim)
        self.layernorm_embedding = nn.LayerNorm(dim)
        self.type_embedding = nn.Embedding(2, dim) if config.add_type_embedding else None
        self.embed_positions = nn.Embedding(config.max_source_positions + 2, dim)
        self.embed_image_positions = nn.Embedding(config.image_bucket_size**2 + 1, dim)
        self.pos_ln = nn.LayerNorm(dim)
        self.image_pos_ln = nn.LayerNorm(dim)
        self.pos_q_linear = nn.Linear(dim, dim)
        self.pos_k_linear = nn.Linear(dim, dim)
        rates = linear_rates(config.encoder_drop_path_rate, config.encoder_layers)
        self.layers = nn.ModuleList(
            [BiomedGPTEncoderLayer(config, layer_idx=i, drop_path_rate=r) for i, r in enumerate(rates)]
        )
        self.layer_norm = nn.LayerNorm(dim)
        self.token_rel_pos_table_list = nn.ModuleList(
            [rel_pos_table(2 * config.token_bucket_size - 1, heads) for _ in range(config.encoder_layers)]
        )
        self.image_rel_pos_table_list = nn.ModuleList(
            [
                rel_pos_table((2 * config.image_bucket_size - 1) ** 2 + 3, heads)
                for _ in range(config.encoder_layers)
            ]
        )
        self.dropout = config.dropout
        self.post_init()

    def embed_patches(self, patch_images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images (B, 3, H, W) -> patch features (B, N, D), image-position ids (N,), raw position embeddings (N, D)."""
        features = self.embed_images(patch_images)  # (B, 1024, H/16, W/16)
        height, width = features.shape[-2:]
        features = features.flatten(2).transpose(1, 2)  # (B, N, 1024)
        ids = image_grid_positions(height, width, self.config.image_bucket_size).to(features.device)
        return self.image_proj(features), ids, self.image_position_embeddings(ids, height, width)

    def image_position_embeddings(self, ids: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(N, D) raw image position embeddings; with `interpolate_position`, a grid larger than the one of
        `orig_patch_image_size` gets that grid's embeddings resized bilinearly (OFA get_patch_images_info)."""
        orig = self.config.orig_patch_image_size // 16
        if not self.config.interpolate_position or height * width <= orig * orig:
            return self.embed_image_positions(ids)
        orig_ids = image_grid_positions(orig, orig, self.config.image_bucket_size).to(ids.device)
        grid = self.embed_image_positions(orig_ids).reshape(1, orig, orig, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(height, width), mode="bilinear")  # (1, D, H, W)
        return grid.permute(0, 2, 3, 1).reshape(height * width, -1)  # (N, D)

    def forward(
        self,
        input_ids: torch.LongTensor,  # (B, T) prompt tokens
        attention_mask: torch.Tensor | None = None,  # (B, T) 1 = token, 0 = padding
        patch_images: torch.Tensor | None = None,  # (B, 3, H, W), normalized to [-1, 1]
        patch_masks: torch.Tensor | None = None,  # (B,) bool: False = this sample has no image
        output_hidden_states: bool = False,
        return_dict: bool = True,
        **_: object,
    ) -> BiomedGPTEncoderOutput:
        batch, text_len = input_ids.shape
        text_padding = (
            input_ids.eq(self.config.pad_token_id) if attention_mask is None else ~attention_mask.bool()
        )
        x = self.embed_tokens(input_ids) * self.embed_scale  # (B, T, D)
        raw_pos = self.embed_positions(torch.arange(text_len, device=x.device))  # (T, D)
        if self.config.entangle_position_embedding:
            x = x + raw_pos
        if self.type_embedding is not None:
            x = x + self.type_embedding.weight[0]
        x = self.layernorm_embedding(x)
        pos = self.pos_ln(raw_pos)
        padding = text_padding
        num_patches = 0
        if patch_images is not None:
            patches, image_ids, raw_image_pos = self.embed_patches(patch_images)  # (B, N, D), (N,), (N, D)
            num_patches = patches.shape[1]
            patches = patches * self.embed_scale
            if self.config.entangle_position_embedding:
                patches = patches + raw_image_pos
            if self.type_embedding is not None:
                patches = patches + self.type_embedding.weight[1]
            patches = self.patch_layernorm_embedding(patches)
            x = torch.cat([patches, x], dim=1)  # (B, N + T, D): image tokens first
            image_pos = self.image_pos_ln(raw_image_pos)  # (N, D)
            pos = torch.cat([image_pos, pos], dim=0)  # (N + T, D)
            if patch_masks is None:
                patch_masks = torch.ones(batch, dtype=torch.bool, device=x.device)
            image_padding = (~patch_masks.bool())[:, None].expand(batch, num_patches)
            padding = torch.cat([image_padding, text_padding], dim=1)  # (B, S)
        x = F.dropout(x, self.dropout, self.training)
        x = x * (~padding).unsqueeze(-1).to(x.dtype)

        abs_bias = self._bias(self.pos_q_linear, self.pos_k_linear, pos[None], pos[None])  # (1, H, S, S)
        key_padding = torch.zeros(padding.shape, dtype=x.dtype, device=x.device).masked_fill(
            padding, float("-inf")
        )
        key_padding = key_padding[:, None, None, :]  # (B, 1, 1, S)
        token_buckets = token_bucket_positions(
            self.config.token_bucket_size, bucket_table_size(self.config.max_source_positions)
        )
        token_buckets = token_buckets[:text_len, :text_len].to(x.device)  # (T, T)
        if num_patches:
            image_buckets = image_bucket_positions(self.config.image_bucket_size).to(x.device)
            image_buckets = image_buckets[image_ids][:, image_ids]  # (N, N)

        hidden_states = [x] if output_hidden_states else None
        for idx, layer in enumerate(self.layers):
            # Relative biases live on the diagonal blocks only: text-text and image-image.
            rel = F.pad(
                self.token_rel_pos_table_list[idx](token_buckets).permute(2, 0, 1),
                (num_patches, 0, num_patches, 0),
            )
            if num_patches:
                image_rel = self.image_rel_pos_table_list[idx](image_buckets).permute(2, 0, 1)  # (H, N, N)
                rel = rel + F.pad(image_rel, (0, text_len, 0, text_len))
            x = layer(x, abs_bias + rel[None] + key_padding)  # bias (B, H, S, S)
            if output_hidden_states:
                hidden_states.append(x)
        x = self.layer_norm(x)
        position_embeddings = pos[None].expand(batch, -1, -1)
        return BiomedGPTEncoderOutput(
            last_hidden_state=x,
            padding_mask=padding,
            position_embeddings=position_embeddings,
            hidden_states=tuple(hidden_states) if hidden_states else None,
        )


# --------------------------------------------------------------------------------------------------
# Decoder
# --------------------------------------------------------------------------------------------------


class BiomedGPTDecoder(BiomedGPTPreTrainedModel):
    def __init__(self, config: BiomedGPTConfig, embed_tokens: nn.Embedding | None = None) -> None:
        super().__init__(config)
        dim, heads = config.d_model, config.decoder_attention_heads
        self.num_heads = heads
        self.embed_tokens = embed_tokens or nn.Embedding(config.vocab_size, dim, config.pad_token_id)
        self.embed_scale = math.sqrt(dim) if config.scale_embedding else 1.0
        self.layernorm_embedding = nn.LayerNorm(dim)
        self.code_layernorm_embedding = nn.LayerNorm(dim)
        self.embed_positions = nn.Embedding(config.max_target_positions + 2, dim)
        self.embed_image_positions = nn.Embedding(config.image_bucket_size**2 + 1, dim)
        self.pos_ln = nn.LayerNorm(dim)
        self.image_pos_ln = nn.LayerNorm(dim)
        self.self_pos_q_linear = nn.Linear(dim, dim)
        self.self_pos_k_linear = nn.Linear(dim, dim)
        self.cross_pos_q_linear = nn.Linear(dim, dim)
        self.cross_pos_k_linear = nn.Linear(dim, dim)
        rates = linear_rates(config.decoder_drop_path_rate, config.decoder_layers)
        self.layers = nn.ModuleList(
            [BiomedGPTDecoderLayer(config, layer_idx=i, drop_path_rate=r) for i, r in enumerate(rates)]
        )
        self.layer_norm = nn.LayerNorm(dim)
        self.token_rel_pos_table_list = nn.ModuleList(
            [rel_pos_table(2 * config.token_bucket_size - 1, heads) for _ in range(config.decoder_layers)]
        )
        self.image_rel_pos_table_list = nn.ModuleList(
            [
                rel_pos_table((2 * config.image_bucket_size - 1) ** 2 + 3, heads)
                for _ in range(config.decoder_layers)
            ]
        )
        self.dropout = config.dropout
        self._inference_memo: dict[str, tuple] = {}
        self.post_init()

    def _memo(self, name: str, params: list[torch.Tensor], compute):
        """Inference-time memo of weight-derived tables, invalidated when any of `params` changes in place.

        Training (grad enabled) always recomputes, so gradients flow.
        """
        if torch.is_grad_enabled():
            return compute()
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        hit = self._inference_memo.get(name)
        if hit is None or hit[0] != key:
            hit = (key, compute())
            self._inference_memo[name] = hit
        return hit[1]

    def _position_params(self) -> list[torch.Tensor]:
        modules = (
            self.embed_positions,
            self.embed_image_positions,
            self.pos_ln,
            self.image_pos_ln,
            self.self_pos_q_linear,
            self.self_pos_k_linear,
            self.cross_pos_q_linear,
        )
        return [p for m in modules for p in m.parameters()]

    def _position_tables(self, length: int) -> dict[str, torch.Tensor]:
        """Projected target positions 0..length-1, for text (row 0) and image-code (row 1) targets.

        self_q, self_k, cross_q: (2, H, length, hd); queries carry the attention scale.
        """
        device = self.embed_positions.weight.device
        text = self.pos_ln(self.embed_positions.weight[:length])  # (L, D)
        code_ids = decoder_code_positions(self.config.code_grid_size, self.config.image_bucket_size, length)
        code = self.image_pos_ln(self.embed_image_positions(code_ids.to(device)))  # (L, D)
        pos = torch.stack([text, code])  # (2, L, D)
        scale = (self.config.d_model / self.num_heads * self.config.attn_scale_factor) ** -0.5
        return {
            "self_q": split_heads(self.self_pos_q_linear(pos), self.num_heads) * scale,
            "self_k": split_heads(self.self_pos_k_linear(pos), self.num_heads),
            "cross_q": split_heads(self.cross_pos_q_linear(pos), self.num_heads) * scale,
        }

    def _cross_position_keys(self, encoder_outputs: BiomedGPTEncoderOutput) -> torch.Tensor:
        """(1, H, S, hd) keys of the encoder positions, memoized on the encoder output across decoding steps."""
        params = list(self.cross_pos_k_linear.parameters())

        def compute() -> torch.Tensor:
            src_pos = encoder_outputs.position_embeddings[:1]  # (1, S, D): the same for every sample
            return split_heads(self.cross_pos_k_linear(src_pos), self.num_heads)

        if torch.is_grad_enabled():
            return compute()
        key = (id(encoder_outputs.position_embeddings), *((p.data_ptr(), p._version) for p in params))
        memo = getattr(encoder_outputs, "_cross_position_keys", None)
        if memo is None or memo[0] != key:
            memo = (key, compute())
            object.__setattr__(encoder_outputs, "_cross_position_keys", memo)
        return memo[1]

    def _raw_positions(self, start: int, total: int, kinds: torch.Tensor | None) -> torch.Tensor:
        """Raw (not LayerNormed) target position embeddings of steps start..total-1: (1 or B, Tq, D)."""
        text = self.embed_positions.weight[start:total][None]  # (1, Tq, D)
        if kinds is None:
            return text
        ids = decoder_code_positions(self.config.code_grid_size, self.config.image_bucket_size, total)
        code = self.embed_image_positions(ids[start:total].to(text.device))[None]  # (1, Tq, D)
        return torch.cat([text, code])[kinds]  # (B, Tq, D)

    def _rel_bias(self, idx: int, start: int, total: int, kinds: torch.Tensor | None) -> torch.Tensor:
        """Relative bias of layer idx for queries start..total-1 over keys 0..total-1: (1 or B, H, Tq, Tk)."""
        device = self.embed_positions.weight.device
        buckets = token_bucket_positions(
            self.config.token_bucket_size, bucket_table_size(self.config.max_target_positions)
        )
        text = self.token_rel_pos_table_list[idx](buckets[start:total, :total].to(device)).permute(2, 0, 1)
        if kinds is None:
            return text[None]  # (1, H, Tq, Tk)
        ids = decoder_code_positions(self.config.code_grid_size, self.config.image_bucket_size, total)
        image_buckets = image_bucket_positions(self.config.image_bucket_size)[ids][:, ids][start:total]
        code = self.image_rel_pos_table_list[idx](image_buckets.to(device)).permute(2, 0, 1)
        return torch.stack([text, code])[kinds]  # (B, H, Tq, Tk)

    def forward(
        self,
        input_ids: torch.LongTensor,  # (B, Tq) decoder tokens (only the new ones when a cache is given)
        encoder_outputs: BiomedGPTEncoderOutput,
        code_masks: torch.Tensor | None = None,  # (B,) bool: True = this sample's target is image codes
        past_key_values: object | None = None,  # EncoderDecoderCache or StaticKVCache
        output_hidden_states: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        cache = as_kv_cache(past_key_values)
        query_len = input_ids.shape[1]
        start = cache.get_seq_length() if cache is not None else 0
        total = start + query_len
        if total > self.config.max_target_positions:
            raise ValueError(
                f"decoder length {total} exceeds max_target_positions={self.config.max_target_positions}"
            )
        kinds = (
            code_masks.long() if code_masks is not None and bool(code_masks.any()) else None
        )  # 0 text, 1 codes

        x = self.embed_tokens(input_ids) * self.embed_scale  # (B, Tq, D)
        if not self.config.disable_entangle:  # OFA adds raw target positions unless --disable-entangle
            x = x + self._raw_positions(start, total, kinds)
        if kinds is None:
            x = self.layernorm_embedding(x)
        else:
            x = torch.where(
                kinds[:, None, None].bool(), self.code_layernorm_embedding(x), self.layernorm_embedding(x)
            )
        x = F.dropout(x, self.dropout, self.training)

        # Position biases. Queries are target positions start..total-1; keys are positions 0..total-1 (self)
        # or the encoder's tokens (cross). Row 0 of each table is for text targets, row 1 for image codes.
        length = self.config.max_target_positions if not torch.is_grad_enabled() else total
        tables = self._memo("positions", self._position_params(), lambda: self._position_tables(length))
        rows = slice(0, 1) if kinds is None else slice(0, 2)
        self_abs = tables["self_q"][rows, :, start:total] @ tables["self_k"][rows, :, :total].transpose(
            -1, -2
        )
        cross_k = self._cross_position_keys(encoder_outputs)  # (1, H, S, hd)
        cross_abs = tables["cross_q"][rows, :, start:total] @ cross_k.transpose(-1, -2)  # (r, H, Tq, S)
        if kinds is not None:
            self_abs, cross_abs = self_abs[kinds], cross_abs[kinds]  # (B, H, Tq, .)
        causal = torch.full((query_len, total), float("-inf"), device=x.device).triu(start + 1)  # (Tq, Tk)
        if start == 0 and bool(input_ids.eq(self.config.pad_token_id).any()):
            # As OFA: padded decoder inputs are masked as keys (only padded queries see a difference, since
            # padding follows the tokens). Cached steps never feed padding to a row that is still running.
            pad_keys = torch.zeros(input_ids.shape, device=x.device).masked_fill(
                input_ids.eq(self.config.pad_token_id), float("-inf")
            )
            causal = causal + pad_keys[:, None, None, :]  # (B, 1, Tq, Tk)
        enc_padding = encoder_outputs.padding_mask  # (B, S)
        enc_padding = torch.zeros(enc_padding.shape, device=x.device).masked_fill(enc_padding, float("-inf"))
        cross_bias = cross_abs + enc_padding[:, None, None, :]  # (B, H, Tq, S)

        encoder_states = encoder_outputs.last_hidden_state
        hidden_states = [x] if output_hidden_states else None
        for idx, layer in enumerate(self.layers):
            self_bias = self_abs + self._rel_bias(idx, start, total, kinds) + causal  # (b, H, Tq, Tk)
            x = layer(x, encoder_states, self_bias, cross_bias, past_key_values=cache)
            if output_hidden_states:
                hidden_states.append(x)
        if cache is not None:
            cache.advance(query_len)
        x = self.layer_norm(x)  # (B, Tq, D)
        return x, tuple(hidden_states) if hidden_states else None


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------


class BiomedGPTModel(BiomedGPTPreTrainedModel):
    _tied_weights_keys = {
        "encoder.embed_tokens.weight": "shared.weight",
        "decoder.embed_tokens.weight": "shared.weight",
    }

    def __init__(self, config: BiomedGPTConfig) -> None:
        super().__init__(config)
        self.shared = nn.Embedding(config.vocab_size, config.d_model, config.pad_token_id)
        self.encoder = BiomedGPTEncoder(config, self.shared)
        self.decoder = BiomedGPTDecoder(config, self.shared)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.shared

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.shared = value
        self.encoder.embed_tokens = value
        self.decoder.embed_tokens = value

    def get_encoder(self) -> BiomedGPTEncoder:
        return self.encoder

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        patch_images: torch.Tensor | None = None,
        patch_masks: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        code_masks: torch.Tensor | None = None,
        encoder_outputs: BiomedGPTEncoderOutput | None = None,
        past_key_values: EncoderDecoderCache | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool = False,
        **_: object,
    ) -> Seq2SeqModelOutput:
        if encoder_outputs is None:
            encoder_outputs = self.encoder(
                input_ids,
                attention_mask=attention_mask,
                patch_images=patch_images,
                patch_masks=patch_masks,
                output_hidden_states=output_hidden_states,
            )
        if use_cache and past_key_values is None:
            past_key_values = EncoderDecoderCache(DynamicCache(), DynamicCache())
        hidden, decoder_states = self.decoder(
            decoder_input_ids,
            encoder_outputs,
            code_masks=code_masks,
            past_key_values=past_key_values,
            output_hidden_states=output_hidden_states,
        )
        return Seq2SeqModelOutput(
            last_hidden_state=hidden,
            past_key_values=past_key_values if use_cache else None,
            decoder_hidden_states=decoder_states,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states,
        )


class BiomedGPTForConditionalGeneration(BiomedGPTPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.shared.weight"}

    def __init__(self, config: BiomedGPTConfig) -> None:
        super().__init__(config)
        self.model = BiomedGPTModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def get_encoder(self) -> BiomedGPTEncoder:
        return self.model.encoder

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.shared

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        patch_images: torch.Tensor | None = None,
        patch_masks: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        code_masks: torch.Tensor | None = None,
        encoder_outputs: BiomedGPTEncoderOutput | None = None,
        past_key_values: Cache | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool = False,
        return_dict: bool | None = None,
        logits_mask: torch.Tensor | None = None,
        **kwargs: object,
    ) -> Seq2SeqLMOutput:
        """labels (B, L): target tokens ending with eos, -100 where ignored; decoder inputs are labels shifted right.

        logits_mask (B, L) bool: compute the logits only at these decoder positions, as (N, V) in row-major order
        (training: the labelled positions; the vocabulary projection of padding is most of a mixed batch's work).
        """
        if labels is not None and decoder_input_ids is None:
            decoder_input_ids = shift_tokens_right(
                labels, self.config.pad_token_id, self.config.decoder_start_token_id
            )
        outputs = self.model(
            input_ids,
            attention_mask=attention_mask,
            patch_images=patch_images,
            patch_masks=patch_masks,
            decoder_input_ids=decoder_input_ids,
            code_masks=code_masks,
            encoder_outputs=encoder_outputs,
            past_key_values=past_key_values,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
        )
        hidden = outputs.last_hidden_state
        logits = self.lm_head(hidden if logits_mask is None else hidden[logits_mask])  # (B, L, V) or (N, V)
        loss = None
        if labels is not None:
            targets = labels if logits_mask is None else labels[logits_mask]
            loss = F.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100
            )
        return Seq2SeqLMOutput(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            decoder_hidden_states=outputs.decoder_hidden_states,
            encoder_last_hidden_state=outputs.encoder_last_hidden_state,
            encoder_hidden_states=outputs.encoder_hidden_states,
        )

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        past_key_values: Cache | None = None,
        encoder_outputs: BiomedGPTEncoderOutput | None = None,
        code_masks: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **_: object,
    ) -> dict[str, object]:
        past = past_key_values.get_seq_length() if past_key_values is not None else 0
        return {
            "decoder_input_ids": input_ids[:, past:],
            "encoder_outputs": encoder_outputs,
            "past_key_values": past_key_values,
            "code_masks": code_masks,
            "use_cache": use_cache,
        }


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int, start_token_id: int) -> torch.Tensor:
    """(B, L) targets -> decoder inputs: start token, then targets[:-1]; ignored labels become padding."""
    shifted = labels.new_full(labels.shape, pad_token_id)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = start_token_id
    return shifted.masked_fill(shifted.eq(-100), pad_token_id)


def _register_auto_classes() -> None:
    """Make `AutoConfig`, `AutoModel`, `AutoModelForSeq2SeqLM` and `AutoTokenizer` know model_type 'biomedgpt'."""
    from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM

    from biomedgpt.tokenization.unified import register_auto_tokenizer

    AutoConfig.register("biomedgpt", BiomedGPTConfig, exist_ok=True)
    AutoModel.register(BiomedGPTConfig, BiomedGPTModel, exist_ok=True)
    AutoModelForSeq2SeqLM.register(BiomedGPTConfig, BiomedGPTForConditionalGeneration, exist_ok=True)
    register_auto_tokenizer(BiomedGPTConfig)


_register_auto_classes()
