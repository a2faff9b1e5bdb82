"""`biomedgpt describe --arch NAME [--vocab-size N] [--json]`: size and vocabulary layout of a named architecture.

The model is built on the meta device (no memory, no initialization), so even `large` answers instantly.
With `--vocab-size 59457` (OFA's vocabulary) the counts are comparable to BiomedGPT's published sizes.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", default="tiny", help="tiny, small, medium, base or large (default: tiny)")
    parser.add_argument(
        "--vocab-size",
        type=int,
        default=None,
        help="vocabulary size (default: our tokenizer's, 32768; OFA/BiomedGPT use 59457)",
    )
    parser.add_argument("--image-size", type=int, default=256, help="input side in pixels (default 256)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def describe(arch: str, *, vocab_size: int | None = None, image_size: int = 256) -> dict:
    import torch

    from biomedgpt.model.configuration import PUBLISHED_PARAMS, BiomedGPTConfig
    from biomedgpt.model.modeling import BiomedGPTForConditionalGeneration
    from biomedgpt.tokenization.layout import DEFAULT_LAYOUT, layout_for_vocab_size

    layout = DEFAULT_LAYOUT if vocab_size is None else layout_for_vocab_size(vocab_size)
    config = BiomedGPTConfig.from_arch(arch, vocab_size=layout.vocab_size, image_size=image_size)
    with torch.device("meta"):
        model = BiomedGPTForConditionalGeneration(config)
    params = sum(p.numel() for p in model.parameters())  # parameters() yields tied weights once
    stem = sum(p.numel() for p in model.model.encoder.embed_images.parameters())
    info = {
        "arch": arch,
        "params": params,
        "params_without_stem": params - stem,
        "vocab_size": layout.vocab_size,
        "layout": {k: layout.to_dict()[k] for k in ("text", "mask", "code", "bin")},
        "d_model": config.d_model,
        "encoder_layers": config.encoder_layers,
        "decoder_layers": config.decoder_layers,
        "attention_heads": config.encoder_attention_heads,
        "ffn_dim": config.encoder_ffn_dim,
        "resnet_layers": config.resnet_layers,
        "image_size": image_size,
        "image_tokens": (image_size // 16) ** 2,
    }
    if arch in PUBLISHED_PARAMS:
        info["published_params"] = PUBLISHED_PARAMS[arch]
        info["relative_to_published"] = round(params / PUBLISHED_PARAMS[arch] - 1, 4)
    return info


def run(args: argparse.Namespace) -> int:
    try:
        info = describe(args.arch, vocab_size=args.vocab_size, image_size=args.image_size)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(info))
        return 0
    print(
        f"{info['arch']}: {info['params'] / 1e6:.2f}M parameters ({info['params_without_stem'] / 1e6:.2f}M without "
        f"the ResNet stem)"
    )
    print(
        f"  {info['encoder_layers']}+{info['decoder_layers']} layers, d_model {info['d_model']}, "
        f"{info['attention_heads']} heads, FFN {info['ffn_dim']}, ResNet stages {info['resnet_layers']}"
    )
    print(f"  {info['image_size']} px images -> {info['image_tokens']} image tokens")
    lay = info["layout"]
    print(
        f"  vocabulary {info['vocab_size']}: text {lay['text']}, <mask> {lay['mask']}, <code> {lay['code']}, "
        f"<bin> {lay['bin']}"
    )
    if "published_params" in info:
        print(
            f"  BiomedGPT published: {info['published_params'] / 1e6:.0f}M "
            f"({info['relative_to_published']:+.1%} here, with vocabulary {info['vocab_size']})"
        )
    return 0
