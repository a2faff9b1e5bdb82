"""`biomedgpt export`: a checkpoint folder -> an export folder the ONNX Runtime engine serves.

    encoder.onnx, decoder.onnx        the two graphs of `biomedgpt.model.graphs` (fp32)
    encoder.int8.onnx, decoder.int8.onnx   with --int8: int8 MatMul/Gemm (dynamic) and ResNet stem (static,
                                      calibrated), kept only if the gate passes (`biomedgpt.export.quantize`)
    config.json, tokenizer.json, tokenizer_config.json, preprocessor_config.json
    serving.json                      model id, default decoding settings, and what the checkpoint records:
                                      trained tasks, the prompt of each
    answers.json                      closed-set answers per task (TRAIN split), copied from the checkpoint
    baselines.json                    trivial baselines per task (TRAIN split), copied when the checkpoint has them
    manifest.json                     graphs' inputs/outputs, opset, sha256 of every file, versions, parity, gate

Exported with `torch.onnx.export` (the TorchScript exporter by default, 16x faster than torch.export here; see
`EXPORTERS`) with batch, text, image, past and source axes dynamic; checked with `onnx.checker` (full check) and against
PyTorch (`biomedgpt.export.parity`) before the folder is moved into place. The folder is written next to its
destination and renamed at the end, so a failed export never replaces a good one. What training recorded about its
data (answers, baselines, prompts) is copied from the checkpoint folder: the training shards are never read here.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

OPSET = 18
GRAPHS = ("encoder", "decoder")
COPIED_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "preprocessor_config.json",
)


@dataclass(kw_only=True)
class ExportOptions:
    int8: bool = False
    """Also write int8 graphs (`biomedgpt.export.quantize`), kept only when the gate passes."""
    int8_stem: bool = True
    """With `int8`: also quantize the encoder's ResNet stem (static, calibrated on the gate shards' images); it
    goes back to fp32 when the gate rejects it."""
    calibration_images: int = 32
    """Images (train split of the gate shards, else val, else test) that calibrate the int8 stem."""
    gate_shards: list[str] | None = None
    """Held-out shards the int8 gate evaluates on (default: the checkpoint's data.val_shards)."""
    gate_max_samples: int = 64
    """Samples per task in the int8 gate."""
    gate_max_drop: float = 0.01
    """Largest drop of any metric (as a fraction: 0.01 = 1 point) int8 may show against fp32."""
    parity_tolerance: float = 1e-4
    exporter: str = "torchscript"
    """`torch.onnx.export`'s exporter: "torchscript" (fast) or "dynamo" (torch.export); see `EXPORTERS`."""
    overwrite: bool = False


def export_checkpoint(
    checkpoint: str | Path, out_dir: str | Path, options: ExportOptions | None = None
) -> dict[str, Any]:
    """Export, check and (optionally) quantize; returns the manifest written to `out_dir/manifest.json`."""
    import torch

    from biomedgpt.model.folders import resolve_checkpoint
    from biomedgpt.model.processing import load_pretrained

    options = options or ExportOptions()
    source = resolve_checkpoint(checkpoint)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not options.overwrite:
        raise FileExistsError(f"{out_dir} exists and is not empty; pass --overwrite to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    model, _ = load_pretrained(source)
    model = model.float().eval()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.", dir=out_dir.parent) as tmp:
        work = Path(tmp)
        with torch.no_grad():
            export_graphs(model, work, exporter=options.exporter)
        check_graphs(work)
        for name in COPIED_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, work / name)
        run_cfg = _run_config(source)
        serving = serving_metadata(model, run_cfg, out_dir.name)
        if (source / "serving.json").is_file():  # what the model folder records (tasks, prompts) is kept
            recorded = json.loads((source / "serving.json").read_text())
            serving.update({k: recorded[k] for k in RECORDED_SERVING_KEYS if k in recorded})
        (work / "serving.json").write_text(json.dumps(serving, indent=2) + "\n")
        copy_recorded_files(source, work, tasks=serving["tasks"])
        from biomedgpt.export.parity import check_parity

        parity = check_parity(model, work, tolerance=options.parity_tolerance)
        manifest = build_manifest(work, model=model, source=source, parity=parity)
        if options.int8:
            from biomedgpt.export.quantize import quantize_and_gate

            manifest["int8"] = quantize_and_gate(work, run_cfg, options)
        manifest["seconds"] = round(time.perf_counter() - started, 1)
        _write_manifest(work, manifest)
        manifest = json.loads(
            (work / "manifest.json").read_text()
        )  # JSON-native: what a reader of the file gets
        _replace_dir(work, out_dir)
    return manifest


EXPORTERS = ("torchscript", "dynamo")
"""`torch.onnx.export`'s two exporters, the default first. Both give graphs that pass the same parity check;
"torchscript" (the default) traces the tiny model in about 2.5 s of one core where torch.export takes about 44 s
(16x; measured on the 2-core AMD EPYC, both graphs). The TorchScript exporter is deprecated since torch 2.9;
"dynamo" stays here, tested against it, for the torch that drops it."""


def export_graphs(model, directory: Path, *, opset: int = OPSET, exporter: str = "torchscript") -> None:
    """Write encoder.onnx and decoder.onnx for `model` (fp32, eval mode) into `directory`.

    Batch, text, image height and width, past and source axes are dynamic; `exporter` picks the exporter
    (`EXPORTERS`)."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from biomedgpt.model.graphs import DecoderStepGraph, EncoderGraph, past_names, present_names

    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    config = model.config
    layers, heads = config.decoder_layers, config.decoder_attention_heads
    head_dim = config.d_model // heads
    size = config.image_size

    input_ids = torch.full((2, 5), 4, dtype=torch.long)
    attention_mask = torch.ones_like(input_ids)
    pixels = torch.zeros(2, 3, size, size)
    patch_masks = torch.tensor([True, False])  # an image and a text-only sample
    encoder = EncoderGraph(model).eval()
    decoder = DecoderStepGraph(model).eval()
    # One eager pass fills the position tables' caches (`model.positions`): traced cold by torch.export, their
    # numpy conversion fails and it retries in strict mode, which costs more than the whole non-strict trace.
    with torch.no_grad():
        encoder(input_ids, attention_mask, pixels, patch_masks)
    # Axis names per input: (input name, {axis: name}).
    encoder_axes = {
        "input_ids": {0: "batch", 1: "text_len"},
        "attention_mask": {0: "batch", 1: "text_len"},
        "patch_images": {0: "batch", 2: "height", 3: "width"},
        "patch_masks": {0: "batch"},
    }
    names = past_names(layers)
    decoder_axes = {
        "input_ids": {0: "batch"},
        "cache_lengths": {0: "batch"},
        "encoder_attention_bias": {0: "batch", 1: "source_len"},
        "cross_position_keys": {2: "source_len"},
        **{n: {0: "batch", 2: "past_len" if ".decoder." in n else "source_len"} for n in names},
    }
    # SDPA's math kernel during tracing: its output strides are the ones the ONNX decomposition produces
    # (the default kernel's strides make a later view fail to decompose).
    with sdpa_kernel(SDPBackend.MATH):
        _export(
            encoder,
            (input_ids, attention_mask, pixels, patch_masks),
            directory / "encoder.onnx",
            axes=encoder_axes,
            output_names=["encoder_attention_bias", "cross_position_keys", *present_names(layers, "encoder")],
            config=config,
            opset=opset,
            exporter=exporter,
        )
        bias, position_keys, *cross = encoder(input_ids, attention_mask, pixels, patch_masks)
        past_values = []
        for i in range(layers):
            past_values += [
                torch.zeros(2, heads, 3, head_dim),
                torch.zeros(2, heads, 3, head_dim),
                cross[2 * i],
                cross[2 * i + 1],
            ]
        cache_lengths = torch.tensor([3, 1])  # rows of different lengths, as under continuous batching
        _export(
            decoder,
            (input_ids[:, :1], cache_lengths, bias, position_keys, *past_values),
            directory / "decoder.onnx",
            axes=decoder_axes,
            output_names=["logits", *present_names(layers, "decoder", prefix="new")],
            config=config,
            opset=opset,
            exporter=exporter,
        )


def _export(
    module, args: tuple, path: Path, *, axes: dict, output_names: list[str], config, opset: int, exporter: str
):
    """One graph through `exporter`; `axes` maps each input name (in argument order) to its dynamic axes."""
    import torch

    if exporter == "torchscript":
        options = {
            "dynamic_axes": axes,
            "training": torch.onnx.TrainingMode.EVAL,  # batch norms folded into the convolutions, as torch.export does
        }
    else:
        options = {"dynamic_shapes": _dynamic_shapes(axes, config), "external_data": False, "verbose": False}
    torch.onnx.export(
        module,
        args,
        str(path),
        dynamo=exporter == "dynamo",
        input_names=list(axes),
        output_names=output_names,
        opset_version=opset,
        **options,
    )


def _dynamic_shapes(axes: dict[str, dict[int, str]], config) -> dict[str, Any]:
    """torch.export's `dynamic_shapes` for `axes`: a `Dim` per axis name, with the bounds the model allows (image
    sides in whole 16-pixel patches); the KV inputs go together under the decoder's `past` argument."""
    from torch.export import Dim

    grid_h, grid_w = Dim("grid_h", min=2, max=128), Dim("grid_w", min=2, max=128)
    dims = {
        "batch": Dim("batch", min=1, max=1024),
        "text_len": Dim("text_len", min=2, max=config.max_source_positions),
        "height": 16 * grid_h,
        "width": 16 * grid_w,
        "source_len": Dim("source_len", min=2, max=config.max_source_positions + 128 * 128),
        "past_len": Dim("past_len", min=0, max=config.max_target_positions),
    }
    shapes = {name: {axis: dims[d] for axis, d in spec.items()} for name, spec in axes.items()}
    past = [shapes.pop(name) for name in list(shapes) if name.startswith("past_key_values.")]
    return {**shapes, "past": tuple(past)} if past else shapes


def check_graphs(directory: Path, names: tuple[str, ...] = GRAPHS) -> None:
    """onnx.checker's full check (type and shape inference included) of every graph in `directory`."""
    import onnx

    for name in names:
        onnx.checker.check_model(str(directory / f"{name}.onnx"), full_check=True)


# serving.json entries a model folder records when it is made (training or `biomedgpt import`), copied as is.
RECORDED_SERVING_KEYS = ("tasks", "prompts", "decoder_prefix", "generation", "source")
# Files a model folder records when it is made (training: from its TRAIN split; `biomedgpt import`), copied as is.
RECORDED_FILES = ("answers.json", "baselines.json")


def serving_metadata(model, run_cfg, model_id: str) -> dict[str, Any]:
    """serving.json: what the server needs beyond the graphs."""
    from biomedgpt.serve.types import SERVED_TASKS

    generation: dict[str, Any] = {}
    tasks: list[str] = list(SERVED_TASKS)
    if run_cfg is not None:
        gen = run_cfg.generation
        generation = {
            "max_new_tokens": gen.max_new_tokens,
            "num_beams": gen.num_beams,
            "length_penalty": gen.length_penalty,
            "no_repeat_ngram_size": gen.no_repeat_ngram_size,
        }
        trained = [t for t, w in (run_cfg.data.mixture or {}).items() if w > 0]
        if trained:
            tasks = [t for t in SERVED_TASKS if t in trained]
    return {
        "model_id": model_id,
        "arch": getattr(model.config, "arch", None),
        "tasks": tasks,
        "generation": generation,
        "max_target_positions": model.config.max_target_positions,
        "image_size": model.config.image_size,
    }


def copy_recorded_files(source: Path, work: Path, *, tasks: list[str]) -> None:
    """Copy answers.json and baselines.json as the checkpoint recorded them (training writes them from its TRAIN
    split). A checkpoint without answers.json (written before training recorded them) is exported without one:
    its closed-set tasks decode open-ended, and a warning says so."""
    from biomedgpt.tasks import get_task

    for name in RECORDED_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, work / name)
    closed = [t for t in tasks if get_task(t).closed_set]
    if closed and not (source / "answers.json").is_file():
        log.warning(
            "%s has no answers.json (written before training recorded its closed-set answers, or trained on "
            "shards it could not read): "
            "%s will decode open-ended in the export; retrain, or add the TRAIN answers to the checkpoint folder "
            "as answers.json ({task: [answer, ...]}) and export again",
            source,
            ", ".join(closed),
        )


def build_manifest(directory: Path, *, model, source: Path, parity: dict[str, Any]) -> dict[str, Any]:
    import onnx
    import onnxruntime
    import torch

    from biomedgpt import __version__

    graphs = {}
    for name in GRAPHS:
        proto = onnx.load(str(directory / f"{name}.onnx"), load_external_data=False)
        graphs[name] = {
            "file": f"{name}.onnx",
            "inputs": [_value_info(v) for v in proto.graph.input],
            "outputs": [_value_info(v) for v in proto.graph.output],
            "opset": next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
        }
    return {
        "format": "biomedgpt-onnx-v1",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source_checkpoint": str(source),
        "versions": {
            "biomedgpt": __version__,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        "config": model.config.to_dict(),
        "graphs": graphs,
        "parity": parity,
        # "files" (sha256 of every file) is added by `_write_manifest`, after the int8 graphs exist.
    }


def _value_info(value) -> dict[str, Any]:
    import onnx

    tensor = value.type.tensor_type
    shape = [d.dim_param or d.dim_value for d in tensor.shape.dim]
    return {
        "name": value.name,
        "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name,
        "shape": shape,
    }


def _write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    from biomedgpt.hashing import sha256_file

    manifest["files"] = {
        p.name: sha256_file(p)
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != "manifest.json"
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _run_config(source: Path):
    from biomedgpt.config import load_config
    from biomedgpt.run_config import RunConfig

    path = source / "run_config.yaml"
    return load_config(RunConfig, [path]) if path.is_file() else None


def _replace_dir(new: Path, target: Path) -> None:
    """Move `new` to `target`; an existing `target` is swapped out first and removed only after the move."""
    backup = None
    if target.exists():
        backup = target.with_name(f".{target.name}.old-{int(time.time())}")
        target.rename(backup)
    new.rename(target)
    new.mkdir()  # TemporaryDirectory removes its path at exit: give it an empty one
    if backup is not None:
        shutil.rmtree(backup)
