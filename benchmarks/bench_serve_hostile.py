"""Load test of `biomedgpt serve` under hostile traffic (issue 16): valid requests mixed with large-decode images
and garbage, from 32 clients for a bounded time. What it shows: the valid requests keep being answered, no input
gets a 5xx other than an explicit 503 (busy, with Retry-After), and memory comes back down after the burst.

A real `biomedgpt serve` subprocess (ONNX Runtime, fp32, default limits: `ServeConfig`'s defaults) on 127.0.0.1
serves an export of a random `--arch` model (`bench_serve.prepare_model`, cached under .cache/bench_serve/).
Two phases of `--duration` s each, `--clients` asyncio clients (httpx, one connection each, in this process):

1. clean: every client sends the valid request only (`POST /v1/tasks/vqa`, a 512x512 grayscale PNG as base64
   JSON, `max_new_tokens` `--new-tokens`): the reference latency;
2. hostile: each client draws each request from the mix (`--mix`, default 50% valid, 20% large-decode, 30%
   garbage). Large-decode: the issue's 0.2 MB PNG that decodes to 6300x6300 RGBA, or a 7000x5000 JPEG.
   Garbage: random bytes under an image content type, a truncated PNG, a QOI file, invalid base64, broken
   JSON, a multipart body cut before its boundary, a 100,000-character chat text.

Reported per phase: requests and HTTP statuses by kind (transport errors by exception name), p50/p99 of the
valid requests that got 200, and the server's VmRSS (sampled every 0.25 s): at start, peak, and end, where end
is read after `--settle` s without traffic. Exit status 1 if any response was a 5xx other than 503 or if a
valid request failed in the clean phase.

    python benchmarks/bench_serve_hostile.py                  # tiny model at 256 px, 32 clients, 2 x 30 s
    python benchmarks/bench_serve_hostile.py --duration 10    # shorter
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import io
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import machine_info
from bench_serve import RssSampler, Server, _rss_kb, prepare_model, progress, request_image

QUESTION = "what abnormality is seen in the left lung?"


# --------------------------------------------------------------------------------------------------------
# Requests: (kind, method, path, httpx kwargs)
# --------------------------------------------------------------------------------------------------------
def _encode(image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def build_requests(new_tokens: int) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Request templates per kind: "valid", "large" (large decode), "garbage"."""
    from PIL import Image

    def task_json(image: bytes, **extra: Any) -> tuple[str, dict[str, Any]]:
        body = {"image": base64.b64encode(image).decode(), "question": QUESTION, "max_new_tokens": new_tokens}
        return "/v1/tasks/vqa", {"json": {**body, "closed_set": False, **extra}}

    valid_png = _encode(request_image(512), "PNG")
    rgba_bomb = _encode(Image.new("RGBA", (6300, 6300), (10, 20, 30, 255)), "PNG")  # ~0.2 MB -> 160 MB
    big_jpeg = _encode(Image.new("RGB", (7000, 5000), (90, 90, 90)), "JPEG", quality=80)
    rng = np.random.default_rng(0)
    qoi = _encode(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), "QOI")
    form = _multipart_cut(valid_png)
    chat = {"model": "bench-model", "messages": [{"role": "user", "content": "x" * 100_000}]}
    return {
        "valid": [task_json(valid_png)],
        "large": [task_json(rgba_bomb), task_json(big_jpeg)],
        "garbage": [
            ("/v1/tasks/vqa", {"files": {"image": ("a.png", bytes(rng.bytes(4096)), "image/png")},
                               "data": {"question": QUESTION}}),
            ("/v1/tasks/vqa", {"files": {"image": ("a.tif", bytes(rng.bytes(4096)), "image/tiff")},
                               "data": {"question": QUESTION}}),
            task_json(valid_png[: len(valid_png) // 2]),
            task_json(qoi[: len(qoi) // 2]),
            ("/v1/tasks/vqa", {"json": {"image": "not base64!!", "question": QUESTION}}),
            ("/v1/tasks/vqa", {"content": b'{"image": "', "headers": {"content-type": "application/json"}}),
            ("/v1/tasks/vqa", form),
            ("/v1/chat/completions", {"json": chat}),
        ],
    }  # fmt: skip


def _multipart_cut(image: bytes) -> dict[str, Any]:
    import httpx

    request = httpx.Request("POST", "http://x/", files={"image": ("a.png", image, "image/png")})
    body = request.read()
    return {
        "content": body[: body.rindex(b"\r\n--")],
        "headers": {"content-type": request.headers["content-type"]},
    }


# --------------------------------------------------------------------------------------------------------
# Load
# --------------------------------------------------------------------------------------------------------
async def run_phase(
    url: str, requests: dict[str, list], mix: dict[str, float], *, clients: int, duration: float, seed: int
) -> dict[str, Any]:
    """`clients` workers send requests drawn from `mix` back to back for `duration` s."""
    import httpx

    statuses: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    valid_ms: list[float] = []
    kinds, weights = list(mix), list(mix.values())

    async def worker(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits, trust_env=False) as client:
            while loop.time() < end:
                kind = rng.choices(kinds, weights)[0]
                path, kwargs = rng.choice(requests[kind])
                started = time.perf_counter()
                try:
                    response = await client.post(path, **kwargs)
                except httpx.HTTPError as err:
                    statuses[kind][type(err).__name__] += 1
                    continue
                statuses[kind][str(response.status_code)] += 1
                if kind == "valid" and response.status_code == 200:
                    valid_ms.append((time.perf_counter() - started) * 1000)

    loop = asyncio.get_running_loop()
    end = loop.time() + duration
    await asyncio.gather(*(worker(i) for i in range(clients)))
    ms = np.asarray(valid_ms) if valid_ms else np.asarray([float("nan")])
    return {
        "statuses": {kind: dict(sorted(counts.items())) for kind, counts in sorted(statuses.items())},
        "requests": sum(sum(c.values()) for c in statuses.values()),
        "valid_ok": len(valid_ms),
        "valid_p50_ms": round(float(np.percentile(ms, 50)), 1),
        "valid_p99_ms": round(float(np.percentile(ms, 99)), 1),
    }


def measure(server: Server, sampler: RssSampler, phase, settle: float) -> dict[str, Any]:
    window = len(sampler.samples)
    result = asyncio.run(phase)
    time.sleep(settle)
    rss = sampler.window(window)
    rss["end"] = round((_rss_kb(server.proc.pid) or 0) / 1024, 1)  # after the settle time
    return {**result, "rss_mb": rss}


def server_errors(phase: dict[str, Any]) -> int:
    """5xx answers other than 503 (busy, with Retry-After)."""
    return sum(
        n for counts in phase["statuses"].values() for s, n in counts.items() if s[:1] == "5" and s != "503"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", default="tiny", help="model size served (random weights; default tiny)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per phase")
    parser.add_argument("--settle", type=float, default=5.0, help="idle seconds before the end RSS is read")
    parser.add_argument("--new-tokens", type=int, default=8, help="max_new_tokens of the valid requests")
    parser.add_argument("--threads", type=int, default=2, help="the server's num_threads")
    parser.add_argument("--mix", default="valid=0.5,large=0.2,garbage=0.3", help="request kinds and weights")
    parser.add_argument(
        "--cache-dir", type=Path, default=Path(__file__).resolve().parent.parent / ".cache" / "bench_serve"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    mix = {k: float(v) for k, v in (item.split("=") for item in args.mix.split(","))}
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    info = machine_info(("onnxruntime", "pillow", "httpx", "uvicorn"))
    print(
        f"# {info['cpu']}, {info['logical_cpus']} logical CPUs, load average {info['load_average']} at start"
    )
    requests = build_requests(args.new_tokens)
    results: dict[str, Any] = {"machine": info, "settings": {k: str(v) for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory(prefix="bench_hostile.") as scratch:
        _, export_dir, _ = prepare_model(args.arch, args.image_size, args.cache_dir, Path(scratch))
        overrides = {"max_batch_size": 8, "max_wait_ms": 5}
        with Server(
            export_dir,
            Path(scratch) / "serve.log",
            threads=args.threads,
            precision="fp32",
            overrides=overrides,
        ) as srv:
            assert srv.proc is not None
            progress(f"server pid {srv.proc.pid} ready in {srv.startup_s:.1f} s on {srv.url}")
            results["command"] = " ".join(srv.command)
            with RssSampler(srv.proc.pid) as sampler:
                results["rss_ready_mb"] = round((_rss_kb(srv.proc.pid) or 0) / 1024, 1)
                for name, phase_mix, seed in (("clean", {"valid": 1.0}, 1), ("hostile", mix, 2)):
                    progress(f"{name}: {args.clients} clients, {args.duration:g} s, mix {phase_mix} ...")
                    phase = run_phase(
                        srv.url, requests, phase_mix, clients=args.clients, duration=args.duration, seed=seed
                    )
                    results[name] = measure(srv, sampler, phase, args.settle)
                    print_phase(name, results[name])
            results["server_log_tail"] = srv._tail().splitlines()[-5:]
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    failures = server_errors(results["clean"]) + server_errors(results["hostile"])
    clean_failed = results["clean"]["requests"] - results["clean"]["valid_ok"]
    print(f"# 5xx other than 503: {failures}; failed valid requests in the clean phase: {clean_failed}")
    return 1 if failures or clean_failed else 0


def print_phase(name: str, phase: dict[str, Any]) -> None:
    rss = phase["rss_mb"]
    print(
        f"{name}: {phase['requests']} requests; valid 200: {phase['valid_ok']}, p50 {phase['valid_p50_ms']:.0f} ms,"
        f" p99 {phase['valid_p99_ms']:.0f} ms; RSS MB start {rss['start']}, peak {rss['peak']}, end {rss['end']}"
    )
    for kind, counts in phase["statuses"].items():
        print(f"  {kind:<8} " + ", ".join(f"{status}: {n}" for status, n in counts.items()))


if __name__ == "__main__":
    sys.exit(main())
