"""`scripts/demo.sh`'s `run_state`: whether `make demo` reuses, resumes or retrains the run it finds. A run whose
recorded config differs from the recipe is "changed" (moved aside and trained again), and the keys that differ are
named; the same recipe, recorded with the absolute paths the Ray launcher writes, is "done"."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from biomedgpt.config import dump_yaml, load_config
from biomedgpt.run_config import RunConfig, recipe_changes

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "demo.sh"
RECIPE = REPO / "configs" / "pretrain" / "demo.yaml"


def run_state(run: Path) -> subprocess.CompletedProcess:
    lines = SCRIPT.read_text().splitlines()
    start = lines.index("run_state() {")
    function = "\n".join(lines[start : lines.index("}", start) + 1])
    script = f"BIN={Path(sys.executable).parent}; CONFIG={RECIPE}; RUN={run}\n{function}\nrun_state\n"
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)


def fake_run(root: Path, cfg: RunConfig, *, step: int) -> Path:
    """The files `run_state` reads of a run's last checkpoint."""
    folder = root / "checkpoints" / f"step-{step:08d}"
    folder.mkdir(parents=True)
    (root / "checkpoints" / "latest").write_text(folder.name + "\n")
    (folder / "run_config.yaml").write_text(dump_yaml(cfg))
    (folder / "serving.json").write_text(json.dumps({"tasks": ["vqa"], "prompts": {"vqa": "{question}"}}))
    (folder / "answers.json").write_text("{}")
    (folder / "manifest.json").write_text(json.dumps({"step": step}))
    return folder


def test_a_run_of_this_recipe_is_reused_and_one_of_another_is_named_changed(tmp_path):
    recipe = load_config(RunConfig, [RECIPE])
    run = tmp_path / "run"
    as_ray_records = dataclasses.replace(  # absolute paths, as the Ray launcher writes them
        recipe,
        data=dataclasses.replace(recipe.data, shards=[str(REPO / p) for p in recipe.data.shards]),
        train=dataclasses.replace(recipe.train, output_dir=str(REPO / recipe.train.output_dir)),
    )
    fake_run(run, as_ray_records, step=recipe.train.max_steps)
    result = run_state(run)
    assert result.stdout.strip() == "done", result.stderr

    other = tmp_path / "other"
    fake_run(
        other,
        dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, served_prompt_share=None)),
        step=1,
    )
    result = run_state(other)
    assert result.stdout.strip() == "changed"
    assert f"data.served_prompt_share: None -> {recipe.data.served_prompt_share!r}" in result.stderr

    fake_run(tmp_path / "early", recipe, step=recipe.train.max_steps - 100)
    assert run_state(tmp_path / "early").stdout.strip() == "partial"
    assert run_state(tmp_path / "missing").stdout.strip() == "none"


def test_recipe_changes_name_each_differing_key_and_ignore_how_the_run_started():
    recipe = load_config(RunConfig, [RECIPE])
    assert recipe_changes(recipe, recipe) == []
    recorded = load_config(RunConfig, [RECIPE], ["data.mixture.vqa=1", "train.resume=true"])
    assert recipe_changes(recorded, recipe) == [f"data.mixture.vqa: 1.0 -> {recipe.data.mixture['vqa']!r}"]
