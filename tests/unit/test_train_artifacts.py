"""What a checkpoint records about its training data (`biomedgpt.train.artifacts`), from real synthetic shards:
the same answer lists and baselines as fully decoded TRAIN samples, without decoding a pixel; remote shards give a
warning and only what the config says."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from biomedgpt import cli
from biomedgpt.config import load_config
from biomedgpt.run_config import RunConfig
from biomedgpt.tasks import get_task
from biomedgpt.train.artifacts import compute_artifacts, read_train_samples

QUICKSTART = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    argv = ["shard", "--synthetic", "60", "--out", str(out), "--image-size", "64", "--no-progress"]
    assert cli.main(argv) == 0
    return out


def config(*overrides: str) -> RunConfig:
    return load_config(RunConfig, [QUICKSTART], list(overrides))


def test_the_recorded_files_equal_those_of_fully_decoded_train_samples(shards):
    from biomedgpt.eval.runner import iter_samples, resolve_shards

    docs = compute_artifacts(config(f"data.shards=[{shards}]"))
    train = list(iter_samples(resolve_shards([str(shards)], split="train"), split="train"))
    tasks = sorted({s.task for s in train})
    assert docs["serving.json"] == {"tasks": tasks, "prompts": {t: get_task(t).prompt for t in tasks}}
    closed = [t for t in tasks if get_task(t).closed_set]
    assert closed and docs["answers.json"] == {t: get_task(t).candidate_answers(train) for t in closed}
    baselines = {t: get_task(t).fit_baseline([s for s in train if s.task == t]) for t in tasks}
    assert docs["baselines.json"] == json.loads(
        json.dumps({t: b for t, b in baselines.items() if b is not None})
    )
    assert {"vqa", "grounding", "segmentation"} <= set(docs["baselines.json"])


def test_pixels_are_not_decoded_and_masks_only_where_a_task_uses_them(shards):
    from biomedgpt.eval.runner import iter_samples

    shard = next(shards.glob("*-train-*.tar"))
    samples, seen = read_train_samples([str(shard)], tasks=None)
    assert set(samples) == seen
    for task, found in samples.items():
        for sample in found:
            if sample.image is not None:  # the recorded shape and dtype, zero strides: nothing was decoded
                assert sample.image.strides == (0,) * sample.image.ndim and not sample.image.any()
            if not get_task(task).uses_mask:
                assert sample.mask is None, task
    assert samples["segmentation"] and all(s.mask is not None for s in samples["segmentation"])
    # The shard does hold masks of tasks that do not use them (grounding, detection): those were skipped.
    assert any(s.mask is not None and not get_task(s.task).uses_mask for s in iter_samples([shard]))


def test_a_mixture_records_its_tasks_only(shards):
    docs = compute_artifacts(
        config(f"data.shards=[{shards}]", "data.mixture={vqa: 1, grounding: 2, caption: 0}")
    )
    assert docs["serving.json"]["tasks"] == ["vqa", "grounding"]
    assert set(docs["answers.json"]) == {"vqa"} and set(docs["baselines.json"]) == {"vqa", "grounding"}


def test_remote_shards_record_what_is_known_with_a_warning(caplog):
    remote = "data.shards=['https://example.org/shards/x-train-{000000..000001}.tar']"
    with caplog.at_level(logging.WARNING, logger="biomedgpt.train.artifacts"):
        assert compute_artifacts(config(remote)) == {}  # no manifest to say which tasks: nothing is known
        docs = compute_artifacts(config(remote, "data.mixture={vqa: 1}"))
    assert docs == {"serving.json": {"tasks": ["vqa"], "prompts": {"vqa": get_task("vqa").prompt}}}
    assert "cannot be read here" in caplog.text and "no answers.json" in caplog.text
