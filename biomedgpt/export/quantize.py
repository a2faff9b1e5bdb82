"""int8 dynamic quantization of the exported graphs, kept only if it costs at most one point on every metric.

ONNX Runtime's `quantize_dynamic` stores MatMul/Gemm weights as int8 and quantizes activations on the fly
(per-tensor). The gate decodes the same held-out samples with the fp32 and the int8 graphs (greedy, the task's
constraint and answer trie, the prompts the folder records, as `biomedgpt eval` does) and compares every metric of every task; when one drops by more
than `gate_max_drop`, the int8 files are deleted and the manifest says why.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def quantize_graphs(directory: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for name in ("encoder", "decoder"):
        proto = onnx.load(str(directory / f"{name}.onnx"))
        # The quantizer re-runs shape inference, which trips over the exporter's intermediate shape
        # annotations around the tied embedding; the graph's own inputs and outputs keep their shapes.
        del proto.graph.value_info[:]
        quantize_dynamic(
            proto,
            str(directory / f"{name}.int8.onnx"),
            weight_type=QuantType.QInt8,
            per_channel=True,
            # The ResNet stem's convolutions stay fp32: ORT has no dynamic int8 Conv kernel worth the loss.
            op_types_to_quantize=["MatMul", "Gemm"],
        )


def quantize_and_gate(directory: Path, run_cfg, options) -> dict[str, Any]:
    """Write the int8 graphs into `directory`, run the gate; returns the manifest's "int8" entry."""
    started = time.perf_counter()
    quantize_graphs(directory)
    patterns = options.gate_shards or (run_cfg.data.val_shards if run_cfg is not None else None)
    if not patterns:
        _remove_int8(directory)
        return {"accepted": False, "reason": "no held-out shards to gate on (pass --gate-shards)"}
    fp32 = evaluate_engine(directory, "fp32", patterns, max_samples=options.gate_max_samples)
    int8 = evaluate_engine(directory, "int8", patterns, max_samples=options.gate_max_samples)
    drops = {
        f"{task}.{metric}": fp32[task][metric] - int8[task].get(metric, float("nan"))
        for task in fp32
        for metric in fp32[task]
        if isinstance(fp32[task][metric], float)
    }
    failed = {k: round(v, 4) for k, v in drops.items() if not v <= options.gate_max_drop}
    entry = {
        "accepted": not failed,
        "max_drop_allowed": options.gate_max_drop,
        "shards": [str(p) for p in patterns],
        "fp32": fp32,
        "int8": int8,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if failed:
        entry["reason"] = f"int8 loses more than {options.gate_max_drop:g} on: {failed}"
        log.warning("int8 rejected: %s", entry["reason"])
        _remove_int8(directory)
    return entry


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
