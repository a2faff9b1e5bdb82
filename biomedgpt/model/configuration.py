"""`BiomedGPTConfig`: the hyper-parameters of OFA's unify transformer, and the named sizes.

The fields mirror the fairseq arguments of OFA (`models/ofa/unify_transformer.py`, `ofa_*_architecture`)
so that official OFA / BiomedGPT checkpoints can be mapped onto this model parameter for parameter.
Sizes follow the BiomedGPT paper (Zhang et al., Nature Medicine 2024, table of model sizes):
S = 33M, M = 93M, B = 182M parameters with OFA's 59,457-token vocabulary.
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedConfig

# Named sizes. `tiny` is ours (for tests and the quickstart); the others are OFA's.
# resnet_layers: blocks per stage of the first three ResNet stages (ResNet-50: 3,4,6; ResNet-101: 3,4,23;
# ResNet-152: 3,8,36); the stem stops at stage 3 (1024 channels, stride 16).
ARCH_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        attention_heads=4,
        ffn_dim=256,
        resnet_layers=(1, 1, 1),
    ),
    "small": dict(
        d_model=256,
        encoder_layers=4,
        decoder_layers=4,
        attention_heads=4,
        ffn_dim=1024,
        resnet_layers=(3, 4, 6),
    ),
    "medium": dict(
        d_model=512,
        encoder_layers=4,
        decoder_layers=4,
        attention_heads=8,
        ffn_dim=2048,
        resnet_layers=(3, 4, 23),
    ),
    "base": dict(
        d_model=768,
        encoder_layers=6,
        decoder_layers=6,
        attention_heads=12,
        ffn_dim=3072,
        resnet_layers=(3, 4, 23),
    ),
    "large": dict(
        d_model=1024,
        encoder_layers=12,
        decoder_layers=12,
        attention_heads=16,
        ffn_dim=4096,
        resnet_layers=(3, 8, 36),
    ),
}

# Published parameter counts (BiomedGPT paper) for the sizes that have one.
PUBLISHED_PARAMS = {"small": 33_000_000, "medium": 93_000_000, "base": 182_000_000}


class BiomedGPTConfig(PreTrainedConfig):
    """Configuration of `BiomedGPTForConditionalGeneration` (OFA's unify transformer)."""

    model_type = "biomedgpt"
    keys_to_ignore_at_inference = ["past_key_values"]
    attribute_map = {
        "hidden_size": "d_model",
        "num_attention_heads": "encoder_attention_heads",
        "num_hidden_layers": "encoder_layers",
    }

    def __init__(
        self,
        *,
        arch: str = "tiny",
        vocab_size: int = 32768,
        d_model: int = 64,
        encoder_layers: int = 2,
        decoder_layers: int = 2,
        encoder_attention_heads: int = 4,
        decoder_attention_heads: int = 4,
        encoder_ffn_dim: int = 256,
        decoder_ffn_dim: int = 256,
        resnet_layers: tuple[int, int, int] | list[int] = (1, 1, 1),
        activation_function: str = "gelu",
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        resnet_drop_path_rate: float = 0.0,
        encoder_drop_path_rate: float = 0.0,
        decoder_drop_path_rate: float = 0.0,
        max_source_positions: int = 1024,
        max_target_positions: int = 1024,
        token_bucket_size: int = 256,
        image_bucket_size: int = 42,
        attn_scale_factor: float = 2.0,
        scale_embedding: bool = False,
        add_type_embedding: bool = True,
        scale_attn: bool = True,
        scale_fc: bool = True,
        scale_heads: bool = True,
        code_grid_size: int = 16,
        image_size: int = 256,
        entangle_position_embedding: bool = False,
        disable_entangle: bool = True,
        scale_resids: bool = False,
        interpolate_position: bool = False,
        orig_patch_image_size: int = 256,
        resnet_norm_eps: float = 1e-5,
        freeze_resnet: bool = False,
        init_std: float = 0.02,
        pad_token_id: int = 1,
        bos_token_id: int = 0,
        eos_token_id: int = 2,
        decoder_start_token_id: int = 0,
        tie_word_embeddings: bool = True,
        is_encoder_decoder: bool = True,
        use_cache: bool = True,
        **kwargs: Any,
    ) -> None:
        self.arch = arch
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.encoder_layers = encoder_layers
        self.decoder_layers = decoder_layers
        self.encoder_attention_heads = encoder_attention_heads
        self.decoder_attention_heads = decoder_attention_heads
        self.encoder_ffn_dim = encoder_ffn_dim
        self.decoder_ffn_dim = decoder_ffn_dim
        self.resnet_layers = list(resnet_layers)
        self.activation_function = activation_function
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.activation_dropout = activation_dropout
        self.resnet_drop_path_rate = resnet_drop_path_rate
        self.encoder_drop_path_rate = encoder_drop_path_rate
        self.decoder_drop_path_rate = decoder_drop_path_rate
        self.max_source_positions = max_source_positions
        self.max_target_positions = max_target_positions
        self.token_bucket_size = token_bucket_size
        self.image_bucket_size = image_bucket_size
        self.attn_scale_factor = attn_scale_factor
        self.scale_embedding = scale_embedding
        self.add_type_embedding = add_type_embedding
        self.scale_attn = scale_attn
        self.scale_fc = scale_fc
        self.scale_heads = scale_heads
        self.code_grid_size = code_grid_size
        self.image_size = image_size
        # OFA options kept so that every official checkpoint maps exactly (see `biomedgpt.model.convert`):
        # entangle_position_embedding: the encoder adds raw absolute positions to its inputs;
        # disable_entangle=False: the decoder adds raw target positions to its inputs (OFA does so unless
        # `--disable-entangle`, which BiomedGPT passes); scale_resids: NormFormer's learned residual scale
        # (`w_resid`) before the FFN residual; interpolate_position: image positions bilinearly resized from
        # the orig_patch_image_size grid when the grid is larger; resnet_norm_eps: 1e-3 under `--sync-bn`;
        # freeze_resnet: the stem's batch norms stay in eval mode and are not trained.
        self.entangle_position_embedding = entangle_position_embedding
        self.disable_entangle = disable_entangle
        self.scale_resids = scale_resids
        self.interpolate_position = interpolate_position
        self.orig_patch_image_size = orig_patch_image_size
        self.resnet_norm_eps = resnet_norm_eps
        self.freeze_resnet = freeze_resnet
        self.init_std = init_std
        self.use_cache = use_cache
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            decoder_start_token_id=decoder_start_token_id,
            tie_word_embeddings=tie_word_embeddings,
            is_encoder_decoder=is_encoder_decoder,
            **kwargs,
        )
        self._validate()

    def _validate(self) -> None:
        for name in ("d_model", "encoder_layers", "decoder_layers", "vocab_size"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"BiomedGPTConfig.{name} must be positive, got {getattr(self, name)}")
        for heads_name in ("encoder_attention_heads", "decoder_attention_heads"):
            heads = getattr(self, heads_name)
            if self.d_model % heads:
                raise ValueError(f"d_model={self.d_model} is not divisible by {heads_name}={heads}")
        if len(self.resnet_layers) != 3:
            raise ValueError(f"resnet_layers must list 3 stages, got {self.resnet_layers}")
        if self.image_size % 16:
            raise ValueError(
                f"image_size must be a multiple of 16 (the stem's stride), got {self.image_size}"
            )
        if self.image_size // 16 > self.image_bucket_size:
            raise ValueError(
                f"image_size={self.image_size} gives a {self.image_size // 16}-wide patch grid, larger than "
                f"image_bucket_size={self.image_bucket_size}"
            )

    @classmethod
    def from_arch(cls, arch: str, **overrides: Any) -> BiomedGPTConfig:
        """The named size `arch` (tiny, small, medium, base, large), with any field overridden."""
        if arch not in ARCH_PRESETS:
            import difflib

            close = difflib.get_close_matches(arch, ARCH_PRESETS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ValueError(f"unknown arch '{arch}' (known: {', '.join(ARCH_PRESETS)}){hint}")
        p = ARCH_PRESETS[arch]
        fields: dict[str, Any] = dict(
            arch=arch,
            d_model=p["d_model"],
            encoder_layers=p["encoder_layers"],
            decoder_layers=p["decoder_layers"],
            encoder_attention_heads=p["attention_heads"],
            decoder_attention_heads=p["attention_heads"],
            encoder_ffn_dim=p["ffn_dim"],
            decoder_ffn_dim=p["ffn_dim"],
            resnet_layers=p["resnet_layers"],
        )
        fields.update(overrides)
        return cls(**fields)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.encoder_attention_heads
