"""Serving under a mixed load: continuous (iteration-level) batching against request-level batching and
batch-1 serving, all in one run on the same export and the same machine (README, "Speed").

Three `biomedgpt serve` subprocesses (ONNX Runtime, `--threads` intra-op threads, `--precision` graphs: fp32, or
int8 with the static int8 ResNet stem) over one export of the `--size` model with random weights (eos never
wins, so every request decodes exactly what it asks):

- continuous: `batching=continuous`, `max_running=--clients`;
- request: `batching=request`, `max_batch_size=--clients`, `max_wait_ms=10` (the previous default path);
- batch1: `batching=request`, `max_batch_size=1`.

Against each, asyncio clients in this process (one keep-alive connection each) post `POST /v1/tasks/caption`
back to back for `--duration` s:
- mixed: `--clients` clients, half asking `--short` new tokens and half `--long`;
- short only: the same number of clients, all asking `--short` (the short requests' latency without the long).
Reported per server: requests/s and generated tokens/s, p50/p99 of the short and of the long requests, errors
(must be 0), and the server's RSS. Then, against the continuous server only:
- time to first token: `--ttft-requests` streamed chat completions (`stream=true`), timed to the first content
  delta, while the mixed load runs;
- memory over `--rss-requests` requests (short, `--clients` clients): RSS after the warm-up, peak and end.

    python benchmarks/bench_serve_mixed.py --out mixed.json                 # small, 32 clients, 16/128 tokens
    python benchmarks/bench_serve_mixed.py --precision int8 --out mixed-int8.json  # the int8 graphs
    python benchmarks/bench_serve_mixed.py --size tiny --duration 5 --rss-requests 200   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import machine_info
from bench_serve import REPO, RssSampler, Server, _rss_kb, prepare_model, progress, request_image

GOALS = {"throughput_vs_batch1": 3.0, "throughput_vs_request": 1.5, "short_p50_mixed_over_alone": 2.0}


def _image_b64(size: int = 512) -> str:
    buffer = io.BytesIO()
    request_image(size).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


async def _clients(url: str, image: str, budgets: list[int], *, duration: float | None, count: int | None):
    """One client per entry of `budgets` (its max_new_tokens), posting back to back."""
    import httpx

    done: dict[int, list[float]] = {b: [] for b in set(budgets)}
    tokens: list[int] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=len(budgets), max_keepalive_connections=len(budgets))
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits, trust_env=False) as client:
        loop = asyncio.get_running_loop()
        started = loop.time()
        end = started + (duration or 0)

        async def worker(budget: int) -> None:
            body = {"image": image, "max_new_tokens": budget}
            sent = 0
            while (count is not None and sent < count) or (count is None and loop.time() < end):
                sent += 1
                t0 = time.perf_counter()
                try:
                    response = await client.post("/v1/tasks/caption", json=body)
                except httpx.HTTPError as err:
                    errors.append(f"{type(err).__name__}: {err}")
                    continue
                if response.status_code != 200:
                    errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
                    continue
                done[budget].append(time.perf_counter() - t0)
                tokens.append(response.json()["usage"]["completion_tokens"])

        await asyncio.gather(*(worker(b) for b in budgets))
        elapsed = loop.time() - started
    return done, tokens, errors, elapsed


def _ms(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(np.asarray(values) * 1000, q)), 1) if values else None


def _level(server: Server, sampler: RssSampler, image: str, budgets: list[int], duration: float) -> dict:
    window = len(sampler.samples)
    done, tokens, errors, elapsed = asyncio.run(
        _clients(server.url, image, budgets, duration=duration, count=None)
    )
    requests = sum(len(v) for v in done.values())
    return {
        "clients": len(budgets),
        "budgets": sorted(set(budgets)),
        "requests": requests,
        "errors": len(errors),
        "error_examples": errors[:3],
        "requests_per_s": round(requests / elapsed, 2),
        "tokens_per_s": round(sum(tokens) / elapsed, 1),
        "latency_ms": {str(b): {"p50": _ms(v, 50), "p99": _ms(v, 99), "n": len(v)} for b, v in done.items()},
        "rss_mb": sampler.window(window),
    }


async def _ttft(url: str, image: str, n: int, budget: int) -> list[float]:
    """Time to the first content delta of `n` streamed chat completions, one after another."""
    import httpx

    body = {
        "stream": True,
        "max_tokens": budget,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}},
                    {"type": "text", "text": "describe the image"},
                ],
            }
        ],
    }
    times = []
    async with httpx.AsyncClient(base_url=url, timeout=300, trust_env=False) as client:
        models = (await client.get("/v1/models")).json()["data"]
        body["model"] = next(m["id"] for m in models if m["id"].endswith(":caption"))
        for _ in range(n):
            t0 = time.perf_counter()
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code != 200:
                    raise RuntimeError(f"HTTP {response.status_code}: {(await response.aread())[:300]!r}")
                first = None
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    delta = json.loads(line[6:])["choices"]
                    if first is None and delta and delta[0].get("delta", {}).get("content"):
                        first = time.perf_counter() - t0
                times.append(first if first is not None else float("nan"))
    return times


async def _ttft_under_load(url: str, image: str, budgets: list[int], n: int, short: int, seconds: float):
    load = asyncio.create_task(_clients(url, image, budgets, duration=seconds, count=None))
    await asyncio.sleep(2.0)  # the load is running
    times = await _ttft(url, image, n, short)
    await load
    return times


def run(args, export_dir: Path, work: Path) -> dict[str, Any]:
    image = _image_b64()
    half = args.clients // 2
    mixed = [args.short] * (args.clients - half) + [args.long] * half
    servers = {
        "continuous": {"batching": "continuous", "max_running": args.clients},
        "request": {"batching": "request", "max_batch_size": args.clients, "max_wait_ms": 10},
        "batch1": {"batching": "request", "max_batch_size": 1, "max_wait_ms": 0},
    }
    result: dict[str, Any] = {"servers": {}}
    for label, overrides in servers.items():
        progress(f"{label}: {overrides} ...")
        overrides = {**overrides, "max_queue": 4 * args.clients, "request_timeout_s": 600}
        with Server(
            export_dir,
            work / f"{label}.log",
            threads=args.threads,
            precision=args.precision,
            overrides=overrides,
        ) as srv:
            assert srv.proc is not None
            with RssSampler(srv.proc.pid) as sampler:
                asyncio.run(
                    _clients(srv.url, image, [args.short] * args.clients, duration=args.warmup, count=None)
                )
                row = {
                    "command": " ".join(srv.command),
                    "mixed": _level(srv, sampler, image, mixed, args.duration),
                    "short_only": _level(srv, sampler, image, [args.short] * args.clients, args.duration),
                }
                if label == "continuous":
                    progress("  time to first token (streamed) under the mixed load ...")
                    try:
                        times = asyncio.run(
                            _ttft_under_load(
                                srv.url, image, mixed, args.ttft_requests, args.short, args.duration
                            )
                        )
                        row["ttft_ms"] = {"p50": _ms(times, 50), "p99": _ms(times, 99), "n": len(times)}
                    except RuntimeError as err:  # a server without streaming: say so, keep the other figures
                        row["ttft_ms"] = {"error": str(err)[:300]}
                    progress(f"  memory over {args.rss_requests} requests ...")
                    before = _rss_kb(srv.proc.pid) or 0
                    window = len(sampler.samples)
                    per_client = max(1, args.rss_requests // args.clients)
                    done, _, errors, elapsed = asyncio.run(
                        _clients(srv.url, image, [args.short] * args.clients, duration=None, count=per_client)
                    )
                    row["rss_over_requests"] = {
                        "requests": sum(len(v) for v in done.values()),
                        "errors": len(errors),
                        "seconds": round(elapsed, 1),
                        "before_mb": round(before / 1024, 1),
                        **{f"{k}_mb": v for k, v in sampler.window(window).items() if k != "samples"},
                    }
            result["servers"][label] = row
            m, s = row["mixed"], row["short_only"]
            progress(
                f"  mixed {m['requests_per_s']} req/s {m['tokens_per_s']} tok/s, short p50 "
                f"{m['latency_ms'][str(args.short)]['p50']} ms (alone {s['latency_ms'][str(args.short)]['p50']} ms), "
                f"errors {m['errors'] + s['errors']}"
            )
    cont, req, one = (result["servers"][k]["mixed"] for k in ("continuous", "request", "batch1"))
    short = str(args.short)
    result["ratios"] = {
        "throughput_vs_batch1": round(cont["tokens_per_s"] / one["tokens_per_s"], 2),
        "throughput_vs_request": round(cont["tokens_per_s"] / req["tokens_per_s"], 2),
        # Closed-loop clients: a server that ends short requests sooner is sent more of them, so requests/s and
        # tokens/s can disagree; both are reported.
        "requests_per_s_vs_batch1": round(cont["requests_per_s"] / one["requests_per_s"], 2),
        "requests_per_s_vs_request": round(cont["requests_per_s"] / req["requests_per_s"], 2),
        "short_p50_mixed_over_alone": round(
            cont["latency_ms"][short]["p50"]
            / result["servers"]["continuous"]["short_only"]["latency_ms"][short]["p50"],
            2,
        ),
        "request_short_p50_mixed_over_alone": round(
            req["latency_ms"][short]["p50"]
            / result["servers"]["request"]["short_only"]["latency_ms"][short]["p50"],
            2,
        ),
    }
    result["goals"] = GOALS
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="small", help="model size with random weights (default small)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--short", type=int, default=16, help="new tokens of the short requests")
    parser.add_argument("--long", type=int, default=128, help="new tokens of the long requests")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per load level")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--precision",
        choices=("fp32", "int8"),
        default="fp32",
        help="the graphs every server runs (default fp32)",
    )
    parser.add_argument("--ttft-requests", type=int, default=10)
    parser.add_argument("--rss-requests", type=int, default=2000)
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".cache" / "bench_serve")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-mixed-") as tmp:
        work = Path(tmp)
        _, export_dir, cached = prepare_model(args.size, args.image_size, args.cache_dir, work)
        progress(f"export {'reused from' if cached else 'written to'} {export_dir}")
        result = run(args, export_dir, work)
    result["machine"] = machine_info()
    result["settings"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    print(json.dumps(result["ratios"], indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        progress(f"wrote {args.out}")
    errors = sum(row[k]["errors"] for row in result["servers"].values() for k in ("mixed", "short_only"))
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
