"""GPU tests (marker `gpu`): they run where CUDA is present and skip elsewhere, saying so (tests/conftest.py).

- A bf16 training step of the model on CUDA: under bf16 autocast the loss is finite, within bf16's precision
  of the fp32 loss on the same batch, and goes down over a few AdamW steps on that batch.
- The same through the trainer: `biomedgpt finetune` with `dist.use_gpu=true train.precision=bf16-mixed`
  logs a finite train loss at every step and writes a checkpoint that loads.
- ONNX Runtime's CUDAExecutionProvider gives the CPU provider's outputs on the exported graphs (encoder and
  decoder steps through the KV cache), within a tolerance relative to their scale (TF32 matmuls are allowed);
  skipped, saying so, where this onnxruntime has no CUDA provider (the `serve` extra installs the CPU build).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import lively_model
from tests.numerics import assert_close_to_scale

pytestmark = pytest.mark.gpu

DEVICE = "cuda"
ORT_CUDA = "CUDAExecutionProvider"
REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "configs" / "quickstart.yaml"


def _batch(device, *, batch: int = 4, vocab: int = 300, image_size: int = 64, seed: int = 1):
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (batch, 9), generator=g)
    ids[1, 6:] = 1  # a padded prompt
    ids[:, 0] = 0
    images = torch.randn(batch, 3, image_size, image_size, generator=g)
    labels = torch.randint(4, vocab, (batch, 8), generator=g)
    labels[:, -1] = 2  # eos
    labels[0, -3:] = -100  # ignored positions
    return ids.to(device), images.to(device), labels.to(device)


def test_bf16_training_steps_on_cuda():
    import torch

    torch.manual_seed(0)
    model = lively_model("tiny", init_std=0.02, dropout=0.0).to(DEVICE).train()
    ids, images, labels = _batch(DEVICE)
    inputs = {"attention_mask": ids.ne(1), "patch_images": images, "labels": labels}
    with torch.no_grad():
        fp32 = model(ids, **inputs).loss.float().item()
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            bf16 = model(ids, **inputs).loss.float().item()
    assert math.isfinite(fp32) and math.isfinite(bf16)
    assert bf16 == pytest.approx(fp32, rel=2e-2), "bf16 autocast loss vs fp32 on the same batch"

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            loss = model(ids, **inputs).loss
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), "non-finite gradient under bf16"
        optimizer.step()
        losses.append(loss.float().item())
    assert all(math.isfinite(x) for x in losses), losses
    assert losses[-1] < losses[0], f"the loss did not go down over {len(losses)} bf16 steps: {losses}"


def test_finetune_bf16_mixed_on_cuda(tmp_path):
    from biomedgpt import cli
    from biomedgpt.model import load_pretrained
    from biomedgpt.train.callbacks import read_metrics_csv
    from biomedgpt.train.run_folders import latest_checkpoint

    shards, run = tmp_path / "shards", tmp_path / "run"
    shard = ["shard", "--synthetic", "40", "--out", str(shards), "--image-size", "64", "--no-progress"]
    assert cli.main(shard) == 0
    argv = [
        "finetune",
        "-c",
        str(QUICKSTART),
        f"data.shards=[{shards}]",
        f"train.output_dir={run}",
        "train.max_steps=4",
        "train.val_every=0",
        "train.ckpt_every=0",
        "train.precision=bf16-mixed",
        f"dist.use_gpu={'true' if DEVICE == 'cuda' else 'false'}",
    ]
    assert cli.main(argv) == 0
    losses = dict(read_metrics_csv(run / "logs" / "metrics.csv")["train/loss"])
    assert sorted(losses) == list(range(4)) and all(math.isfinite(x) for x in losses.values()), losses
    model, processor = load_pretrained(latest_checkpoint(run / "checkpoints"))
    assert model.config.vocab_size == len(processor.tokenizer)


def _cuda_session(path: Path, providers: list):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=providers)


def test_onnx_runtime_cuda_provider_matches_the_cpu_provider(exported_model_dir):
    import onnxruntime as ort

    from biomedgpt.serve.ort_engine import OrtDecoderStep, OrtEngine

    if ORT_CUDA not in ort.get_available_providers():
        pytest.skip(
            f"gpu test: this onnxruntime {ort.__version__} has no {ORT_CUDA} "
            f"(providers: {ort.get_available_providers()}); install onnxruntime-gpu to run it"
        )
    cpu = OrtEngine(exported_model_dir)
    gpu = OrtEngine(exported_model_dir)
    providers = [ORT_CUDA, "CPUExecutionProvider"]
    gpu.encoder = _cuda_session(exported_model_dir / "encoder.onnx", providers)
    gpu.decoder = _cuda_session(exported_model_dir / "decoder.onnx", providers)
    assert gpu.encoder.get_providers()[0] == ORT_CUDA and gpu.decoder.get_providers()[0] == ORT_CUDA

    rng = np.random.default_rng(0)
    special, (lo, hi) = cpu.special_ids, cpu.tokenizer.layout.text_range
    lengths = [7, 4, 9]
    input_ids = np.full((3, max(lengths)), special.pad, dtype=np.int64)
    attention_mask = np.zeros_like(input_ids)
    for i, n in enumerate(lengths):
        input_ids[i, :n] = [special.bos, *rng.integers(lo, hi, size=n - 2), special.eos]
        attention_mask[i, :n] = 1
    pixels = rng.uniform(-1, 1, size=(3, 3, 64, 64)).astype(np.float32)
    patch_masks = np.array([True, False, True])  # the second row is text-only
    targets = rng.integers(lo, hi, size=(3, 6))
    targets[:, 0] = special.decoder_start

    encoded = {}
    for name, engine in (("cpu", cpu), ("cuda", gpu)):
        encoded[name] = engine.encode(input_ids, attention_mask, pixels, patch_masks)
    for k, (want, got) in enumerate(zip(encoded["cpu"], encoded["cuda"])):
        assert_close_to_scale(got, want, rel=1e-2, what=f"encoder output {k}")
    steps = {
        name: OrtDecoderStep(engine, enc[0], enc[1], enc[2:])
        for (name, enc), engine in zip(encoded.items(), (cpu, gpu))
    }
    for t in range(targets.shape[1]):
        want = steps["cpu"].step(targets[:, t : t + 1])
        got = steps["cuda"].step(targets[:, t : t + 1])
        assert_close_to_scale(got, want, rel=1e-2, what=f"decoder logits at step {t}")
