"""The ONNX Runtime engine: the exported encoder and decoder-step graphs driven by our numpy decoding loop.

No torch: `pip install biomedgpt[serve]` brings onnxruntime, numpy, Pillow and tokenizers only. The graphs and
their input/output names are described in `biomedgpt.model.graphs` and in the export folder's manifest.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from biomedgpt.errors import UserError
from biomedgpt.model.decode_spec import DecodeSpec
from biomedgpt.serve.decoding import decode
from biomedgpt.serve.engine import Engine, EngineLimits

PRECISIONS = ("fp32", "int8")


def graph_files(precision: str) -> dict[str, str]:
    """The encoder and decoder graph file of `precision` in an export folder."""
    suffix = "" if precision == "fp32" else ".int8"
    return {g: f"{g}{suffix}.onnx" for g in ("encoder", "decoder")}


def session_options(num_threads: int | None = None, *, spinning: bool = True):
    """ONNX Runtime session options of the engine's graphs.

    - Every graph optimisation (ORT_ENABLE_ALL): constant folding, Conv+BatchNorm/activation/Add fusion, the
      NCHWc layout for fp32 convolutions, QDQ -> QLinearConv and the NHWC layout for the int8 stem, attention
      and LayerNorm fusions. Done at load (a few seconds); the optimised graph is not written back, since the
      NCHWc and NHWC layouts are chosen for the CPU that loads it.
    - `num_threads` intra-op threads (None: ONNX Runtime's default, one per physical core), one inter-op thread
      and sequential execution: one request batch at a time uses every core.
    - The memory arena and memory patterns (ONNX Runtime's defaults, set here so they are explicit): buffers
      are planned once per input shape and reused.
    - `spinning`: whether idle pool threads spin before they sleep. The encoder's pool should not: it runs
      once per admitted batch, and its threads spinning after the call take the cores from the decoder step
      that follows (on 2 busy cores the encoder alone ran about 1.2-1.5x faster without). The decoder's pool
      runs every step and keeps its threads hot.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if num_threads:
        options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = True
    options.enable_mem_pattern = True
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return options


class OrtEngine(Engine):
    name: ClassVar[str] = "onnxruntime"
    manifest_required: ClassVar[bool] = True  # `biomedgpt export` always writes the sha256 of every file

    def __init__(
        self,
        model_dir: str | Path,
        *,
        limits: EngineLimits | None = None,
        precision: str = "fp32",
        num_threads: int | None = None,
        verify: bool = True,
    ) -> None:
        import onnxruntime as ort

        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision
        model_dir = Path(model_dir)
        paths = {g: model_dir / name for g, name in graph_files(precision).items()}
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            hint = (
                " (export with --int8, and check the int8 gate in manifest.json)"
                if precision == "int8"
                else ""
            )
            raise FileNotFoundError(f"not an ONNX export folder: missing {', '.join(missing)}{hint}")
        super().__init__(model_dir, limits=limits, verify=verify)
        providers = ["CPUExecutionProvider"]
        self.encoder = ort.InferenceSession(
            str(paths["encoder"]), session_options(num_threads, spinning=False), providers=providers
        )
        self.decoder = ort.InferenceSession(
            str(paths["decoder"]), session_options(num_threads), providers=providers
        )
        expected = {"decoder": "cache_lengths", "encoder": "patch_masks"}
        for graph, name in expected.items():
            session = self.decoder if graph == "decoder" else self.encoder
            if name not in {i.name for i in session.get_inputs()}:
                raise UserError(
                    f"{paths[graph]} is an export of an earlier biomedgpt (its {graph} graph has no {name!r} "
                    f"input); export the checkpoint again: biomedgpt export --checkpoint CKPT --out {self.model_dir}"
                    " --overwrite"
                )
        config = json.loads((self.model_dir / "config.json").read_text())
        self.num_layers = config["decoder_layers"]
        self.num_heads = config["decoder_attention_heads"]
        self.head_dim = config["d_model"] // self.num_heads
        self.max_target_positions = config["max_target_positions"]
        self.past_names = [
            f"past_key_values.{i}.{part}.{kv}"
            for i in range(self.num_layers)
            for part in ("decoder", "encoder")
            for kv in ("key", "value")
        ]

    @classmethod
    def model_files(cls, model_dir: Path, *, precision: str = "fp32", **options: Any) -> list[str]:
        return [*super().model_files(model_dir), "config.json", *graph_files(precision).values()]

    def _file_options(self) -> dict[str, Any]:
        return {"precision": self.precision}

    def encode(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        pixels: np.ndarray,
        patch_masks: np.ndarray | None = None,
    ) -> list[np.ndarray]:
        """-> [encoder_attention_bias, cross_position_keys, present.{i}.encoder.key/value ...]."""
        return self.encoder.run(
            None,
            {
                "input_ids": input_ids,
                "attention_mask": attention_mask,
                "patch_images": np.ascontiguousarray(pixels, dtype=np.float32),  # no copy when it is already
                "patch_masks": np.ones(len(input_ids), dtype=bool) if patch_masks is None else patch_masks,
            },
        )

    def decode_step(
        self,
        input_ids: np.ndarray,
        cache_lengths: np.ndarray,
        encoder_attention_bias: np.ndarray,
        cross_position_keys: np.ndarray,
        past: list[np.ndarray],
    ) -> list[np.ndarray]:
        """One step of the decoder graph over rows of any lengths (the scheduler's `StepModel`)."""
        feeds = {
            "input_ids": input_ids.astype(np.int64, copy=False),
            "cache_lengths": cache_lengths,
            "encoder_attention_bias": encoder_attention_bias,
            "cross_position_keys": cross_position_keys,
            **dict(zip(self.past_names, past)),
        }
        return self.decoder.run(None, feeds)

    def _decode(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, pixels: np.ndarray, spec: DecodeSpec
    ) -> tuple[np.ndarray, np.ndarray]:
        bias, position_keys, *cross = self.encode(input_ids, attention_mask, pixels)
        if spec.num_beams > 1:
            bias = np.repeat(bias, spec.num_beams, axis=0)
            cross = [np.repeat(c, spec.num_beams, axis=0) for c in cross]
        step = OrtDecoderStep(self, bias, position_keys, cross)
        return decode(
            step, batch=input_ids.shape[0], spec=spec, ids=self.special_ids, vocab_size=self.vocab_size
        )


class OrtDecoderStep:
    """One decoder session call per step over a fixed batch whose rows grow together: each step's new keys and
    values are appended to the self-attention cache (the server's `scheduler` keeps slots of its own instead)."""

    def __init__(
        self, engine: OrtEngine, bias: np.ndarray, position_keys: np.ndarray, cross: list[np.ndarray]
    ) -> None:
        self.session = engine.decoder
        rows = bias.shape[0]
        empty = np.zeros((rows, engine.num_heads, 0, engine.head_dim), dtype=np.float32)
        self.feeds: dict[str, np.ndarray] = {
            "encoder_attention_bias": bias,
            "cross_position_keys": position_keys,
        }
        self.self_names = []
        for i in range(engine.num_layers):
            key, value = f"past_key_values.{i}.decoder.key", f"past_key_values.{i}.decoder.value"
            self.self_names += [key, value]
            self.feeds[key] = empty
            self.feeds[value] = empty
            self.feeds[f"past_key_values.{i}.encoder.key"] = cross[2 * i]
            self.feeds[f"past_key_values.{i}.encoder.value"] = cross[2 * i + 1]

    def step(self, tokens: np.ndarray) -> np.ndarray:
        length = self.feeds[self.self_names[0]].shape[2]
        lengths = np.full(tokens.shape[0], length, dtype=np.int64)
        feeds = {**self.feeds, "input_ids": tokens.astype(np.int64), "cache_lengths": lengths}
        logits, *new = self.session.run(None, feeds)
        for name, value in zip(self.self_names, new):
            self.feeds[name] = np.concatenate([self.feeds[name], value], axis=2)
        return logits

    def reorder(self, rows: np.ndarray) -> None:
        # Beams only move within their own sample, whose encoder rows are identical: only the self cache moves.
        for name in self.self_names:
            self.feeds[name] = np.take(self.feeds[name], rows, axis=0)
