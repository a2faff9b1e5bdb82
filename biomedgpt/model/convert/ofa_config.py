"""OFA / BiomedGPT fairseq options -> `BiomedGPTConfig`, refusing every option we do not implement.

The options come from a checkpoint's `cfg.model` (or its top-level `args`): an argparse Namespace with every
command-line option, already completed by the `ofa_*_architecture` function (OFA `models/ofa/ofa.py`). Missing
options take OFA's defaults (`DEFAULTS` below, from `ofa_large_architecture` and the size functions).

Three kinds of options:
- mapped onto the config (sizes, NormFormer switches, buckets, drop rates, ...);
- required values: options that change the forward pass in a way we do not implement (prompt tuning,
  adapters, post-LN layers, ...) must be at the value named in `REQUIRED`, else `UnsupportedOptionError`;
- everything else (optimizer, data, logging, freezing flags that only matter to fairseq's trainer) is ignored,
  and listed in the conversion report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# OFA's architecture defaults (models/ofa/ofa.py: ofa_large_architecture, then the per-size overrides).
DEFAULTS: dict[str, Any] = {
    "encoder_embed_dim": 1024,
    "encoder_ffn_embed_dim": 4096,
    "encoder_layers": 12,
    "encoder_attention_heads": 16,
    "encoder_normalize_before": True,
    "decoder_normalize_before": True,
    "attention_dropout": 0.0,
    "relu_dropout": 0.0,
    "activation_dropout": 0.0,
    "dropout": 0.0,
    "max_target_positions": 1024,
    "max_source_positions": 1024,
    "adaptive_softmax_cutoff": None,
    "share_all_embeddings": True,
    "no_scale_embedding": True,
    "layernorm_embedding": True,
    "activation_fn": "gelu",
    "resnet_drop_path_rate": 0.0,
    "encoder_drop_path_rate": 0.0,
    "decoder_drop_path_rate": 0.0,
    "resnet_type": "resnet152",
    "token_bucket_size": 256,
    "image_bucket_size": 42,
    "add_type_embedding": True,
    "attn_scale_factor": 2,
    "code_image_size": 128,
    "patch_layernorm_embedding": True,
    "code_layernorm_embedding": True,
    "entangle_position_embedding": False,
    "disable_entangle": False,
    "sync_bn": False,
    "scale_attn": False,
    "scale_fc": False,
    "scale_heads": False,
    "scale_resids": False,
    "orig_patch_image_size": 256,
    "interpolate_position": False,
    "freeze_resnet": False,
}

SIZE_DEFAULTS: dict[str, dict[str, Any]] = {
    "ofa_tiny": dict(encoder_embed_dim=256, encoder_ffn_embed_dim=1024, encoder_layers=4,
                     encoder_attention_heads=4, decoder_layers=4, decoder_attention_heads=4,
                     resnet_type="resnet50"),
    "ofa_medium": dict(encoder_embed_dim=512, encoder_ffn_embed_dim=2048, encoder_layers=4,
                       encoder_attention_heads=8, decoder_layers=4, decoder_attention_heads=8,
                       resnet_type="resnet101"),
    "ofa_base": dict(encoder_embed_dim=768, encoder_ffn_embed_dim=3072, encoder_layers=6,
                     encoder_attention_heads=12, decoder_layers=6, decoder_attention_heads=12,
                     resnet_type="resnet101"),
    "ofa_large": dict(decoder_layers=12, decoder_attention_heads=16),
    "ofa_huge": dict(encoder_embed_dim=1280, encoder_ffn_embed_dim=5120, encoder_layers=24,
                     encoder_attention_heads=16, decoder_layers=12, decoder_attention_heads=16,
                     resnet_type="resnet152"),
}  # fmt: skip

# Our preset names for OFA's sizes (BiomedGPT calls ofa_tiny "S").
OUR_ARCH = {"ofa_tiny": "small", "ofa_medium": "medium", "ofa_base": "base", "ofa_large": "large"}

# OFA's `resnet_type` -> blocks of the first three stages (its ResNet always uses Bottleneck blocks).
RESNET_LAYERS = {
    "resnet18": (2, 2, 2),
    "resnet34": (3, 4, 6),
    "resnet50": (3, 4, 6),
    "resnet101": (3, 4, 23),
    "resnet152": (3, 8, 36),
}

# Options that change the forward pass in ways this model does not implement: each must hold this value.
REQUIRED: dict[str, Any] = {
    "encoder_normalize_before": True,
    "decoder_normalize_before": True,
    "layernorm_embedding": True,
    "patch_layernorm_embedding": True,
    "code_layernorm_embedding": True,
    "adaptive_softmax_cutoff": None,
    "encoder_prompt": False,
    "decoder_prompt": False,
    "adapter": False,
    "cross_self_attention": False,
    "no_cross_attention": False,
    "no_token_positional_embeddings": False,
    "no_decoder_final_norm": False,
    "quant_noise_pq": 0,
    "encoder_layerdrop": 0,
    "decoder_layerdrop": 0,
    "base_layers": 0,
    "tie_adaptive_weights": False,
    "encoder_learned_pos": True,
    "decoder_learned_pos": True,
}

# Options read into the config (the report lists them as mapped).
MAPPED = {
    "arch", "encoder_embed_dim", "decoder_embed_dim", "encoder_ffn_embed_dim", "decoder_ffn_embed_dim",
    "encoder_layers", "decoder_layers", "encoder_attention_heads", "decoder_attention_heads",
    "decoder_output_dim", "decoder_input_dim", "resnet_type", "activation_fn", "dropout",
    "attention_dropout", "activation_dropout", "relu_dropout", "resnet_drop_path_rate",
    "encoder_drop_path_rate", "decoder_drop_path_rate", "max_source_positions", "max_target_positions",
    "token_bucket_size", "image_bucket_size", "attn_scale_factor", "no_scale_embedding",
    "add_type_embedding", "scale_attn", "scale_fc", "scale_heads", "scale_resids", "code_image_size",
    "entangle_position_embedding", "disable_entangle", "interpolate_position", "orig_patch_image_size",
    "sync_bn", "freeze_resnet", "share_all_embeddings", "share_decoder_input_output_embed",
}  # fmt: skip


class UnsupportedOptionError(ValueError):
    """The checkpoint was trained with an option this model does not implement."""


@dataclass(kw_only=True)
class OfaOptions:
    """The model options of a checkpoint, with OFA's defaults filled in."""

    values: dict[str, Any]
    """Every option (the checkpoint's, completed with OFA's defaults)."""
    source: str
    """Where they were read: 'cfg.model' or 'args'."""

    def get(self, name: str) -> Any:
        return self.values.get(name, DEFAULTS.get(name))


def read_options(checkpoint: dict[str, Any]) -> OfaOptions:
    """The model options of a loaded checkpoint: `cfg.model` (dict or Namespace) or, in old ones, `args`."""
    cfg = checkpoint.get("cfg")
    model_cfg = cfg.get("model") if isinstance(cfg, dict) else None
    if isinstance(model_cfg, dict) and model_cfg:
        raw, source = model_cfg, "cfg.model"
    elif isinstance(checkpoint.get("args"), dict):
        raw, source = checkpoint["args"], "args"
    else:
        raise ValueError("the checkpoint has neither cfg.model nor args: it is not a fairseq OFA checkpoint")
    arch = raw.get("arch") or raw.get("_name")
    if arch not in SIZE_DEFAULTS:
        raise UnsupportedOptionError(
            f"arch={arch!r} is not an OFA architecture we import (known: {', '.join(SIZE_DEFAULTS)})"
        )
    given = {k: v for k, v in raw.items() if v is not None}  # None means "the architecture's default"
    values = {**DEFAULTS, **SIZE_DEFAULTS[arch], **given}
    values["arch"] = arch
    return OfaOptions(values=values, source=source)


def task_options(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The task section (`cfg.task`, else the same `args`): task name, patch_image_size, ..."""
    cfg = checkpoint.get("cfg")
    task = cfg.get("task") if isinstance(cfg, dict) else None
    if isinstance(task, dict) and task:
        return task
    args = checkpoint.get("args")
    return args if isinstance(args, dict) else {}


def _check_required(options: OfaOptions) -> None:
    for name, wanted in REQUIRED.items():
        if name not in options.values:
            continue
        value = options.values[name]
        if value in (None, "") and wanted in (None, 0, False):
            continue
        if value != wanted and not (isinstance(wanted, bool) and bool(value) == wanted):
            raise UnsupportedOptionError(
                f"option {name}={value!r} is not implemented by this model (it must be {wanted!r})"
            )


def _equal(options: OfaOptions, first: str, second: str) -> None:
    a, b = options.get(first), options.get(second)
    if b is not None and a != b:
        raise UnsupportedOptionError(f"{first}={a} and {second}={b} differ; this model needs them equal")


def to_config_kwargs(options: OfaOptions, *, vocab_size: int, image_size: int) -> dict[str, Any]:
    """Keyword arguments of `BiomedGPTConfig` for these options; UnsupportedOptionError names what is not."""
    _check_required(options)
    get = options.get
    dim = int(get("encoder_embed_dim"))
    options.values.setdefault("decoder_embed_dim", dim)
    options.values.setdefault("decoder_ffn_embed_dim", get("encoder_ffn_embed_dim"))
    for other in ("decoder_embed_dim", "decoder_output_dim", "decoder_input_dim"):
        _equal(options, "encoder_embed_dim", other)
    if not (get("share_all_embeddings") or get("share_decoder_input_output_embed")):
        raise UnsupportedOptionError("share_all_embeddings=False: this model ties all token embeddings")
    resnet_type = get("resnet_type")
    if resnet_type not in RESNET_LAYERS:
        raise UnsupportedOptionError(
            f"resnet_type={resnet_type!r} is not implemented (known: {', '.join(RESNET_LAYERS)})"
        )
    activation = str(get("activation_fn"))
    if activation not in ("gelu", "relu"):
        raise UnsupportedOptionError(f"activation_fn={activation!r} is not implemented (gelu or relu)")
    activation_dropout = get("activation_dropout") or get("relu_dropout") or 0.0
    return dict(
        arch=_our_arch(options),
        vocab_size=vocab_size,
        d_model=dim,
        encoder_layers=int(get("encoder_layers")),
        decoder_layers=int(get("decoder_layers")),
        encoder_attention_heads=int(get("encoder_attention_heads")),
        decoder_attention_heads=int(get("decoder_attention_heads")),
        encoder_ffn_dim=int(get("encoder_ffn_embed_dim")),
        decoder_ffn_dim=int(get("decoder_ffn_embed_dim")),
        resnet_layers=list(RESNET_LAYERS[resnet_type]),
        activation_function=activation,
        dropout=float(get("dropout")),
        attention_dropout=float(get("attention_dropout")),
        activation_dropout=float(activation_dropout),
        resnet_drop_path_rate=float(get("resnet_drop_path_rate")),
        encoder_drop_path_rate=float(get("encoder_drop_path_rate")),
        decoder_drop_path_rate=float(get("decoder_drop_path_rate")),
        max_source_positions=int(get("max_source_positions")),
        max_target_positions=int(get("max_target_positions")),
        token_bucket_size=int(get("token_bucket_size")),
        image_bucket_size=int(get("image_bucket_size")),
        attn_scale_factor=float(get("attn_scale_factor")),
        scale_embedding=not bool(get("no_scale_embedding")),
        add_type_embedding=bool(get("add_type_embedding")),
        scale_attn=bool(get("scale_attn")),
        scale_fc=bool(get("scale_fc")),
        scale_heads=bool(get("scale_heads")),
        scale_resids=bool(get("scale_resids")),
        code_grid_size=int(get("code_image_size")) // 8,
        image_size=image_size,
        entangle_position_embedding=bool(get("entangle_position_embedding")),
        disable_entangle=bool(get("disable_entangle")),
        interpolate_position=bool(get("interpolate_position")),
        orig_patch_image_size=int(get("orig_patch_image_size")),
        resnet_norm_eps=1e-3 if bool(get("sync_bn")) else 1e-5,
        freeze_resnet=bool(get("freeze_resnet")),
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=0,
    )


def _our_arch(options: OfaOptions) -> str:
    """Our preset name when the dimensions are exactly OFA's for that size, else '<ofa arch>-custom'."""
    arch = options.values["arch"]
    sizes = {**SIZE_DEFAULTS[arch]}
    keys = ("encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_layers", "encoder_attention_heads",
            "decoder_layers", "decoder_attention_heads", "resnet_type")  # fmt: skip
    reference = {**DEFAULTS, **sizes}
    if arch in OUR_ARCH and all(options.get(k) == reference.get(k) for k in keys):
        return OUR_ARCH[arch]
    return f"{arch}-custom"


def ignored_options(options: OfaOptions) -> list[str]:
    """Options of the checkpoint that neither map nor are checked (training, data, logging)."""
    return sorted(k for k in options.values if k not in MAPPED and k not in REQUIRED and k not in DEFAULTS)
