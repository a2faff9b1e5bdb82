"""`biomedgpt eval` end to end on synthetic shards: every task scored, baselines computed, files written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from biomedgpt import cli
from biomedgpt.data.shards import write_dataset
from biomedgpt.eval.rle import mask_to_rle, rle_to_mask
from biomedgpt.eval.runner import resolve_checkpoint
from biomedgpt.ingest.synthetic import synthetic_samples

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    write_dataset(synthetic_samples(200, seed=3, image_size=64), out, name="synthetic", progress=False)
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, shards):
    """A tiny model folder with what training records next to the weights: answer lists and baselines."""
    from biomedgpt.eval.runner import iter_samples, resolve_shards
    from biomedgpt.model import BiomedGPTConfig, BiomedGPTForConditionalGeneration, BiomedGPTProcessor
    from biomedgpt.tasks import TASKS

    out = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    processor = BiomedGPTProcessor.default(image_size=64)
    config = BiomedGPTConfig.from_arch("tiny", vocab_size=len(processor.tokenizer), image_size=64)
    BiomedGPTForConditionalGeneration(config).save_pretrained(out)
    processor.save_pretrained(out)
    train = list(iter_samples(resolve_shards([shards], split="train"), split="train"))
    answers = {name: task.candidate_answers(train) for name, task in TASKS.items() if task.closed_set}
    baselines = {name: task.fit_baseline(train) for name, task in TASKS.items()}
    (out / "answers.json").write_text(json.dumps(answers))
    (out / "baselines.json").write_text(json.dumps({k: v for k, v in baselines.items() if v is not None}))
    return out


def test_eval_scores_tasks_with_baselines_and_writes_reports(model_dir, shards, tmp_path, capsys):
    out = tmp_path / "eval"
    code = cli.main(
        [
            "eval",
            f"eval.checkpoint={model_dir}",
            f"eval.shards=[{shards}]",
            "eval.tasks=[vqa,classification,caption,grounding,segmentation]",
            "eval.max_samples=4",
            "generation.max_new_tokens=8",
            f"eval.output_dir={out}",
            "--json",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report["tasks"]) == {"vqa", "classification", "caption", "grounding", "segmentation"}
    for name in ("vqa", "classification"):
        result = report["tasks"][name]
        assert {"fixed", "eval"} <= set(result) and 0.0 <= result["fixed"]["accuracy"] <= 1.0
        assert result["answer_list_size"] >= 1
        assert 0.0 <= result["baseline"]["accuracy"] <= 1.0  # the majority answer, scored on the same samples
    assert "empty_mask" in report["tasks"]["segmentation"]["baseline"]
    assert json.loads((out / "report.json").read_text())["tasks"].keys() == report["tasks"].keys()
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert {r["prompt_mode"] for r in rows} == {"fixed", "eval"}
    assert any(r["task"] == "segmentation" and "counts" in r["reference"] for r in rows)


def test_resolve_checkpoint_follows_latest(tmp_path, model_dir):
    root = tmp_path / "run" / "checkpoints"
    (root / "step-00000002").mkdir(parents=True)
    for f in model_dir.iterdir():
        (root / "step-00000002" / f.name).write_bytes(f.read_bytes())
    (root / "latest").write_text("step-00000002\n")
    assert resolve_checkpoint(tmp_path / "run") == root / "step-00000002"
    with pytest.raises(FileNotFoundError, match="neither a model folder"):
        resolve_checkpoint(tmp_path)


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (16, 3)])
def test_rle_round_trip(shape):
    rng = np.random.default_rng(0)
    for p in (0.0, 0.4, 1.0):
        mask = rng.random(shape) < p
        assert np.array_equal(rle_to_mask(mask_to_rle(mask)), mask)
