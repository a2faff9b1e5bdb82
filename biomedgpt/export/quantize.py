"""int8 quantization of the exported graphs, kept only if it costs at most one point on every metric.

Two kinds of int8 go into encoder.int8.onnx and decoder.int8.onnx:

- MatMul/Gemm of both graphs (the transformer layers, the cross-attention projections, the output projection):
  ONNX Runtime's `quantize_dynamic`, int8 weights per output channel, activations quantized on the fly
  (per tensor).
- The encoder's ResNet stem (its convolutions, residual adds and max pooling; the batch norms are folded into
  the convolutions), most of the encoder's work: ONNX Runtime has no dynamic int8 convolution, so it is
  quantized statically in QDQ form (`quantize_static`): int8 weights per output channel in a 7-bit range
  (so the u8 x s8 multiply-adds of AVX2 CPUs without VNNI never saturate, and the graph computes the same on
  every x86 CPU), uint8 activations whose ranges (min/max) are calibrated on preprocessed images: the
  gate shards' train split (else val, else the held-out split itself, as the manifest records). ONNX
  Runtime fuses it into QLinearConv/QLinearAdd in NHWC layout.

The gate decodes the same held-out samples with the fp32 and the int8 graphs (greedy, the task's constraint and
answer trie, the prompts the folder records, as `biomedgpt eval` does) and compares every metric of every
task. When one drops by more than `gate_max_drop` with the int8 stem, the stem goes back to fp32 and the int8
graphs are gated again (the manifest's `int8.stem` says why); when one still drops too much, the int8 files
are deleted and the manifest says why.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

STEM_OPS = ("Conv", "BatchNormalization", "Relu", "Add", "MaxPool")
"""What the ResNet stem is made of in the encoder graph (`biomedgpt.model.resnet`)."""
STEM_QUANTIZED_OPS = ["Conv", "Relu", "Add", "MaxPool"]
STEM_METHOD = (
    "static QDQ: int8 weights per output channel (7-bit range), uint8 activations calibrated by min/max"
)
CALIBRATION_SPLITS = ("train", "val", "test")


def stem_nodes(graph) -> tuple[list[str], list[str]]:
    """The ResNet stem of an encoder graph (an `onnx.GraphProto`): the names of the nodes computed from
    `patch_images` alone by `STEM_OPS` (in graph order), and the stem's outputs: its tensors whose values other
    nodes or the graph's outputs read (the feature map the transformer encoder embeds)."""
    constants = {t.name for t in graph.initializer}
    for node in graph.node:  # the TorchScript exporter shares equal weights through Identity nodes
        if node.op_type == "Constant" or (node.op_type == "Identity" and node.input[0] in constants):
            constants.update(node.output)
    inside = {"patch_images"}
    names: list[str] = []
    for node in graph.node:  # ONNX graphs are topologically sorted
        inputs = [i for i in node.input if i]
        if (
            node.op_type in STEM_OPS
            and node.name
            and any(i in inside for i in inputs)
            and all(i in inside or i in constants for i in inputs)
        ):
            names.append(node.name)
            inside.update(o for o in node.output if o)
    members = set(names)
    read_elsewhere = {
        i
        for node in graph.node
        if node.name not in members and node.op_type != "Shape"  # the exporter's shape checks read no values
        for i in node.input
    } | {o.name for o in graph.output}
    produced = [o for node in graph.node if node.name in members for o in node.output if o]
    return names, [o for o in produced if o in read_elsewhere]


def quantize_graphs(
    directory: Path,
    *,
    calibration: list[dict[str, np.ndarray]] | None = None,
    graphs: Iterable[str] = ("encoder", "decoder"),
) -> dict[str, Any]:
    """Write `{graph}.int8.onnx` for each of `graphs` into `directory` (module docstring). `calibration`: encoder
    feeds (as `OrtEngine.encode` gets them) that calibrate the int8 stem; None or empty: the stem stays fp32.
    -> what was quantized: {"matmul": "dynamic", "stem": "int8" | "fp32", "stem_nodes": n}."""
    import onnx

    done: dict[str, Any] = {"matmul": "dynamic", "stem": "fp32"}
    for name in graphs:
        proto = onnx.load(str(directory / f"{name}.onnx"))
        # The quantizers re-run shape inference, which trips over the exporter's intermediate shape
        # annotations around the tied embedding; the graph's own inputs and outputs keep their shapes.
        del proto.graph.value_info[:]
        if name == "encoder" and calibration:
            nodes, _ = stem_nodes(proto.graph)
            if nodes:
                with tempfile.TemporaryDirectory(prefix="biomedgpt-quantize.") as tmp:
                    source, stem = Path(tmp) / "encoder.onnx", Path(tmp) / "encoder.stem-int8.onnx"
                    onnx.save(proto, str(source))
                    del proto
                    _quantize_stem(source, stem, nodes, calibration)
                    proto = onnx.load(str(stem))
                    del proto.graph.value_info[:]
                done.update(stem="int8", stem_nodes=len(nodes))
        _quantize_matmuls(proto, directory / f"{name}.int8.onnx")
    return done


def _quantize_matmuls(proto, path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        proto,
        str(path),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul", "Gemm"],  # the stem's convolutions: `_quantize_stem`
    )


def _quantize_stem(
    source: Path, target: Path, nodes: list[str], calibration: list[dict[str, np.ndarray]]
) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    quantize_static(
        str(source),
        str(target),
        Feeds(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=STEM_QUANTIZED_OPS,
        nodes_to_quantize=nodes,
        per_channel=True,
        reduce_range=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )


def encoder_feeds(engine, requests) -> list[dict[str, np.ndarray]]:
    """Encoder inputs of `requests` (`TaskRequest`s with an image), one sample each, as `engine` (the export's
    fp32 `OrtEngine`) prepares them for serving; requests it refuses are left out."""
    from biomedgpt.serve.types import RequestError

    feeds = []
    for request in requests:
        try:
            item = engine.prepare(request)
        except RequestError:
            continue
        if item.pixels is None:
            continue
        ids = np.asarray([item.prompt_ids], dtype=np.int64)
        feeds.append(
            {
                "input_ids": ids,
                "attention_mask": np.ones_like(ids),
                "patch_images": np.ascontiguousarray(item.pixels[None], dtype=np.float32),
                "patch_masks": np.ones(1, dtype=bool),
            }
        )
    return feeds


def shard_calibration(
    directory: Path, patterns, *, max_images: int
) -> tuple[list[dict[str, np.ndarray]], dict[str, Any]]:
    """Up to `max_images` encoder feeds from the images of `patterns`' first split in `CALIBRATION_SPLITS` that
    has any (tasks taken in turn), and what the manifest records of them."""
    from biomedgpt.eval.runner import held_out_samples, resolve_shards, sample_request
    from biomedgpt.serve.ort_engine import OrtEngine
    from biomedgpt.tasks import get_task

    engine = OrtEngine(directory, precision="fp32", verify=False)
    for split in CALIBRATION_SPLITS:
        by_task = held_out_samples(
            resolve_shards(patterns, split=split),
            split=split,
            tasks=set(engine.tasks),
            max_samples=max_images,
            with_image=True,
        )
        requests = []
        for i in range(max_images):  # tasks in turn: every task's images shape the ranges
            for name in sorted(by_task):
                if i < len(by_task[name]) and len(requests) < max_images:
                    task = get_task(name)
                    requests.append(sample_request(engine, task, by_task[name][i], "fixed"))
        feeds = encoder_feeds(engine, requests)
        if feeds:
            info: dict[str, Any] = {"split": split, "images": len(feeds), "tasks": sorted(by_task)}
            if split == "test":
                info["note"] = "no train or val images: calibrated on the held-out images the gate scores"
            return feeds, info
    return [], {"split": None, "images": 0}


def quantize_and_gate(directory: Path, run_cfg, options) -> dict[str, Any]:
    """Write the int8 graphs into `directory`, run the gate; returns the manifest's "int8" entry."""
    started = time.perf_counter()
    patterns = options.gate_shards or (run_cfg.data.val_shards if run_cfg is not None else None)
    if not patterns:
        _remove_int8(directory)
        return {"accepted": False, "reason": "no held-out shards to gate on (pass --gate-shards)"}
    stem: dict[str, Any] = {"method": STEM_METHOD}
    calibration: list[dict[str, np.ndarray]] = []
    if options.int8_stem:
        calibration, stem["calibration"] = shard_calibration(
            directory, patterns, max_images=options.calibration_images
        )
    quantized = quantize_graphs(directory, calibration=calibration)
    fp32 = evaluate_engine(directory, "fp32", patterns, max_samples=options.gate_max_samples)
    int8 = evaluate_engine(directory, "int8", patterns, max_samples=options.gate_max_samples)
    failed = _failed(fp32, int8, options.gate_max_drop)
    if quantized["stem"] != "int8":
        stem.update(
            accepted=False,
            reason="not tried: " + ("no images to calibrate on" if options.int8_stem else "int8_stem is off"),
        )
    elif failed:
        stem.update(
            accepted=False,
            reason=f"with the int8 stem, int8 loses more than {options.gate_max_drop:g} on: {failed}",
            int8=int8,
        )
        log.warning("int8 stem rejected (%s): gating int8 again with the stem in fp32", stem["reason"])
        quantize_graphs(directory, graphs=("encoder",))
        int8 = evaluate_engine(directory, "int8", patterns, max_samples=options.gate_max_samples)
        failed = _failed(fp32, int8, options.gate_max_drop)
    else:
        stem.update(accepted=True, nodes=quantized["stem_nodes"])
    entry = {
        "accepted": not failed,
        "max_drop_allowed": options.gate_max_drop,
        "shards": [str(p) for p in patterns],
        "fp32": fp32,
        "int8": int8,
        "stem": stem,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if failed:
        entry["reason"] = f"int8 loses more than {options.gate_max_drop:g} on: {failed}"
        log.warning("int8 rejected: %s", entry["reason"])
        _remove_int8(directory)
    return entry


def _failed(fp32: dict, int8: dict, max_drop: float) -> dict[str, float]:
    """The metrics int8 loses more than `max_drop` on, with the drop."""
    drops = {
        f"{task}.{metric}": fp32[task][metric] - int8[task].get(metric, float("nan"))
        for task in fp32
        for metric in fp32[task]
        if isinstance(fp32[task][metric], float)
    }
    return {k: round(v, 4) for k, v in drops.items() if not v <= max_drop}


def evaluate_engine(
    directory: Path, precision: str, patterns, *, max_samples: int, split: str = "test"
) -> dict[str, dict[str, float]]:
    """Scores of the export folder's graphs (fp32 or int8) on `split` of `patterns`, per task and metric: the
    samples answered and scored as `biomedgpt eval` does (`eval.runner.score_engine`), with the prompts the
    folder records."""
    from biomedgpt.eval.runner import held_out_samples, resolve_shards, score_engine
    from biomedgpt.serve.ort_engine import OrtEngine

    # The folder being written: its manifest (and the hashes) come after the gate.
    engine = OrtEngine(directory, precision=precision, verify=False)
    shards = resolve_shards(patterns, split=split)
    by_task = held_out_samples(
        shards, split=split, tasks=set(engine.tasks), max_samples=max_samples, with_image=True
    )
    scored, _ = score_engine(engine, by_task)
    return {
        name: {k: float(v) for k, v in entry["fixed"].items() if isinstance(v, (int, float))}
        for name, entry in scored.items()
    }


def _remove_int8(directory: Path) -> None:
    for name in ("encoder", "decoder"):
        (directory / f"{name}.int8.onnx").unlink(missing_ok=True)
