"""Shared fixtures: small BiomedGPT models whose outputs actually depend on their inputs."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def lively_model(
    arch: str = "tiny",
    *,
    vocab_size: int = 300,
    image_size: int = 64,
    seed: int = 0,
    init_std: float = 0.3,
    **overrides,
):
    """A randomly initialized model with larger weights and non-zero relative-position tables.

    Freshly initialized models give near-constant outputs and zero relative biases, which would let bugs in
    caching, masking or position handling pass unnoticed; this one does not.
    """
    import torch

    from biomedgpt.model.configuration import BiomedGPTConfig
    from biomedgpt.model.modeling import BiomedGPTForConditionalGeneration

    torch.manual_seed(seed)
    config = BiomedGPTConfig.from_arch(
        arch, vocab_size=vocab_size, image_size=image_size, init_std=init_std, **overrides
    )
    model = BiomedGPTForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "rel_pos_table" in name:
                param.normal_(0.0, 0.5)
            elif "c_attn" in name:
                param.uniform_(0.5, 1.5)
        model.model.shared.weight[config.eos_token_id] *= 2.5  # makes eos a frequent, varied outcome
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="session")
def tiny_model():
    return lively_model("tiny")


def write_served_model(directory, *, seed: int = 0):
    """A model folder the serving engines load: a lively tiny model with the real tokenizer (32,768 ids), its
    processor, `serving.json` and `answers.json` (closed-set answers, as `biomedgpt export` writes them)."""
    import json
    from pathlib import Path

    from biomedgpt.model.image_processing import BiomedGPTImageProcessor, ImageProcessorConfig
    from biomedgpt.model.processing import BiomedGPTProcessor
    from biomedgpt.tokenization.unified import BiomedGPTTokenizer

    directory = Path(directory)
    model = lively_model("tiny", vocab_size=32768, image_size=64, seed=seed)
    model.save_pretrained(directory)
    BiomedGPTProcessor(
        BiomedGPTTokenizer.load_default(), BiomedGPTImageProcessor(ImageProcessorConfig(image_size=64))
    ).save_pretrained(directory)
    (directory / "serving.json").write_text(
        json.dumps({"model_id": "biomedgpt-test", "generation": {"max_new_tokens": 16}})
    )
    (directory / "answers.json").write_text(
        json.dumps({"vqa": ["yes", "no", "left lung"], "classification": ["normal", "pneumonia", "effusion"]})
    )
    return directory


@pytest.fixture(scope="session")
def served_model_dir(tmp_path_factory):
    """A torch model folder for `biomedgpt serve --engine torch` and the engine tests."""
    return write_served_model(tmp_path_factory.mktemp("served-model"))


@pytest.fixture(scope="session")
def exported_model_dir(served_model_dir, tmp_path_factory):
    """`served_model_dir` exported to ONNX (fp32): the folder `biomedgpt serve` loads with ONNX Runtime."""
    from biomedgpt.export.onnx_export import export_checkpoint

    out = tmp_path_factory.mktemp("export") / "model-onnx"
    export_checkpoint(served_model_dir, out)
    return out
