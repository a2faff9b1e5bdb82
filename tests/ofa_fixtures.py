"""Test fixtures in OFA's formats, written by the tests themselves (no third-party weights or vocabularies).

- `write_bpe_dir`: a tiny GPT-2-style BPE folder (encoder.json over the byte alphabet plus a few merges,
  vocab.bpe, and a dict.txt listing the GPT-2 ids in a shuffled order, as fairseq's frequency order does).
- `ofa_state_dict`: a model's weights under fairseq OFA's key names, with the buffers OFA saves.
- `write_fairseq_checkpoint`: a `.pt` laid out as fairseq's trainer saves it (args, cfg as omegaconf or plain
  dict, model, EMA in extra_state, optimizer state), optionally in fp16.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

MERGES = [
    ("Ġ", "w"),
    ("h", "a"),
    ("Ġw", "ha"),
    ("Ġwha", "t"),
    ("Ġ", "t"),
    ("h", "e"),
    ("Ġt", "he"),
    ("i", "s"),
]

# What BiomedGPT's scripts pass (scripts/*/train_*.sh), at a test size.
BIOMEDGPT_OPTIONS: dict[str, Any] = dict(
    encoder_normalize_before=True,
    decoder_normalize_before=True,
    share_decoder_input_output_embed=True,
    share_all_embeddings=True,
    layernorm_embedding=True,
    patch_layernorm_embedding=True,
    code_layernorm_embedding=True,
    add_type_embedding=True,
    scale_attn=True,
    scale_fc=True,
    scale_heads=True,
    disable_entangle=True,
    resnet_drop_path_rate=0.0,
    encoder_drop_path_rate=0.1,
    decoder_drop_path_rate=0.1,
    dropout=0.1,
    attention_dropout=0.0,
    freeze_encoder_embedding=True,
    freeze_decoder_embedding=True,
    token_bucket_size=256,
    image_bucket_size=42,
    lr=5e-5,
    optimizer="adam",
)
TEST_SIZE = dict(
    encoder_embed_dim=64,
    encoder_ffn_embed_dim=128,
    encoder_layers=2,
    decoder_layers=2,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    resnet_type="resnet18",
)


def byte_alphabet() -> list[str]:
    from tokenizers import pre_tokenizers

    return sorted(pre_tokenizers.ByteLevel.alphabet())


def write_bpe_dir(directory: Path, *, seed: int = 0) -> Path:
    """A BPE folder in OFA's format; returns it. dict.txt holds every GPT-2 id, in a shuffled order."""
    directory.mkdir(parents=True, exist_ok=True)
    pieces = byte_alphabet() + ["".join(m) for m in MERGES] + ["<|endoftext|>"]
    encoder = {piece: i for i, piece in enumerate(pieces)}
    (directory / "encoder.json").write_text(json.dumps(encoder), encoding="utf-8")
    merges = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in MERGES)
    (directory / "vocab.bpe").write_text(merges, encoding="utf-8")
    ids = list(range(len(pieces)))
    random.Random(seed).shuffle(ids)
    lines = [f"{gpt2_id} {1000 - rank}" for rank, gpt2_id in enumerate(ids)]
    lines += ["madeupword0000 0", "madeupword0001 0"]
    (directory / "dict.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


def reference_ids(bpe_dir: Path, text: str) -> list[int]:
    """OFA's two steps done separately: GPT-2 BPE ids (a plain BPE over encoder.json), then dict.txt's index."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    encoder = json.loads((bpe_dir / "encoder.json").read_text(encoding="utf-8"))
    gpt2 = Tokenizer(models.BPE(vocab=encoder, merges=MERGES))
    gpt2.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    symbols = [line.rsplit(" ", 1)[0] for line in (bpe_dir / "dict.txt").read_text().splitlines()]
    index = {symbol: 4 + i for i, symbol in enumerate(symbols)}
    return [0] + [index.get(str(i), 3) for i in gpt2.encode(text).ids] + [2]


def ofa_state_dict(model) -> dict[str, Any]:
    """`model`'s weights under OFA's fairseq names, plus the buffers OFA saves (bucket tables, versions)."""
    from biomedgpt.model.convert.ofa_keys import to_ofa_state_dict

    return to_ofa_state_dict(model)


def random_ofa_model(*, seed: int = 0, image_size: int = 64, vocab_size: int, **overrides):
    """Our model at the test size with every weight random (LayerNorms, relative tables, batch-norm stats too)."""
    import torch

    from biomedgpt.model.configuration import BiomedGPTConfig
    from biomedgpt.model.modeling import BiomedGPTForConditionalGeneration

    torch.manual_seed(seed)
    config = BiomedGPTConfig(
        arch="test", vocab_size=vocab_size, d_model=64, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128,
        resnet_layers=(2, 2, 2), image_size=image_size, **overrides,
    )  # fmt: skip
    model = BiomedGPTForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "layer_norm" in name or "layernorm" in name or name.endswith(("_ln.weight", "_ln.bias")):
                param.copy_(torch.randn_like(param) * 0.1 + (1.0 if name.endswith("weight") else 0.0))
            elif "rel_pos_table" in name:
                param.normal_(0.0, 0.5)
            else:
                param.normal_(0.0, 0.3 if param.dim() > 1 else 0.1)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model


def ofa_options(**overrides: Any) -> dict[str, Any]:
    return {"arch": "ofa_tiny", **BIOMEDGPT_OPTIONS, **TEST_SIZE, **overrides}


def write_fairseq_checkpoint(
    path: Path,
    state: dict[str, Any],
    *,
    options: dict[str, Any],
    cfg_style: str = "omegaconf",
    task: dict[str, Any] | None = None,
    ema: dict[str, Any] | None = None,
    fp16: bool = False,
) -> Path:
    """`state` saved as fairseq's trainer does (top-level args/cfg/model/extra_state/optimizer state)."""
    import torch

    task = {"_name": "vqa_gen", "patch_image_size": 64, **(task or {})}
    cast = (lambda t: t.half() if t.is_floating_point() else t) if fp16 else (lambda t: t)
    model = {k: cast(v) for k, v in state.items()}
    optimizer_state = {
        "state": {i: {"exp_avg": torch.randn(v.shape), "exp_avg_sq": torch.rand(v.shape)}
                  for i, v in enumerate(state.values()) if v.is_floating_point()},
        "param_groups": [{"lr": 5e-5, "betas": (0.9, 0.999)}],
    }  # fmt: skip
    args = None
    if cfg_style == "omegaconf":
        from omegaconf import OmegaConf

        cfg = OmegaConf.create(
            {"common": {"fp16": fp16, "seed": 7}, "model": None, "task": task, "criterion": {"_name": "x"}},
            flags={"allow_objects": True},
        )
        cfg.model = argparse.Namespace(**options)  # fairseq keeps legacy models' options as a Namespace
    elif cfg_style == "dict":
        cfg = {"common": {"fp16": fp16}, "model": dict(options), "task": task}
    elif cfg_style == "args":
        cfg, args = None, argparse.Namespace(**options, **{k: v for k, v in task.items() if k != "_name"},
                                             task=task["_name"])  # fmt: skip
    else:
        raise ValueError(cfg_style)
    extra_state = {"train_iterator": {"epoch": 3}, "previous_training_time": 12.5}
    if ema is not None:
        extra_state["ema"] = {k: cast(v) for k, v in ema.items()}
        extra_state["ema_fp32_params"] = {k: v.float() for k, v in ema.items() if v.is_floating_point()}
    torch.save(
        {
            "args": args,
            "cfg": cfg,
            "model": model,
            "criterion": {},
            "optimizer_history": [{"criterion_name": "AdjustLabelSmoothedCrossEntropyCriterion",
                                   "optimizer_name": "FairseqAdam", "num_updates": 100}],
            "task_state": {},
            "extra_state": extra_state,
            "last_optimizer_state": optimizer_state,
        },
        path,
    )  # fmt: skip
    return path
