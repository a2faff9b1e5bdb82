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


def test_int8_graphs_pass_the_gate_on_held_out_shards(served_model_dir, tmp_path):
    out = tmp_path / "int8"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "biomedgpt.cli",
            "shard",
            "--synthetic",
            "48",
            "--out",
            str(tmp_path / "shards"),
        ],
        check=True,
        capture_output=True,
    )
    from biomedgpt.export.onnx_export import ExportOptions, export_checkpoint

    manifest = export_checkpoint(
        served_model_dir,
        out,
        ExportOptions(int8=True, gate_shards=[str(tmp_path / "shards")], gate_max_samples=8),
    )
    gate = manifest["int8"]
    assert set(gate["fp32"]) == set(gate["int8"]) and gate["fp32"]
    if gate["accepted"]:
        assert (out / "decoder.int8.onnx").is_file()
        from biomedgpt.serve.engines import load_engine
        from biomedgpt.serve.types import TaskRequest

        engine = load_engine(out, engine="onnxruntime", precision="int8")
        assert engine(TaskRequest(task="caption", image=_images(1)[0], max_new_tokens=8)).tokens
    else:
        assert not (out / "decoder.int8.onnx").exists() and "reason" in gate


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
