"""Training throughput: our model vs transformers' BartForConditionalGeneration of the same dimensions, same run.

One training step = forward + token cross-entropy + backward + AdamW step, on random data: our model gets
images of `--image-size` px ((size/16)^2 image tokens) plus `--prompt-len` prompt tokens; BART gets the same number
of source tokens. Both decode `--target-len` target tokens. Prints samples/s, tokens/s and, on a GPU, MFU (model
FLOPs per step counted once with torch.utils.flop_counter, divided by the device's dense bf16 peak) for both, and
the ratio ours/peer. On a GPU: bf16 autocast, fused AdamW, SDPA and optionally torch.compile (--compile).

    python benchmarks/bench_train.py --arch small --batch 8                          # CPU: the ratio is the figure
    python benchmarks/bench_train.py --arch base --image-size 384 --prompt-len 40 --target-len 64 --batch 64 --compile
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from _common import bart_peer

# Dense bf16 tensor-core peaks (FLOP/s) of the GPUs this project is measured on.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}


def device_peak() -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((peak for key, peak in PEAK_BF16.items() if key in name), None)


def build(arch: str, vocab_size: int, device: str):
    from biomedgpt.model.configuration import BiomedGPTConfig
    from biomedgpt.model.modeling import BiomedGPTForConditionalGeneration

    torch.manual_seed(0)
    cfg = BiomedGPTConfig.from_arch(arch, vocab_size=vocab_size, dropout=0.0)
    ours = BiomedGPTForConditionalGeneration(cfg).to(device)
    peer = bart_peer(cfg).to(device)  # train mode is set where it is timed
    return ours, peer


def make_step(model, inputs: dict, labels: torch.Tensor, *, device: str, compile_model: bool):
    fused = device == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused or None)
    forward = torch.compile(model) if compile_model else model
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda")

    def step() -> None:
        with autocast:
            logits = forward(**inputs, labels=labels).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def flops_per_step(model, inputs: dict, labels: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        logits = model(**inputs, labels=labels).logits
        F.cross_entropy(logits.float().flatten(0, 1), labels.flatten()).backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def timed(step, *, warmup: int, steps: int, device: str) -> float:
    for _ in range(warmup):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", default="small")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--prompt-len", type=int, default=40)
    parser.add_argument("--target-len", type=int, default=64)
    parser.add_argument("--vocab-size", type=int, default=32768)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ours, peer = build(args.arch, args.vocab_size, device)
    b, vocab = args.batch, args.vocab_size
    source_len = (args.image_size // 16) ** 2 + args.prompt_len
    labels = torch.randint(10, vocab - 10, (b, args.target_len), device=device)
    ours_inputs = {
        "input_ids": torch.randint(10, vocab - 10, (b, args.prompt_len), device=device),
        "patch_images": torch.randn(b, 3, args.image_size, args.image_size, device=device),
    }
    peer_inputs = {"input_ids": torch.randint(10, vocab - 10, (b, source_len), device=device)}
    peak = device_peak()
    rows = {}
    for name, model, inputs in (("ours", ours, ours_inputs), ("hf_bart", peer, peer_inputs)):
        model.train()
        flops = flops_per_step(model, inputs, labels)
        seconds = timed(
            make_step(model, inputs, labels, device=device, compile_model=args.compile),
            warmup=args.warmup,
            steps=args.steps,
            device=device,
        )
        row = {
            "samples_per_s": b / seconds,
            "tokens_per_s": b * (source_len + args.target_len) / seconds,
            "tflop_per_step": flops / 1e12,
        }
        if peak:
            row["mfu"] = flops / seconds / peak
        rows[name] = row
    device_name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(
        json.dumps(
            {
                "device": device_name,
                "arch": args.arch,
                "batch": b,
                "source_tokens": source_len,
                "target_tokens": args.target_len,
                "compile": args.compile,
                **{f"{n}_{k}": round(v, 4) for n, r in rows.items() for k, v in r.items()},
                "ratio_ours_over_peer_samples_per_s": round(
                    rows["ours"]["samples_per_s"] / rows["hf_bart"]["samples_per_s"], 3
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
