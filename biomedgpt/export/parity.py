"""The parity check run after every export: the ONNX graphs against the PyTorch model they came from.

At two image sizes and two batch sizes (prompts of different lengths, so padding is exercised): the encoder
outputs, then the decoder's logits over a teacher-forced continuation through the KV cache, must be within
`tolerance` (max abs difference, fp32); greedy decoding through `OrtEngine` must give the same tokens as the
PyTorch loop. Raises `ParityError` naming the case that failed; returns the measured differences.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


class ParityError(RuntimeError):
    pass


def check_parity(
    model, export_dir: Path, *, tolerance: float = 1e-4, steps: int = 6, seed: int = 0
) -> dict[str, Any]:
    import torch

    from biomedgpt.model.decode_spec import DecodeSpec
    from biomedgpt.model.generation import generate
    from biomedgpt.model.graphs import EncoderGraph
    from biomedgpt.serve.ort_engine import OrtDecoderStep, OrtEngine

    engine = OrtEngine(export_dir, verify=False)  # the folder being written: no manifest.json yet
    encoder = EncoderGraph(model).eval()
    rng = np.random.default_rng(seed)
    size = model.config.image_size
    text_ids = engine.tokenizer.layout.text_range
    cases = []
    for batch, side in ((1, size), (3, size // 2 if size >= 64 else size * 2)):
        lengths = [7, 4, 9][:batch]
        input_ids = np.full((batch, max(lengths)), engine.special_ids.pad, dtype=np.int64)
        attention_mask = np.zeros_like(input_ids)
        for i, n in enumerate(lengths):
            input_ids[i, :n] = [
                engine.special_ids.bos,
                *rng.integers(*text_ids, size=n - 2),
                engine.special_ids.eos,
            ]
            attention_mask[i, :n] = 1
        pixels = rng.uniform(-1, 1, size=(batch, 3, side, side)).astype(np.float32)
        patch_masks = np.arange(batch) != 1  # the second sample of a batch is text-only (OFA's patch_masks)
        targets = rng.integers(*text_ids, size=(batch, steps))
        targets[:, 0] = engine.special_ids.decoder_start
        case: dict[str, Any] = {"batch": batch, "image_size": side}
        with torch.no_grad():
            ref_enc = [
                t.numpy()
                for t in encoder(
                    *(torch.from_numpy(a) for a in (input_ids, attention_mask, pixels, patch_masks))
                )
            ]
            ort_enc = engine.encode(input_ids, attention_mask, pixels, patch_masks)
            case["encoder_max_abs_diff"] = max(_diff(r, o) for r, o in zip(ref_enc, ort_enc))
            full = model(
                input_ids=torch.from_numpy(input_ids),
                attention_mask=torch.from_numpy(attention_mask),
                patch_images=torch.from_numpy(pixels),
                patch_masks=torch.from_numpy(patch_masks),
                decoder_input_ids=torch.from_numpy(targets),
            ).logits.numpy()  # (B, steps, V): the uncached forward pass
        step = OrtDecoderStep(engine, ort_enc[0], ort_enc[1], ort_enc[2:])
        case["logits_max_abs_diff"] = max(
            _diff(full[:, t], step.step(targets[:, t : t + 1])) for t in range(steps)
        )
        options = DecodeSpec(max_new_tokens=12)
        ref = generate(
            model,
            input_ids=torch.from_numpy(input_ids),
            attention_mask=torch.from_numpy(attention_mask),
            patch_images=torch.from_numpy(pixels),
            options=options,
        ).sequences.numpy()
        got, _ = engine._decode(input_ids, attention_mask, pixels, DecodeSpec(max_new_tokens=12))
        case["greedy_identical"] = bool(ref.shape == got.shape and (ref == got).all())
        cases.append(case)
        worst = max(case["encoder_max_abs_diff"], case["logits_max_abs_diff"])
        if not worst <= tolerance:
            raise ParityError(f"ONNX vs PyTorch differ by {worst:.3g} > {tolerance:g} at {case}")
        if not case["greedy_identical"]:
            raise ParityError(
                f"greedy outputs differ at batch {batch}, image {side}px: torch {ref.tolist()} vs onnx {got.tolist()}"
            )
    return {"tolerance": tolerance, "cases": cases}


def _diff(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Max abs difference, counting matching infinities (padding biases) as equal."""
    reference, candidate = np.asarray(reference, dtype=np.float64), np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape:
        raise ParityError(f"shape {candidate.shape} != reference {reference.shape}")
    same_inf = np.isinf(reference) & (reference == candidate)
    with np.errstate(invalid="ignore"):  # inf - inf where both are the same infinity: masked out below
        return float(np.abs(np.where(same_inf, 0.0, reference - candidate)).max())
