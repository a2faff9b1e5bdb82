"""`biomedgpt export` end to end on a tiny model: graphs, manifest, parity, the ORT engine against the PyTorch
engine (greedy, beam, trie, every served task), int8 with its gate, torch-free serving, and atomic writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def exported(exported_model_dir):
    return exported_model_dir, json.loads((exported_model_dir / "manifest.json").read_text())


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray((rng.random((48 + 16 * i, 72, 3)) * 255).astype("uint8")) for i in range(n)]


def test_export_folder_describes_itself(exported):
    import onnx

    from biomedgpt.hashing import sha256_file

    out, manifest = exported
    for name, digest in manifest["files"].items():
        assert sha256_file(out / name) == digest, name
    for graph in ("encoder", "decoder"):
        onnx.checker.check_model(str(out / f"{graph}.onnx"), full_check=True)
    layers = manifest["config"]["decoder_layers"]
    decoder_inputs = [i["name"] for i in manifest["graphs"]["decoder"]["inputs"]]
    assert decoder_inputs[:4] == [
        "input_ids",
        "cache_lengths",
        "encoder_attention_bias",
        "cross_position_keys",
    ]
    decoder_outputs = [o["name"] for o in manifest["graphs"]["decoder"]["outputs"]]
    assert decoder_outputs[:3] == ["logits", "new.0.decoder.key", "new.0.decoder.value"]
    assert f"past_key_values.{layers - 1}.encoder.value" in decoder_inputs
    past = next(
        i for i in manifest["graphs"]["decoder"]["inputs"] if i["name"] == "past_key_values.0.decoder.key"
    )
    assert isinstance(past["shape"][0], str) and isinstance(
        past["shape"][2], str
    )  # batch and past length dynamic
    pixels = next(i for i in manifest["graphs"]["encoder"]["inputs"] if i["name"] == "patch_images")
    assert all(isinstance(d, str) for d in (pixels["shape"][0], pixels["shape"][2], pixels["shape"][3]))
    assert json.loads((out / "answers.json").read_text())["vqa"] == ["yes", "no", "left lung"]


def test_parity_at_two_image_and_batch_sizes(exported):
    _, manifest = exported
    cases = manifest["parity"]["cases"]
    assert {c["batch"] for c in cases} == {1, 3} and len({c["image_size"] for c in cases}) == 2
    for case in cases:
        assert case["encoder_max_abs_diff"] <= 1e-4 and case["logits_max_abs_diff"] <= 1e-4
        assert case["greedy_identical"]


@pytest.mark.parametrize("beams", [1, 3])
def test_ort_engine_matches_torch_engine_on_every_task(exported, served_model_dir, beams):
    from biomedgpt.serve.engines import load_engine
    from biomedgpt.serve.types import TaskRequest

    ort_engine = load_engine(exported[0], engine="onnxruntime")
    torch_engine = load_engine(served_model_dir, engine="torch")
    fields = {
        "vqa": {"question": "is there an effusion?"},
        "grounding": {"text": "the nodule"},
        "segmentation": {"structure": "lung"},
    }
    for task in ort_engine.tasks:
        requests = [
            TaskRequest(
                task=task, image=image, fields=fields.get(task, {}), num_beams=beams, max_new_tokens=24
            )
            for image in _images(3)
        ]
        got = ort_engine.run([ort_engine.prepare(r) for r in requests])
        want = torch_engine.run([torch_engine.prepare(r) for r in requests])
        assert [g.tokens for g in got] == [w.tokens for w in want], task
        if task in ("vqa", "classification"):  # the trie keeps answers in the list
            key = "answer" if task == "vqa" else "label"
            assert all(g.output[key] in ort_engine.answers[task] for g in got)


@pytest.fixture(scope="module")
def gate_shards(tmp_path_factory):
    """Synthetic shards (train, val and test splits) for the int8 gate and the stem's calibration."""
    out = tmp_path_factory.mktemp("gate") / "shards"
    subprocess.run(
        [sys.executable, "-m", "biomedgpt.cli", "shard", "--synthetic", "48", "--out", str(out)],
        check=True,
        capture_output=True,
    )
    return out


def _stem_convs_quantized(path: Path) -> tuple[int, int]:
    """(stem convolutions, those whose input and weight come through DequantizeLinear) of an encoder graph."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {o: n for n in graph.node for o in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    quantized = [
        n
        for n in convs
        if all(producer.get(i) and producer[i].op_type == "DequantizeLinear" for i in n.input[:2])
    ]
    return len(convs), len(quantized)


def test_int8_graphs_pass_the_gate_on_held_out_shards(served_model_dir, gate_shards, tmp_path):
    out = tmp_path / "int8"
    from biomedgpt.export.onnx_export import ExportOptions, export_checkpoint

    manifest = export_checkpoint(
        served_model_dir,
        out,
        ExportOptions(int8=True, gate_shards=[str(gate_shards)], gate_max_samples=8),
    )
    gate = manifest["int8"]
    assert set(gate["fp32"]) == set(gate["int8"]) and gate["fp32"]
    stem = gate["stem"]  # the ResNet stem was quantized, calibrated on the train split's images
    assert stem["calibration"]["split"] == "train" and stem["calibration"]["images"] > 0
    assert isinstance(stem["accepted"], bool) and (stem["accepted"] or "reason" in stem)
    if gate["accepted"]:
        assert (out / "decoder.int8.onnx").is_file()
        assert {"encoder.int8.onnx", "decoder.int8.onnx"} <= set(manifest["files"])
        convs, quantized = _stem_convs_quantized(out / "encoder.int8.onnx")
        assert convs and quantized == (convs if stem["accepted"] else 0)
        from biomedgpt.serve.engines import load_engine
        from biomedgpt.serve.types import TaskRequest

        engine = load_engine(out, engine="onnxruntime", precision="int8")
        assert engine(TaskRequest(task="caption", image=_images(1)[0], max_new_tokens=8)).tokens
    else:
        assert not (out / "decoder.int8.onnx").exists() and "reason" in gate


def test_an_int8_stem_the_gate_rejects_goes_back_to_fp32_and_a_rejected_int8_is_deleted(
    served_model_dir, gate_shards, tmp_path
):
    """A gate no int8 graph can pass (every metric must rise): the int8 stem is rejected, int8 is gated again
    with the stem in fp32, rejected too, and its files are deleted; the manifest says why at each step."""
    from biomedgpt.export.onnx_export import ExportOptions, export_checkpoint

    out = tmp_path / "int8"
    options = ExportOptions(int8=True, gate_shards=[str(gate_shards)], gate_max_samples=4, gate_max_drop=-2.0)
    manifest = export_checkpoint(served_model_dir, out, options)
    gate = manifest["int8"]
    assert gate["accepted"] is False and "int8 loses more than -2" in gate["reason"]
    stem = gate["stem"]
    assert stem["accepted"] is False and stem["reason"].startswith(
        "with the int8 stem, int8 loses more than -2"
    )
    assert set(stem["int8"]) == set(gate["fp32"])  # the scores with the int8 stem, kept for the record
    assert not list(out.glob("*.int8.onnx")) and not [f for f in manifest["files"] if ".int8." in f]


def test_the_int8_stem_is_quantized_convolutions_close_to_fp32(exported, tmp_path):
    """`quantize_graphs` with calibration feeds: every stem convolution in QDQ form, which ONNX Runtime runs as
    QLinearConv; the encoder's outputs stay close to fp32's; the engine answers from the int8 graphs."""
    import shutil

    import onnxruntime as ort

    from biomedgpt.export.quantize import encoder_feeds, quantize_graphs
    from biomedgpt.serve.ort_engine import OrtEngine, session_options
    from biomedgpt.serve.types import TaskRequest

    folder = tmp_path / "export"
    shutil.copytree(exported[0], folder)
    fp32 = OrtEngine(folder, verify=False)
    requests = [TaskRequest(task="caption", image=image) for image in _images(4, seed=5)]
    done = quantize_graphs(folder, calibration=encoder_feeds(fp32, requests))
    assert done["stem"] == "int8" and done["stem_nodes"] > 0
    convs, quantized = _stem_convs_quantized(folder / "encoder.int8.onnx")
    assert convs > 0 and quantized == convs
    options = session_options(1)
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(folder / "encoder.int8.onnx"), options, providers=["CPUExecutionProvider"])
    import onnx

    optimized = onnx.load(str(tmp_path / "optimized.onnx"), load_external_data=False)
    assert sum(n.op_type == "QLinearConv" for n in optimized.graph.node) == convs

    int8 = OrtEngine(folder, precision="int8", verify=False)
    item = fp32.prepare(TaskRequest(task="caption", image=_images(1, seed=9)[0]))
    ids = np.asarray([item.prompt_ids], np.int64)
    want = fp32.encode(ids, np.ones_like(ids), item.pixels[None])
    got = int8.encode(ids, np.ones_like(ids), item.pixels[None])
    # Cross-attention keys and values of every decoder layer. The largest relative error on this random model is
    # about 10 % of the norm: 0.098 with torch.export's graph, 0.101 with the TorchScript exporter's (the same
    # convolutions; torch.export leaves one batch norm unfolded).
    for w, g in zip(want[2:], got[2:]):
        assert np.linalg.norm(g - w) <= 0.12 * np.linalg.norm(w), np.linalg.norm(g - w) / np.linalg.norm(w)
    assert int8(TaskRequest(task="caption", image=_images(1)[0], max_new_tokens=8)).tokens


def test_a_batch_of_requests_runs_one_encoder_call(exported):
    """The scheduler runs the encoders of the requests admitted at one step together: 8 requests, one call of
    batch 8 (`Engine.run`, as the benchmark's whole requests and the server's arrivals)."""
    from biomedgpt.serve.engines import load_engine
    from biomedgpt.serve.types import TaskRequest

    engine = load_engine(exported[0], engine="onnxruntime")
    batches = []
    encode = engine.encode

    def counted(input_ids, *args, **kwargs):
        batches.append(len(input_ids))
        return encode(input_ids, *args, **kwargs)

    engine.encode = counted
    requests = [TaskRequest(task="caption", image=image, max_new_tokens=6) for image in _images(8)]
    results = engine.run([engine.prepare(r) for r in requests])
    assert batches == [8] and len(results) == 8


def test_serving_an_export_needs_no_torch(exported):
    """The ORT engine with torch made unimportable: what `pip install biomedgpt[serve]` gives."""
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        "import numpy as np; from PIL import Image\n"
        "from biomedgpt.serve.engines import load_engine; from biomedgpt.serve.types import TaskRequest\n"
        f"e = load_engine({str(exported[0])!r})\n"
        "img = Image.fromarray(np.full((40, 40, 3), 120, np.uint8))\n"
        "r = e(TaskRequest(task='vqa', image=img, fields={'question': 'is it normal?'}))\n"
        "print(r.output['answer'])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in ("yes", "no", "left lung")


def test_export_refuses_to_overwrite_and_keeps_the_old_folder(exported, served_model_dir):
    from biomedgpt.export.onnx_export import export_checkpoint

    out, manifest = exported
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_checkpoint(served_model_dir, out)
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left behind


def test_export_cli_names_a_missing_checkpoint(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "biomedgpt.cli",
            "export",
            "--checkpoint",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "nope" in result.stderr and not (tmp_path / "o").exists()
