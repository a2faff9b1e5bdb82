"""Serving speed: ONNX Runtime (fp32, int8) and PyTorch engines vs transformers' BART, and a load test of
`biomedgpt serve`, in one run (README, "Speed"; issue 5).

Part 1, engines (one process, one thread count for everything: `--threads`, default 2, applied to torch and to
every ONNX Runtime session). A `--arch` model with random weights is saved, exported with `biomedgpt export`'s
code (fp32 graphs, parity-checked) and quantized to int8 with `quantize_graphs` as `biomedgpt export --int8`
does (MatMul/Gemm dynamic; the ResNet stem static, calibrated on `CALIBRATION_IMAGES` synthetic scans; the
accuracy gate is skipped: random weights). The peer is HF `BartForConditionalGeneration` with the same d_model, layers, heads,
FFN and vocabulary (`_common.bart_peer`, as in bench_generate.py); its source length is our encoder length
(image patches + prompt tokens of the VQA request). For batch 1 and 8:

- ms per decoding step: encoders run once outside the timed region; greedy decoding forced to exactly N tokens
  (`min_new_tokens`); per step = (time for N tokens - time for 1 token) / (N - 1), median of `--repeats` after
  a warm-up (`_common.per_step_ms`). ORT: the serving loop (`biomedgpt.serve.decoding.decode` around
  `OrtDecoderStep`); torch: `biomedgpt.model.generation.decode`; HF: `generate(encoder_outputs=...)`.
- whole request: B identical VQA requests (a 512x512 grayscale image, one question, `max_new_tokens` N,
  closed_set off) through `engine.prepare` + `engine.run`: image preprocessing, prompt building, encoder
  (ResNet stem included), N greedy steps and postprocessing. HF: `generate(input_ids=...)`, i.e. its encoder
  and N steps only (no image stem, no pre/post-processing: the comparison favours the peer).
  The model's eos embedding row is zeroed so greedy decoding never stops early: every request really
  decodes N tokens (checked: `tokens` in the table).
- the whole request's parts, timed inside it (`PARTS`): preprocessing (image -> pixels), the rest of `prepare`,
  the encoder calls (ResNet stem + transformer encoder + the decoder's cross-attention keys/values), decoding
  and postprocessing, with the batch of every encoder call (8 requests must make one call of 8); and, timed
  apart on the same batch, the encoder graph and the ResNet stem alone (ORT: the stem cut out of the graph the
  engine serves; torch: `embed_images`). The peer's parts: its encoder, and `generate` less its encoder.
  Every row records the 1-minute load average when it was done.

Part 2, load test: a real `biomedgpt serve` subprocess (ONNX Runtime, fp32 unless `--load-precision int8`,
the `--load-size` export, `num_threads=--threads`) on 127.0.0.1; asyncio clients (httpx, one keep-alive
connection each, in this process, so on the same cores) send `POST /v1/tasks/vqa` (JSON, base64 PNG, `max_new_tokens` =
`--load-new-tokens`) back to back for `--duration` s per level. Per level: throughput, p50/p99 latency, errors
(non-200 or transport errors: must be 0; the script exits 1 otherwise), mean batch size (from /metrics), the
means of the responses' `timing_ms` (prepare / queue / inference) and the server's VmRSS sampled every 0.25 s
(start/peak/end of each level, after `--warmup` s at the most clients). Levels 1, 8, 32 clients run with
batching on (`max_batch_size=--batch-on` 32, `max_wait_ms=--max-wait-ms` 10); then 32 clients against a second
server with batching off (`max_batch_size=1`, `max_wait_ms=0`); the report gives the on/off throughput ratio.

Exports are cached under .cache/bench_serve/ (keyed by arch, sizes, seed, library versions and the model/export
sources), so only the first run pays for them (about 1-2 min each). Weights are random: speed does not depend
on them. The CPU model, thread counts, versions and the load average at start and end are printed: figures
from a busy machine are not comparable.

    python benchmarks/bench_serve.py --out results.json   # small, batch 1 and 8, 32 steps; load test of small
    python benchmarks/bench_serve.py --quick              # smoke run: tiny, 64 px, 8 steps, 2 s levels
    python benchmarks/bench_serve.py --load-size tiny     # a faster load test (tiny export)
    python benchmarks/bench_serve.py --skip-load --threads 1 --clock cpu   # engines on a shared machine
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import bart_peer, machine_info

REPO = Path(__file__).resolve().parent.parent
STARTED = time.perf_counter()
QUESTION = "what abnormality is seen in the left lung?"
VOCAB_SIZE = 32768
SEED = 0

ENGINES = ("ort_fp32", "ort_int8", "torch", "hf_bart")
PER_STEP_GOALS = {"ort_fp32": 1.5, "ort_int8": 3.0}  # HF ms/step / ours ms/step, batch 1 and 8
REQUEST_GOALS = {"ort_fp32": 1.0, "ort_int8": 1.0}  # HF request ms / ours: whole requests at least as fast
CALIBRATION_IMAGES = 8  # synthetic scans that calibrate the int8 stem (random weights: no shards to gate on)
BATCHING_GOAL = 3.0  # throughput at 32 clients, batching on / off


# --------------------------------------------------------------------------------------------------------
# Model folders and exports
# --------------------------------------------------------------------------------------------------------
def progress(message: str) -> None:
    print(f"# [{time.perf_counter() - STARTED:5.0f} s] {message}", flush=True)


CLOCK = time.perf_counter
"""The clock of part 1's figures: wall time, or with `--clock cpu` (and `--threads 1`) this process's CPU time,
which other jobs on the machine do not inflate (a single-threaded engine's CPU time is its time on an idle
core)."""


def timed(fn, repeats: int) -> float:
    """`_common.timed` on `CLOCK`: median seconds of `repeats` calls of `fn`, after one untimed warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = CLOCK()
        fn()
        times.append(CLOCK() - start)
    return statistics.median(times)


def per_step_ms(run, new_tokens: int, repeats: int) -> float:
    """`_common.per_step_ms` on `CLOCK`: (time for N tokens - time for 1 token) / (N - 1), in ms."""
    if new_tokens < 2:
        raise ValueError(f"new_tokens must be >= 2 to time steps, got {new_tokens}")
    return 1000 * (timed(run(new_tokens), repeats) - timed(run(1), repeats)) / (new_tokens - 1)


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _cache_key(arch: str, image_size: int) -> str:
    from biomedgpt import __version__
    from biomedgpt.tokenization.paths import default_tokenizer_dir

    digest = hashlib.sha256()
    meta = {
        "arch": arch,
        "image_size": image_size,
        "vocab": VOCAB_SIZE,
        "seed": SEED,
        "eos_zeroed": True,
        "biomedgpt": __version__,
        "versions": {p: _version(p) for p in ("torch", "onnx", "onnxruntime", "onnxscript", "transformers")},
    }
    digest.update(json.dumps(meta, sort_keys=True).encode())
    sources = sorted((REPO / "biomedgpt" / "model").glob("*.py")) + sorted(
        (REPO / "biomedgpt" / "export").glob("*.py")
    )
    for path in [*sources, Path(default_tokenizer_dir()) / "tokenizer.json"]:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def write_model_folder(directory: Path, arch: str, image_size: int) -> None:
    """A model folder with random weights (eval) and the real tokenizer; eos can never win greedy decoding."""
    import torch

    from biomedgpt.model.configuration import BiomedGPTConfig
    from biomedgpt.model.image_processing import BiomedGPTImageProcessor, ImageProcessorConfig
    from biomedgpt.model.modeling import BiomedGPTForConditionalGeneration
    from biomedgpt.model.processing import BiomedGPTProcessor
    from biomedgpt.tokenization.unified import BiomedGPTTokenizer

    torch.manual_seed(SEED)
    config = BiomedGPTConfig.from_arch(arch, vocab_size=VOCAB_SIZE, image_size=image_size)
    model = BiomedGPTForConditionalGeneration(config).eval()
    with torch.no_grad():
        # A zero row gives eos the logit 0 while the best of 32k random logits is far above it: every request
        # decodes exactly max_new_tokens tokens, so all engines do the same work.
        model.model.shared.weight[config.eos_token_id].zero_()
        model.lm_head.weight[config.eos_token_id].zero_()
    model.save_pretrained(directory)
    BiomedGPTProcessor(
        BiomedGPTTokenizer.load_default(),
        BiomedGPTImageProcessor(ImageProcessorConfig(image_size=image_size)),
    ).save_pretrained(directory)
    (directory / "serving.json").write_text(json.dumps({"model_id": f"bench-{arch}"}))
    (directory / "answers.json").write_text("{}")  # no closed set: VQA decodes freely


def prepare_model(
    arch: str, image_size: int, cache_dir: Path | None, scratch: Path, *, model: Path | None = None
) -> tuple[Path, Path, bool]:
    """-> (model folder, export folder with fp32 and int8 graphs, reused from the cache).

    `model`: an existing model folder (e.g. from `biomedgpt import`) instead of a random one of `arch`."""
    if model is not None:
        from biomedgpt.hashing import sha256_file

        key = sha256_file(model / "model.safetensors")[:12]
        root = (cache_dir or scratch) / f"folder-{model.name}-{key}"
    else:
        root = (cache_dir or scratch) / f"{arch}-{image_size}px-{_cache_key(arch, image_size)}"
    model_dir, export_dir, done = root / "model", root / "export", root / "done"
    if model is not None:
        model_dir = model
    if done.is_file():
        _list_int8(export_dir)  # caches written before the int8 files were listed
        return model_dir, export_dir, True
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    started = time.perf_counter()
    if model is None:
        model_dir.mkdir(parents=True)
        progress(f"building and exporting the {arch} model ({image_size}px) into {root} ...")
        write_model_folder(model_dir, arch, image_size)
    else:
        progress(f"exporting {model} into {root} ...")
    from biomedgpt.export.onnx_export import ExportOptions, export_checkpoint

    with _quiet():
        export_checkpoint(model_dir, export_dir, ExportOptions(overwrite=True))
        quantize_export(export_dir)
    done.write_text(f"{time.perf_counter() - started:.1f} s\n")
    progress(f"export done in {time.perf_counter() - started:.0f} s")
    return model_dir, export_dir, False


def quantize_export(export_dir: Path) -> None:
    """The int8 graphs as `biomedgpt export --int8` writes them, less the accuracy gate (random weights):
    MatMul/Gemm dynamic, the ResNet stem static, calibrated on `CALIBRATION_IMAGES` synthetic scans prepared
    as the engine prepares a request."""
    from biomedgpt.export.quantize import encoder_feeds, quantize_graphs
    from biomedgpt.serve.ort_engine import OrtEngine

    engine = OrtEngine(export_dir, precision="fp32", verify=False)
    requests = [_task_request(request_image(seed=SEED + 1 + i), 1) for i in range(CALIBRATION_IMAGES)]
    feeds = encoder_feeds(engine, requests)
    del engine
    done = quantize_graphs(export_dir, calibration=feeds)
    entry = {**done, "calibration": {"images": len(feeds), "source": "synthetic scans"}, "gate": "skipped"}
    _list_int8(export_dir, entry)


def _list_int8(export_dir: Path, entry: dict[str, Any] | None = None) -> None:
    """Add the int8 graphs' sha256 (and `entry` as "int8") to manifest.json, as `biomedgpt export` does, so the
    engine's file check accepts them."""
    from biomedgpt.hashing import sha256_file

    path = export_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    names = [n for n in ("encoder.int8.onnx", "decoder.int8.onnx") if (export_dir / n).is_file()]
    if entry is None and all(n in manifest["files"] for n in names):
        return
    manifest["files"].update({n: sha256_file(export_dir / n) for n in names})
    if entry is not None:
        manifest["int8"] = entry
    path.write_text(json.dumps(manifest, indent=2) + "\n")


@contextlib.contextmanager
def _quiet():
    """Hold back the exporter's and quantizer's chatter (warnings, logs, progress); shown only on failure."""
    import logging
    import warnings

    captured = io.StringIO()
    logging.disable(logging.WARNING)  # torch.onnx's loggers hold their own stderr handlers
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(captured),
            contextlib.redirect_stderr(captured),
        ):
            warnings.simplefilter("ignore")
            yield
    except BaseException:
        sys.stderr.write(captured.getvalue()[-20000:])
        raise
    finally:
        logging.disable(logging.NOTSET)


def request_image(size: int = 512, *, seed: int = SEED):
    """A synthetic grayscale scan: smooth shading plus mild noise, so its PNG is as large as a real one's
    (about 160 KB at 512 px; pure noise would be 1 MB and time base64/PNG decoding more than the model).
    Another `seed` gives another scan (other shading and noise): the int8 stem's calibration images."""
    from PIL import Image

    y, x = np.mgrid[0:size, 0:size] / size
    rng = np.random.default_rng(seed)
    fx, fy = (6, 4) if seed == SEED else tuple(rng.uniform(2, 9, 2))
    shade = 0.5 + 0.25 * np.sin(fx * x) * np.cos(fy * y) - 0.8 * ((x - 0.5) ** 2 + (y - 0.5) ** 2)
    noise = rng.normal(0.0, 0.02, (size, size))
    return Image.fromarray((np.clip(shade + noise, 0, 1) * 255).astype(np.uint8), "L")


# --------------------------------------------------------------------------------------------------------
# Part 1: engines
# --------------------------------------------------------------------------------------------------------
def _task_request(image, new_tokens: int):
    from biomedgpt.serve.types import TaskRequest

    return TaskRequest(
        task="vqa", image=image, fields={"question": QUESTION}, max_new_tokens=new_tokens, closed_set=False
    )


def _engine_inputs(engine, image, batch: int):
    item = engine.prepare(_task_request(image, 1))
    ids = np.asarray([item.prompt_ids] * batch, dtype=np.int64)
    return ids, np.ones_like(ids), np.stack([item.pixels] * batch).astype(np.float32)


PARTS = ("preprocess", "prompt", "encoder", "decode", "postprocess")
"""The parts of a whole request, timed inside it: image -> pixels (`preprocess_one`), the rest of `prepare`
(validation, prompt and tokens), the encoder calls (`encode` of the engine's step model: the ResNet stem and
the transformer encoder, and the decoder's cross-attention keys and values), decoding (`run` less the encoder
and postprocessing: decoder steps, token choice, the scheduler), postprocessing (`result`: tokens -> output)."""


class _PartClock:
    """Wall time spent in wrapped methods of one engine, per part; `encoder_batches` lists the batch of every
    encoder call (the scheduler must run the encoders of one step's arrivals as one call)."""

    def __init__(self, engine) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(PARTS, 0.0)
        self.encoder_batches: list[int] = []
        self._wrapped: list[tuple[Any, str]] = []
        self._wrap(engine.image_processor, "preprocess_one", "preprocess")
        self._wrap(engine.step_model(), "encode", "encoder")
        self._wrap(engine, "result", "postprocess")

    def close(self) -> None:
        """Unwrap: the class's methods again."""
        for owner, method in self._wrapped:
            delattr(owner, method)

    def _wrap(self, owner, method: str, part: str) -> None:
        inner = getattr(owner, method)
        self._wrapped.append((owner, method))

        def timed_call(*args, **kwargs):
            if part == "encoder":
                self.encoder_batches.append(len(args[0]))
            start = CLOCK()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[part] += CLOCK() - start

        setattr(owner, method, timed_call)  # an instance attribute: the engine and scheduler call it

    def reset(self) -> None:
        self.seconds = dict.fromkeys(PARTS, 0.0)
        self.encoder_batches = []


def _whole_request(engine, image, batch: int, new_tokens: int, repeats: int) -> dict[str, Any]:
    """B requests through `prepare` + `run`: median ms of the whole and of each part (`PARTS`) over `repeats`
    runs after a warm-up, mean generated tokens per request, and the encoder calls' batch sizes."""
    clock = _PartClock(engine)
    totals: list[float] = []
    parts: dict[str, list[float]] = {p: [] for p in PARTS}
    lengths: list[int] = []
    batches: list[int] = []
    for attempt in range(repeats + 1):  # the first is the warm-up
        clock.reset()
        start = CLOCK()
        items = [engine.prepare(_task_request(image, new_tokens)) for _ in range(batch)]
        prepared = CLOCK()
        results = engine.run(items)
        end = CLOCK()
        if attempt == 0:
            continue
        s = clock.seconds
        totals.append(end - start)
        parts["preprocess"].append(s["preprocess"])
        parts["prompt"].append(prepared - start - s["preprocess"])
        parts["encoder"].append(s["encoder"])
        parts["postprocess"].append(s["postprocess"])
        parts["decode"].append(end - prepared - s["encoder"] - s["postprocess"])
        lengths.extend(len(r.tokens) for r in results)
        batches = list(clock.encoder_batches)
    clock.close()
    return {
        "request_ms": 1000 * statistics.median(totals),
        "parts_ms": {p: round(1000 * statistics.median(v), 1) for p, v in parts.items()},
        "tokens": statistics.mean(lengths),
        "encoder_calls": batches,
    }


def _stem_session(export_dir: Path, precision: str, threads: int):
    """An ONNX Runtime session of the encoder graph's ResNet stem alone (`patch_images` -> the feature map the
    transformer encoder reads), cut from the graph `precision` serves, with the engine's session options; None
    when the graph cannot be cut (an export of an earlier biomedgpt)."""
    try:
        import onnx
        import onnxruntime as ort

        from biomedgpt.export.quantize import stem_nodes
        from biomedgpt.serve.ort_engine import graph_files, session_options

        path = export_dir / graph_files(precision)["encoder"]
        fp32 = onnx.load(str(export_dir / "encoder.onnx"), load_external_data=False)
        _, outputs = stem_nodes(fp32.graph)
        model = onnx.load(str(path))
        names = {o for node in model.graph.node for o in node.output}
        # In the int8 graph the stem's output is quantized; the transformer reads it dequantized.
        cut = [
            f"{o}_DequantizeLinear_Output" if f"{o}_DequantizeLinear_Output" in names else o for o in outputs
        ]
        stem = onnx.utils.Extractor(model).extract_model(["patch_images"], cut)
        return ort.InferenceSession(
            stem.SerializeToString(), session_options(threads), providers=["CPUExecutionProvider"]
        )
    except Exception as err:  # the stem column is left empty, the rest of the benchmark runs
        progress(f"  (no stem timing for {precision}: {type(err).__name__}: {err})")
        return None


def bench_ort(export_dir: Path, precision: str, image, batches, args) -> list[dict[str, Any]]:
    from biomedgpt.serve.decoding import DecodeSpec, decode
    from biomedgpt.serve.engines import load_engine
    from biomedgpt.serve.ort_engine import OrtDecoderStep

    engine = load_engine(export_dir, engine="onnxruntime", precision=precision, num_threads=args.threads)
    stem = _stem_session(export_dir, precision, args.threads)
    rows = []
    for batch in batches:
        inputs = _engine_inputs(engine, image, batch)
        encoder_ms = 1000 * timed(lambda inputs=inputs: engine.encode(*inputs), args.repeats)
        stem_ms = (
            1000 * timed(lambda inputs=inputs: stem.run(None, {"patch_images": inputs[2]}), args.repeats)
            if stem is not None
            else None
        )
        bias, position_keys, *cross = engine.encode(*inputs)

        def run(n: int, bias=bias, position_keys=position_keys, cross=cross, batch=batch):
            spec = DecodeSpec(max_new_tokens=n, min_new_tokens=n)
            return lambda: decode(
                OrtDecoderStep(engine, bias, position_keys, cross),
                batch=batch,
                spec=spec,
                ids=engine.special_ids,
                vocab_size=engine.vocab_size,
            )

        step_ms = per_step_ms(run, args.new_tokens, args.repeats)
        whole = _whole_request(engine, image, batch, args.new_tokens, args.repeats)
        rows.append(_row(f"ort_{precision}", batch, step_ms, whole, encoder_ms=encoder_ms, stem_ms=stem_ms))
    return rows


def bench_torch(model_dir: Path, image, batches, args) -> list[dict[str, Any]]:
    import torch

    from biomedgpt.model.decode_spec import DecodeSpec
    from biomedgpt.model.generation import decode
    from biomedgpt.serve.engines import load_engine

    with _quiet():  # transformers' weight-loading progress bar
        engine = load_engine(model_dir, engine="torch", num_threads=args.threads)
    model = engine.model
    encoder = model.get_encoder()
    rows = []
    for batch in batches:
        ids, mask, pixels = (torch.from_numpy(a) for a in _engine_inputs(engine, image, batch))
        with torch.inference_mode():
            encoder_ms = 1000 * timed(
                lambda ids=ids, mask=mask, pixels=pixels: encoder(
                    ids, attention_mask=mask, patch_images=pixels
                ),
                args.repeats,
            )
            stem_ms = 1000 * timed(lambda pixels=pixels: encoder.embed_images(pixels), args.repeats)
            encoded = encoder(ids, attention_mask=mask, patch_images=pixels)

            def run(n: int, encoded=encoded):
                options = DecodeSpec(max_new_tokens=n, min_new_tokens=n)
                return lambda: decode(model, encoded, options=options)

            step_ms = per_step_ms(run, args.new_tokens, args.repeats)
        whole = _whole_request(engine, image, batch, args.new_tokens, args.repeats)
        rows.append(_row("torch", batch, step_ms, whole, encoder_ms=encoder_ms, stem_ms=stem_ms))
    return rows


def bench_hf(model_dir: Path, prompt_len: int, batches, args) -> list[dict[str, Any]]:
    import torch

    from biomedgpt.model.configuration import BiomedGPTConfig

    config = BiomedGPTConfig.from_pretrained(model_dir)
    torch.manual_seed(SEED)
    peer = bart_peer(config)
    source_len = (config.image_size // 16) ** 2 + prompt_len
    encoder = peer.get_encoder()
    rows = []
    for batch in batches:
        source = torch.randint(10, config.vocab_size - 10, (batch, source_len))
        mask = torch.ones_like(source)
        with torch.inference_mode():
            encoder_ms = 1000 * timed(
                lambda source=source, mask=mask: encoder(input_ids=source, attention_mask=mask), args.repeats
            )
            encoded = encoder(input_ids=source, attention_mask=mask)

            def run(n: int, encoded=encoded, mask=mask):
                return lambda: peer.generate(
                    encoder_outputs=encoded,
                    attention_mask=mask,
                    max_new_tokens=n,
                    min_new_tokens=n,
                    do_sample=False,
                    num_beams=1,
                )

            step_ms = per_step_ms(run, args.new_tokens, args.repeats)
            lengths: list[int] = []

            def whole(source=source, mask=mask, lengths=lengths) -> None:
                out = peer.generate(
                    input_ids=source,
                    attention_mask=mask,
                    max_new_tokens=args.new_tokens,
                    min_new_tokens=args.new_tokens,
                    do_sample=False,
                    num_beams=1,
                )
                lengths.append(out.shape[1] - 1)  # minus the decoder start token

            request_ms = 1000 * timed(whole, args.repeats)
        # The peer's request is its encoder and its decoding: no image, no pre- or postprocessing.
        parts = {p: 0.0 for p in PARTS}
        parts["encoder"] = round(encoder_ms, 1)
        parts["decode"] = round(request_ms - encoder_ms, 1)
        whole_row = {"request_ms": request_ms, "parts_ms": parts, "tokens": statistics.mean(lengths)}
        rows.append(_row("hf_bart", batch, step_ms, whole_row, encoder_ms=encoder_ms, stem_ms=None))
        rows[-1]["source_len"] = source_len
    return rows


def _row(
    engine: str,
    batch: int,
    step_ms: float,
    whole: dict[str, Any],
    *,
    encoder_ms: float,
    stem_ms: float | None,
) -> dict[str, Any]:
    """One engine at one batch size: per step, the whole request and its parts (`PARTS`, from inside the timed
    requests), and the encoder graph and the stem alone (timed apart, same inputs)."""
    request_ms = whole["request_ms"]
    return {
        "engine": engine,
        "batch": batch,
        "ms_per_step": round(step_ms, 3),
        "request_ms": round(request_ms, 1),
        "requests_per_s": round(1000 * batch / request_ms, 2),
        "tokens": round(whole["tokens"], 2),
        "parts_ms": whole["parts_ms"],
        "encoder_alone_ms": round(encoder_ms, 1),
        "stem_alone_ms": None if stem_ms is None else round(stem_ms, 1),
        "encoder_calls": whole.get("encoder_calls"),
        "load_average_1min": round(
            os.getloadavg()[0], 2
        ),  # when this row was done: other jobs slow every figure
    }


def run_engines(model_dir: Path, export_dir: Path, args) -> dict[str, Any]:
    import torch

    from biomedgpt.serve.engines import load_engine

    torch.set_num_threads(args.threads)
    image = request_image()
    probe = load_engine(export_dir, engine="onnxruntime", num_threads=args.threads)
    prompt_len = len(probe.prepare(_task_request(image, 1)).prompt_ids)
    vocab = probe.vocab_size
    del probe
    rows: list[dict[str, Any]] = []
    for name in args.engines:
        progress(f"timing {name} ...")
        if name in ("ort_fp32", "ort_int8"):
            rows += bench_ort(export_dir, name.split("_")[1], image, args.batch, args)
        elif name == "torch":
            rows += bench_torch(model_dir, image, args.batch, args)
        elif name == "hf_bart":
            rows += bench_hf(model_dir, prompt_len, args.batch, args)
    ratios = {}
    peer = {r["batch"]: r for r in rows if r["engine"] == "hf_bart"}
    for r in rows:
        if r["engine"] != "hf_bart" and r["batch"] in peer:
            p = peer[r["batch"]]
            ratios[f"{r['engine']}@{r['batch']}"] = {
                "per_step": round(p["ms_per_step"] / r["ms_per_step"], 2),
                "request": round(p["request_ms"] / r["request_ms"], 2),
                "per_step_goal": PER_STEP_GOALS.get(r["engine"]),
                "request_goal": REQUEST_GOALS.get(r["engine"]),
            }
    return {"prompt_tokens": prompt_len, "vocab": vocab, "rows": rows, "ratios_peer_over_ours": ratios}


# --------------------------------------------------------------------------------------------------------
# Part 2: load test against `biomedgpt serve`
# --------------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler:
    """Samples a process's VmRSS every `interval` s on a thread; `mark()` starts a new window."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid, self.interval = pid, interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            kb = _rss_kb(self.pid)
            if kb is not None:
                self.samples.append(kb)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def window(self, start: int) -> dict[str, float]:
        values = self.samples[start:] or [_rss_kb(self.pid) or 0]
        return {
            "start": round(values[0] / 1024, 1),
            "peak": round(max(values) / 1024, 1),
            "end": round(values[-1] / 1024, 1),
            "samples": len(values),
        }


class Server:
    """`biomedgpt serve` in a subprocess on a free loopback port; stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(
        self, export_dir: Path, log_path: Path, *, threads: int, precision: str, overrides: dict[str, Any]
    ) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        script = Path(sys.executable).with_name("biomedgpt")
        launcher = (
            [str(script)]
            if script.is_file()
            else [sys.executable, "-c", "import sys; from biomedgpt.cli import main; sys.exit(main())"]
        )
        settings = {"num_threads": threads, "precision": precision, "log_level": "warning", **overrides}
        self.command = [
            *launcher,
            "serve",
            "--model",
            str(export_dir),
            "--engine",
            "onnxruntime",
            "--port",
            str(self.port),
            *(f"{k}={v}" for k, v in settings.items()),
        ]
        self.settings = settings
        # Only the command line decides the settings: drop any BIOMEDGPT_SERVE_* / API key from the environment.
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("BIOMEDGPT_SERVE_") and k != "BIOMEDGPT_API_KEY"
        }
        self.env["TOKENIZERS_PARALLELISM"] = "false"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        import httpx

        self._log = open(self.log_path, "wb")  # closed in __exit__
        self.proc = subprocess.Popen(
            self.command, stdout=self._log, stderr=subprocess.STDOUT, env=self.env, cwd=REPO
        )
        started = time.perf_counter()
        deadline = started + 180
        with httpx.Client(trust_env=False, timeout=5) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self._tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/ready").status_code == 200:
                        break
                if time.perf_counter() > deadline:
                    self.__exit__()
                    raise TimeoutError(f"the server was not ready within 180 s:\n{self._tail()}")
                time.sleep(0.2)
        self.startup_s = time.perf_counter() - started
        return self

    def _tail(self) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def metrics(self) -> dict[str, float]:
        """The batch-size histogram from /metrics: "sum", "count" and "le=<bound>" (cumulative buckets)."""
        import httpx

        text = httpx.get(f"{self.url}/metrics", trust_env=False, timeout=10).text
        values = {}
        for line in text.splitlines():
            name, _, value = line.rpartition(" ")
            if name in ("biomedgpt_batch_size_sum", "biomedgpt_batch_size_count"):
                values[name.rsplit("_", 1)[1]] = float(value)
            elif name.startswith('biomedgpt_batch_size_bucket{le="'):
                values["le=" + name.split('"')[1]] = float(value)
        return values


def _request_body(image_size: int, new_tokens: int) -> bytes:
    buffer = io.BytesIO()
    request_image(image_size).save(buffer, format="PNG")
    return json.dumps(
        {
            "image": base64.b64encode(buffer.getvalue()).decode(),
            "question": QUESTION,
            "max_new_tokens": new_tokens,
            "closed_set": False,
        }
    ).encode()


async def _load(url: str, body: bytes, *, clients: int, duration: float | None, count: int | None):
    """`clients` workers post back to back until `duration` s passed (or `count` requests each)."""
    import httpx

    latencies: list[float] = []
    tokens: list[int] = []
    server_ms: list[dict[str, float]] = []  # the responses' timing_ms: prepare, queue, inference, total
    errors: list[str] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits, trust_env=False) as client:
        loop = asyncio.get_running_loop()
        started = loop.time()
        end = started + (duration or 0)
        finished = started

        async def worker() -> None:
            nonlocal finished
            sent = 0
            while (count is not None and sent < count) or (count is None and loop.time() < end):
                sent += 1
                t0 = time.perf_counter()
                try:
                    response = await client.post("/v1/tasks/vqa", content=body, headers=headers)
                except httpx.HTTPError as err:
                    errors.append(f"{type(err).__name__}: {err}")
                    continue
                elapsed = time.perf_counter() - t0
                if response.status_code != 200:
                    errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
                    continue
                latencies.append(elapsed)
                answer = response.json()
                tokens.append(answer["usage"]["completion_tokens"])
                server_ms.append(answer.get("timing_ms", {}))
                finished = loop.time()

        await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies, tokens, server_ms, errors, max(finished - started, 1e-9)


def load_level(server: Server, sampler: RssSampler, body: bytes, clients: int, duration: float) -> dict:
    before = server.metrics()
    window = len(sampler.samples)
    latencies, tokens, server_ms, errors, elapsed = asyncio.run(
        _load(server.url, body, clients=clients, duration=duration, count=None)
    )
    after = server.metrics()
    batches = after.get("count", 0) - before.get("count", 0)
    served = after.get("sum", 0) - before.get("sum", 0)
    # The largest batch of this level lies in the first (cumulative) bucket that holds all its batches.
    bounds = sorted((float(k[3:]), k) for k in after if k.startswith("le="))
    largest = next(
        (bound for bound, key in bounds if batches and after[key] - before.get(key, 0) >= batches), None
    )
    ms = np.asarray(latencies) * 1000 if latencies else np.asarray([float("nan")])
    return {
        "clients": clients,
        "max_batch_size": server.settings["max_batch_size"],
        "max_wait_ms": server.settings["max_wait_ms"],
        "requests": len(latencies),
        "errors": len(errors),
        "error_examples": errors[:3],
        "seconds": round(elapsed, 2),
        "requests_per_s": round(len(latencies) / elapsed, 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "mean_batch": round(served / batches, 2) if batches else None,
        "largest_batch_at_most": largest,
        "tokens_per_request": round(statistics.mean(tokens), 2) if tokens else None,
        "server_timing_ms_mean": {
            key: round(statistics.mean(t[key] for t in server_ms), 1)
            for key in ("prepare", "queue", "inference", "total")
            if server_ms and all(key in t for t in server_ms)
        },
        "rss_mb": sampler.window(window),
    }


def _warm_up(server: Server, body: bytes, clients: int, seconds: float) -> list[str]:
    """Two lone requests, then `seconds` at `clients`: the engine's memory arenas reach the largest batch
    before RSS is judged."""
    *_, errors_one, _ = asyncio.run(_load(server.url, body, clients=1, duration=None, count=2))
    *_, errors_many, _ = asyncio.run(_load(server.url, body, clients=clients, duration=seconds, count=None))
    return errors_one + errors_many


def run_load(export_dir: Path, work: Path, args) -> dict[str, Any]:
    body = _request_body(512, args.load_new_tokens)
    top = max(args.clients)
    result: dict[str, Any] = {
        "export": str(export_dir),
        "request": {
            "task": "vqa",
            "image": "512x512 grayscale PNG, base64 in JSON",
            "body_bytes": len(body),
            "max_new_tokens": args.load_new_tokens,
            "closed_set": False,
        },
        "duration_s": args.duration,
        "warm_up_s": args.warmup,
        "clients_in_process": True,
        "servers": [],
    }
    configs = [
        ("batching_on", {"max_batch_size": args.batch_on, "max_wait_ms": args.max_wait_ms}, args.clients),
        ("batching_off", {"max_batch_size": 1, "max_wait_ms": 0}, [top]),
    ]
    for label, overrides, levels in configs:
        progress(f"load test: {label} {overrides}, clients {levels}, {args.duration:g} s each ...")
        with Server(
            export_dir,
            work / f"serve-{label}.log",
            threads=args.threads,
            precision=args.load_precision,
            overrides=overrides,
        ) as srv:
            assert srv.proc is not None
            progress(f"  server pid {srv.proc.pid} ready in {srv.startup_s:.1f} s on {srv.url}")
            with RssSampler(srv.proc.pid) as sampler:
                ready_mb = round((_rss_kb(srv.proc.pid) or 0) / 1024, 1)
                warm_errors = _warm_up(srv, body, top, args.warmup)
                warm_mb = round((_rss_kb(srv.proc.pid) or 0) / 1024, 1)
                rows = []
                for clients in levels:
                    rows.append(load_level(srv, sampler, body, clients, args.duration))
                    r = rows[-1]
                    progress(
                        f"  {clients:>3} clients: {r['requests_per_s']:.2f} req/s, p50 {r['p50_ms']:.0f} ms, "
                        f"p99 {r['p99_ms']:.0f} ms, errors {r['errors']}"
                    )
                end_mb = round((_rss_kb(srv.proc.pid) or 0) / 1024, 1)
            result["servers"].append(
                {
                    "label": label,
                    "command": " ".join(srv.command),
                    "settings": srv.settings,
                    "startup_s": round(srv.startup_s, 1),
                    "warm_up_errors": len(warm_errors),
                    "rss_mb": {"ready": ready_mb, "after_warm_up": warm_mb, "end": end_mb},
                    "levels": rows,
                }
            )
    on = next(r for r in result["servers"][0]["levels"] if r["clients"] == top)
    off = result["servers"][1]["levels"][0]
    result["batching"] = {
        "clients": top,
        "on_requests_per_s": on["requests_per_s"],
        "off_requests_per_s": off["requests_per_s"],
        "ratio_on_over_off": round(on["requests_per_s"] / off["requests_per_s"], 2)
        if off["requests_per_s"]
        else None,
        "goal": BATCHING_GOAL,
    }
    result["errors"] = sum(r["errors"] for s in result["servers"] for r in s["levels"]) + sum(
        s["warm_up_errors"] for s in result["servers"]
    )
    return result


# --------------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------------
def print_engines(part: dict[str, Any], args) -> None:
    print(
        f"\n## Engines: {args.model or args.arch}, vocab {part.get('vocab', VOCAB_SIZE)}, image {args.image_size}px, "
        "prompt "
        f"{part['prompt_tokens']} tokens, {args.new_tokens} new tokens, greedy, median of {args.repeats}, "
        f"{args.threads} threads (torch and ONNX Runtime), "
        + ("wall-clock ms" if args.clock == "wall" else "CPU ms of this process (--clock cpu)")
    )
    print(f"{'engine':<10} {'batch':>5} {'ms/step':>9} {'request ms':>11} {'req/s':>8} {'tokens':>7}")
    for r in part["rows"]:
        print(
            f"{r['engine']:<10} {r['batch']:>5} {r['ms_per_step']:>9.2f} {r['request_ms']:>11.1f} "
            f"{r['requests_per_s']:>8.2f} {r['tokens']:>7.1f}"
        )
    print(
        "\nWhole request, ms (parts timed inside it; medians of the repeats, so they need not add up):\n"
        "preprocess = image -> pixels; prompt = the rest of prepare; encoder = encoder calls (stem + transformer "
        "encoder + cross k/v); decode = run less encoder and postprocess; alone = the encoder graph and the "
        "ResNet stem timed apart on the same batch; load = 1-min load average when the row was done; calls = "
        "batch of each encoder call"
    )
    print(
        f"{'engine':<10} {'batch':>5} {'request':>8} {'preproc':>8} {'prompt':>7} {'encoder':>8} {'decode':>8} "
        f"{'post':>6} {'enc alone':>10} {'stem alone':>11} {'load':>5}  calls"
    )
    for r in part["rows"]:
        p = r["parts_ms"]
        stem = "-" if r.get("stem_alone_ms") is None else f"{r['stem_alone_ms']:.1f}"
        calls = "-" if r.get("encoder_calls") is None else ",".join(str(c) for c in r["encoder_calls"])
        print(
            f"{r['engine']:<10} {r['batch']:>5} {r['request_ms']:>8.1f} {p['preprocess']:>8.1f} {p['prompt']:>7.1f} "
            f"{p['encoder']:>8.1f} {p['decode']:>8.1f} {p['postprocess']:>6.1f} {r['encoder_alone_ms']:>10.1f} "
            f"{stem:>11} {r['load_average_1min']:>5.1f}  {calls}"
        )
    print("\nHF BART / ours (> 1: ours faster)")
    print(f"{'engine@batch':<14} {'per step':>9} {'request':>9}  goals")
    for key, ratio in part["ratios_peer_over_ours"].items():
        verdicts = []
        for name, goal in (("per step", ratio["per_step_goal"]), ("request", ratio.get("request_goal"))):
            if goal is not None:
                value = ratio["per_step" if name == "per step" else "request"]
                verdicts.append(f"{name} >= {goal:g}x: {'met' if value >= goal else 'NOT met'}")
        print(f"{key:<14} {ratio['per_step']:>8.2f}x {ratio['request']:>8.2f}x  {'; '.join(verdicts)}")


def print_load(part: dict[str, Any], args) -> None:
    print(
        f"\n## Load test: biomedgpt serve, ONNX Runtime {args.load_precision}, {args.load_size} export, {args.threads} threads, "
        f"VQA max_new_tokens={args.load_new_tokens}, {part['request']['body_bytes'] // 1024} KB JSON bodies "
        f"(512 px grayscale PNG), {args.duration:g} s per level, asyncio clients in this process"
    )
    print(
        f"{'server':<13} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'n':>6} {'errors':>6} "
        f"{'batch':>9} {'RSS MB start/peak/end':>22}  {'server ms prep/queue/infer':>26}"
    )
    for server in part["servers"]:
        for r in server["levels"]:
            rss = r["rss_mb"]
            mean_batch = f"{r['mean_batch']:.1f}" if r["mean_batch"] is not None else "-"
            if r["largest_batch_at_most"] is not None:
                mean_batch += f"/{r['largest_batch_at_most']:.0f}"
            rss_text = f"{rss['start']:.0f}/{rss['peak']:.0f}/{rss['end']:.0f}"
            timing = r["server_timing_ms_mean"]
            timing_text = "/".join(
                f"{timing[k]:.0f}" for k in ("prepare", "queue", "inference") if k in timing
            )
            print(
                f"{server['label']:<13} {r['clients']:>7} {r['requests_per_s']:>8.2f} {r['p50_ms']:>8.0f} "
                f"{r['p99_ms']:>8.0f} {r['requests']:>6} {r['errors']:>6} {mean_batch:>9} "
                f"{rss_text:>22}  {timing_text or '-':>26}"
            )
        rss = server["rss_mb"]
        print(
            f"{'':<13} RSS {server['label']}: ready {rss['ready']:.0f} MB, after warm-up {rss['after_warm_up']:.0f} "
            f"MB, end {rss['end']:.0f} MB; settings {server['settings']}"
        )
    print(
        "(n: answered requests; batch: mean/largest requests per engine call, from /metrics (largest as the "
        "histogram bucket bound); server ms: means of the responses' timing_ms)"
    )
    b = part["batching"]
    ratio = b["ratio_on_over_off"]
    verdict = "n/a" if ratio is None else ("met" if ratio >= b["goal"] else "NOT met")
    print(
        f"\nbatching at {b['clients']} clients: on {b['on_requests_per_s']:.2f} req/s / off "
        f"{b['off_requests_per_s']:.2f} req/s = {ratio}x (goal >= {b['goal']:g}x: {verdict}); "
        f"errors in total: {part['errors']}"
    )


def cpu_busy(seconds: float = 1.0) -> float | None:
    """Fraction of all CPUs' time spent outside idle/iowait over `seconds` (from /proc/stat)."""

    def read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]

    try:
        total0, idle0 = read()
        time.sleep(seconds)
        total1, idle1 = read()
    except (OSError, IndexError, ValueError):
        return None
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def _warn_if_busy(threads: int) -> float | None:
    """Warn when other processes hold the cores: torch's thread team then waits on descheduled threads and
    per-step times grow many-fold (seen: HF BART tiny 5 ms/step idle, 70 ms/step at load 3.5 on 2 cores)."""
    busy = cpu_busy()
    if busy is not None and busy > 0.15:
        print(
            f"# WARNING: the CPUs were {100 * busy:.0f}% busy before the start: other processes are running; "
            f"figures with {threads} threads are not representative (rerun on an idle machine)",
            flush=True,
        )
    return busy


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny model, 64 px, few iterations")
    parser.add_argument("--arch", default=None, help="model size of the engine comparison (default small)")
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="a model folder (e.g. from `biomedgpt import`) instead of --arch",
    )
    parser.add_argument("--image-size", type=int, default=None, help="default 256 (64 with --quick)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--new-tokens", type=int, default=None, help="decoded tokens (default 32; 8 quick)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 5; 2 quick)")
    parser.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads (default 2)")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="part 1's clock: wall time (default), or this process's CPU time (needs --threads 1): figures "
        "that other jobs on a shared machine do not inflate",
    )
    parser.add_argument(
        "--engines",
        nargs="+",
        choices=ENGINES,
        default=list(ENGINES),
        help="engines to time (default: all)",
    )
    parser.add_argument(
        "--load-size", default=None, help="model size served in the load test (default --arch)"
    )
    parser.add_argument(
        "--load-precision", choices=("fp32", "int8"), default="fp32", help="graphs the load-test server runs"
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds per level (default 20; 2 quick)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds of warm-up at the most clients (default 10; 1 quick)",
    )
    parser.add_argument(
        "--load-new-tokens", type=int, default=16, help="max_new_tokens of load-test requests"
    )
    parser.add_argument("--batch-on", type=int, default=32, help="max_batch_size with batching on")
    parser.add_argument("--max-wait-ms", type=float, default=10.0, help="max_wait_ms with batching on")
    parser.add_argument("--skip-engines", action="store_true")
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".cache" / "bench_serve")
    parser.add_argument("--no-cache", action="store_true", help="export into a temporary folder")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    quick = args.quick
    args.arch = args.arch or ("tiny" if quick else "small")
    if args.model is not None:  # the folder fixes the input side
        args.image_size = json.loads((args.model / "config.json").read_text())["image_size"]
    args.image_size = args.image_size or (64 if quick else 256)
    args.new_tokens = args.new_tokens or (8 if quick else 32)
    args.repeats = args.repeats or (2 if quick else 5)
    args.duration = args.duration or (2.0 if quick else 20.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if quick else 10.0)
    args.load_size = args.load_size or args.arch
    if args.clock == "cpu":
        if args.threads != 1:
            parser.error(
                "--clock cpu needs --threads 1 (a thread pool's CPU time counts its spinning threads)"
            )
        global CLOCK
        CLOCK = time.process_time
    if quick:
        args.load_new_tokens = min(args.load_new_tokens, 8)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch

    torch.set_num_threads(args.threads)
    info = machine_info(("torch", "transformers", "onnxruntime", "onnx", "numpy", "httpx", "uvicorn"))
    print(
        f"# {info['cpu']}, {info['logical_cpus']} logical CPUs ({info['usable_cpus']} usable), load average "
        f"{info['load_average']} at start; threads: torch {torch.get_num_threads()}, ONNX Runtime "
        f"{args.threads} (intra-op; inter-op 1), server num_threads={args.threads}"
    )
    print("# " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()) + f", python {info['python']}")
    busy = _warn_if_busy(args.threads)
    results: dict[str, Any] = {
        "machine": info,
        "threads": args.threads,
        "clock": args.clock,
        "settings": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("out",)
        },
    }
    started = time.perf_counter()
    cache = None if args.no_cache else args.cache_dir
    with tempfile.TemporaryDirectory(prefix="bench_serve.") as scratch:
        work = Path(scratch)
        model_dir, export_dir, reused = prepare_model(
            args.arch, args.image_size, cache, work, model=args.model
        )
        results["export_cached"] = reused
        if not args.skip_engines:
            results["engines"] = run_engines(model_dir, export_dir, args)
            print_engines(results["engines"], args)
        if not args.skip_load:
            if args.load_size != args.arch:
                _, export_dir, _ = prepare_model(args.load_size, args.image_size, cache, work)
            results["load"] = run_load(export_dir, work, args)
            print_load(results["load"], args)
    results["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["cpu_busy_before_start"] = None if busy is None else round(busy, 3)
    print(
        f"\n# {results['seconds']:.0f} s; load average at end {results['load_average_end']} "
        "(this benchmark's own load included)"
    )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"# wrote {args.out}")
    if results.get("load", {}).get("errors"):
        print("error: the load test saw failed requests (see error_examples in the JSON)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
