"""The model and processor a run starts from: a fresh model of `model.arch`, or a model folder (`model.init_from`).

    build_processor(cfg) -> BiomedGPTProcessor   the folder's tokenizer and preprocessor, else the default ones
    build_model(cfg, processor) -> BiomedGPTForConditionalGeneration
    init_location_embeddings(model, layout)      `<bin_i>` embeddings as sinusoids of i (model.location_init)
    check_init_from(path)                        `model.init_from` is a model folder with safetensors weights

Training (`biomedgpt.train.worker`) builds its model here; so may anything else that needs the model a run config
describes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from biomedgpt.errors import UserError

if TYPE_CHECKING:
    from biomedgpt.run_config import RunConfig


def build_model(cfg: RunConfig, processor):
    """A fresh model of cfg.model.arch, or the weights of cfg.model.init_from (a checkpoint/model folder)."""
    from biomedgpt.model.configuration import BiomedGPTConfig
    from biomedgpt.model.modeling import BiomedGPTForConditionalGeneration

    if cfg.model.init_from:
        path = Path(cfg.model.init_from)
        check_init_from(path, hashes=False)  # the caller checked the hashes before anything was read
        model = BiomedGPTForConditionalGeneration.from_pretrained(path, use_safetensors=True)
        if model.config.vocab_size != len(processor.tokenizer):
            raise UserError(
                f"model.init_from={path} has vocabulary {model.config.vocab_size}, the tokenizer "
                f"{len(processor.tokenizer)}: start from a model folder made with this tokenizer"
            )
        return model
    config = BiomedGPTConfig.from_arch(
        cfg.model.arch,
        vocab_size=len(processor.tokenizer),
        image_size=cfg.model.image_size,
        dropout=cfg.model.dropout,
        attention_dropout=cfg.model.attention_dropout,
        encoder_drop_path_rate=cfg.model.drop_path_rate,
        decoder_drop_path_rate=cfg.model.drop_path_rate,
        max_source_positions=cfg.model.max_source_positions,
        max_target_positions=cfg.model.max_target_positions,
    )
    model = BiomedGPTForConditionalGeneration(config)
    if cfg.model.location_init == "sinusoidal":
        init_location_embeddings(model, processor.tokenizer.layout)
    return model


def init_location_embeddings(model, layout) -> None:
    """Set the shared embedding's `<bin_0>`..`<bin_N-1>` rows to sinusoids of the bin's index, at the scale of the
    random rows (std `init_std`). Frequencies run from one radian per bin to about one radian over the whole
    range, so neighbouring bins start close and far ones apart; the output layer is tied to these rows, so from the first
    step a gradient towards one location also moves its neighbours. Random rows make 1,000 unrelated classes of a
    coordinate, which a small model on a small corpus does not learn to place."""
    import torch

    first, last = layout.bin_range
    count, dim = last - first + 1, model.config.d_model
    index = torch.arange(count, dtype=torch.float32)[:, None]
    rates = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(count) / dim))[None, :]
    table = torch.zeros(count, dim)
    table[:, 0::2] = torch.sin(index * rates)
    table[:, 1::2] = torch.cos(index * rates)[:, : dim // 2]
    with torch.no_grad():
        model.get_input_embeddings().weight[first : last + 1] = table * model.config.init_std * math.sqrt(2.0)


def check_init_from(path: Path, *, hashes: bool = True) -> None:
    """`model.init_from` must be a model folder with safetensors weights; with `hashes`, the files training reads
    from it are checked against its manifest.json where it has one (checkpoints, imports). `UserError` (one line)
    otherwise."""
    from biomedgpt.hashing import verify_files

    where = f"model.init_from={path}"
    if not path.is_dir():
        raise UserError(
            f"{where} does not exist: give a model or checkpoint folder (e.g. runs/NAME/checkpoints/step-...)"
        )
    if not (path / "config.json").is_file():
        latest = path / "checkpoints" / "latest"
        hint = (
            f" (a run folder: use its checkpoint, {path / 'checkpoints' / latest.read_text().strip()})"
            if latest.is_file()
            else ""
        )
        raise UserError(f"{where} is not a model folder (no config.json){hint}")
    if not (path / "model.safetensors").is_file() and not (path / "model.safetensors.index.json").is_file():
        raise UserError(
            f"{where} has no model.safetensors (only safetensors weights are loaded): give a checkpoint folder "
            "written by training or `biomedgpt import`, or convert the weights to safetensors"
        )
    if not hashes:
        return
    names = ["config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json"]
    names += ["tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"]
    verify_files(
        path, names, require_manifest=False, what=where, hint=f"restore {path} or start from another folder"
    )


def build_processor(cfg: RunConfig):
    """The tokenizer and image processor of cfg.model.init_from when it has them, else the default ones."""
    from biomedgpt.model.processing import BiomedGPTProcessor

    if cfg.model.init_from and (Path(cfg.model.init_from) / "tokenizer.json").is_file():
        return BiomedGPTProcessor.from_pretrained(cfg.model.init_from)
    return BiomedGPTProcessor.default(image_size=cfg.model.image_size)
