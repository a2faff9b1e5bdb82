"""An imported OFA/BiomedGPT checkpoint runs on the whole stack: eval, export (parity), both serving engines with
the folder's own prompts and answer trie, and fine-tuning from it (`model.init_from`), in OFA's vocabulary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from biomedgpt import cli
from tests.ofa_fixtures import (
    ofa_options,
    ofa_state_dict,
    random_ofa_model,
    write_bpe_dir,
    write_fairseq_checkpoint,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ANSWERS = ["yes", "no", "left lung", "the whale"]


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    from biomedgpt.tokenization.ofa_bpe import build_ofa_tokenizer

    work = tmp_path_factory.mktemp("ofa")
    bpe = write_bpe_dir(work / "bpe")
    model = random_ofa_model(vocab_size=len(build_ofa_tokenizer(bpe)), seed=4)
    # BiomedGPT's VQA-RAD recipe: the decoder reads the question before the answer (`--prompt-type prev_output`).
    ckpt = write_fairseq_checkpoint(
        work / "vqa.pt", ofa_state_dict(model), options=ofa_options(), task={"prompt_type": "prev_output"}
    )
    (work / "ans2label.json").write_text(json.dumps({a: i for i, a in enumerate(ANSWERS)}))
    args = ["import", str(ckpt), "--out", str(work / "biomedgpt-vqa"), "--bpe-dir", str(bpe)]
    assert cli.main([*args, "--answers", str(work / "ans2label.json")]) == 0
    return work / "biomedgpt-vqa"


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    assert (
        cli.main(
            [
                "shard",
                "--synthetic",
                "240",
                "--seed",
                "3",
                "--out",
                str(out),
                "--image-size",
                "64",
                "--no-progress",
            ]
        )
        == 0
    )
    return out


def _requests():
    from biomedgpt.serve.types import TaskRequest

    rng = np.random.default_rng(0)
    images = [Image.fromarray((rng.random((64 + 16 * i, 80, 3)) * 255).astype("uint8")) for i in range(3)]
    questions = ["is there a lesion", "what is this?", "where is it"]
    return [TaskRequest(task="vqa", image=im, fields={"question": q}) for im, q in zip(images, questions)]


def test_eval_export_and_both_engines_serve_the_imported_folder(imported, shards, tmp_path, capsys):
    from biomedgpt.export.onnx_export import ExportOptions, export_checkpoint
    from biomedgpt.serve.engines import load_engine

    code = cli.main(
        [
            "eval",
            f"eval.checkpoint={imported}",
            f"eval.shards=[{shards}]",
            f"data.shards=[{shards}]",
            "eval.tasks=[vqa]",
            "eval.max_samples=3",
            "generation.max_new_tokens=6",
            f"eval.output_dir={tmp_path / 'eval'}",
            "--json",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= report["tasks"]["vqa"]["fixed"]["accuracy"] <= 1.0

    manifest = export_checkpoint(imported, tmp_path / "onnx", ExportOptions())
    assert all(case["greedy_identical"] for case in manifest["parity"]["cases"])
    serving = json.loads((tmp_path / "onnx" / "serving.json").read_text())
    assert serving["tasks"] == ["vqa"] and serving["prompts"] == {"vqa": " {question}"}
    assert serving["decoder_prefix"] == {"vqa": "prompt"}
    assert json.loads((tmp_path / "onnx" / "answers.json").read_text()) == {"vqa": ANSWERS}

    ort_engine = load_engine(tmp_path / "onnx", engine="onnxruntime")
    torch_engine = load_engine(imported, engine="torch")
    got = ort_engine.run([ort_engine.prepare(r) for r in _requests()])
    want = torch_engine.run([torch_engine.prepare(r) for r in _requests()])
    assert [g.output for g in got] == [w.output for w in want]
    assert torch_engine.decoder_prefix == ort_engine.decoder_prefix == {"vqa": "prompt"}
    for result in got:
        assert result.output["answer"] in ANSWERS  # decoded over the folder's answer trie


def test_finetune_starts_from_the_imported_folder(imported, shards, tmp_path):
    from safetensors.torch import load_file

    run = tmp_path / "run"
    code = cli.main(
        [
            "finetune",
            "-c",
            str(REPO / "configs" / "quickstart.yaml"),
            f"model.init_from={imported}",
            f"data.shards=[{shards / 'synthetic-train-000000.tar'}]",
            f"data.val_shards=[{shards / 'synthetic-val-000000.tar'}]",
            "data.mixture={vqa: 1.0}",
            "train.max_steps=2",
            "train.ckpt_every=2",
            "train.val_every=2",
            f"train.output_dir={run}",
        ]
    )
    assert code == 0
    final = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    config = json.loads((final / "config.json").read_text())
    assert config["vocab_size"] == json.loads((imported / "config.json").read_text())["vocab_size"]
    before, after = load_file(imported / "model.safetensors"), load_file(final / "model.safetensors")
    key = "model.decoder.layers.0.ffn.fc1.weight"
    assert before[key].shape == after[key].shape and not np.allclose(before[key].numpy(), after[key].numpy())
    assert (final / "tokenizer.json").read_text() == (imported / "tokenizer.json").read_text()
