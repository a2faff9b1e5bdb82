"""Both of `torch.onnx.export`'s exporters (`biomedgpt.export.onnx_export.EXPORTERS`) write graphs that ONNX
Runtime answers alike, on shapes other than the traced ones: the TorchScript exporter serves by default, and
torch.export stays ready for the torch that drops it."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _run(path, feeds):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def test_dynamo_and_torchscript_graphs_agree_on_new_shapes(exported_model_dir, served_model_dir, tmp_path):
    import torch

    from biomedgpt.export.onnx_export import export_graphs
    from biomedgpt.model.graphs import past_names
    from biomedgpt.model.processing import load_pretrained

    model, _ = load_pretrained(served_model_dir)
    model = model.float().eval()
    with torch.no_grad():
        export_graphs(model, tmp_path, exporter="dynamo")
    config = model.config
    rng = np.random.default_rng(0)
    batch, text, side = 3, 9, config.image_size + 32  # traced: batch 2, 5 tokens, image_size pixels
    attention_mask = np.ones((batch, text), np.int64)
    attention_mask[1, 6:] = 0
    encoder_feeds = {
        "input_ids": rng.integers(4, 200, (batch, text)),
        "attention_mask": attention_mask,
        "patch_images": rng.standard_normal((batch, 3, side, side)).astype(np.float32),
        "patch_masks": np.array([True, False, True]),
    }
    encoded = {}
    for name, folder in (("torchscript", exported_model_dir), ("dynamo", tmp_path)):
        encoded[name] = _run(folder / "encoder.onnx", encoder_feeds)
    for key, want in encoded["dynamo"].items():
        got = encoded["torchscript"][key]
        assert got.shape == want.shape, key
        assert np.isnan(got).tolist() == np.isnan(want).tolist(), key
        np.testing.assert_allclose(np.nan_to_num(got), np.nan_to_num(want), rtol=1e-4, atol=1e-4, err_msg=key)

    enc = encoded["torchscript"]
    heads = config.decoder_attention_heads
    head_dim, past = config.d_model // heads, 4  # traced: 3 cached positions
    decoder_feeds = {
        "input_ids": rng.integers(4, 200, (batch, 1)),
        "cache_lengths": np.array([4, 2, 0]),
        "encoder_attention_bias": enc["encoder_attention_bias"],
        "cross_position_keys": enc["cross_position_keys"],
    }
    names = past_names(config.decoder_layers)
    for i in range(config.decoder_layers):
        for j in range(2):
            decoder_feeds[names[4 * i + j]] = rng.standard_normal((batch, heads, past, head_dim)).astype(
                np.float32
            )
        decoder_feeds[names[4 * i + 2]] = enc[f"present.{i}.encoder.key"]
        decoder_feeds[names[4 * i + 3]] = enc[f"present.{i}.encoder.value"]
    decoded = {
        name: _run(folder / "decoder.onnx", decoder_feeds)
        for name, folder in (("torchscript", exported_model_dir), ("dynamo", tmp_path))
    }
    assert decoded["torchscript"].keys() == decoded["dynamo"].keys()
    for key, want in decoded["dynamo"].items():
        np.testing.assert_allclose(decoded["torchscript"][key], want, rtol=1e-4, atol=1e-4, err_msg=key)
    assert decoded["dynamo"]["logits"].shape == (batch, config.vocab_size)
