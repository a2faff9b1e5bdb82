"""Helpers shared by the benchmark scripts (imported as `_common`: run the scripts as `python benchmarks/X.py`).

- `timed` / `per_step_ms`: median wall time after a warm-up, and ms per decoding step as
  (time for N tokens - time for 1 token) / (N - 1), which removes per-call set-up.
- `bart_peer`: transformers' `BartForConditionalGeneration` with the dimensions of one of our configs (the
  peer of the README's Speed section).
- `machine_info`: the CPU model, core counts and library versions, printed with every result.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any


def timed(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds of `repeats` calls of `fn`, after one untimed warm-up call."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def per_step_ms(run: Callable[[int], Callable[[], Any]], new_tokens: int, repeats: int) -> float:
    """ms per decoding step; `run(n)` returns a callable that decodes exactly n tokens."""
    if new_tokens < 2:
        raise ValueError(f"new_tokens must be >= 2 to time steps, got {new_tokens}")
    full = timed(run(new_tokens), repeats)
    one = timed(run(1), repeats)
    return 1000 * (full - one) / (new_tokens - 1)


def bart_peer(config):
    """`BartForConditionalGeneration` (eval, random weights, sdpa) with `config`'s d_model, layers, heads, FFN
    and vocabulary; `config` is a `BiomedGPTConfig`."""
    from transformers import BartConfig, BartForConditionalGeneration

    peer_cfg = BartConfig(
        vocab_size=config.vocab_size,
        d_model=config.d_model,
        encoder_layers=config.encoder_layers,
        decoder_layers=config.decoder_layers,
        encoder_attention_heads=config.encoder_attention_heads,
        decoder_attention_heads=config.decoder_attention_heads,
        encoder_ffn_dim=config.encoder_ffn_dim,
        decoder_ffn_dim=config.decoder_ffn_dim,
        max_position_embeddings=1024,
        dropout=0.0,
        attn_implementation="sdpa",
    )
    return BartForConditionalGeneration(peer_cfg).eval()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(packages: tuple[str, ...] = ("torch", "transformers", "onnxruntime")) -> dict[str, Any]:
    """CPU model, logical CPUs (all / usable by this process), load average and package versions."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in packages:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "versions": versions,
    }
