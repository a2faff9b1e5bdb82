"""`biomedgpt config` and the shared `-c FILE KEY=VALUE --dump-config` arguments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from biomedgpt.cli import main
from biomedgpt.config import load_config
from biomedgpt.run_config import RunConfig

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")


def _yaml_file(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_config_prints_resolved_yaml_with_files_and_overrides(tmp_path, capsys):
    a = _yaml_file(tmp_path, "a.yaml", "train:\n  lr: 1e-3\n  max_steps: 500\n")
    b = _yaml_file(tmp_path, "b.yaml", "train:\n  max_steps: 700\n")
    assert main(["config", "-c", a, "-c", b, "train.lr=3e-4"]) == 0
    out = capsys.readouterr().out
    data = yaml.safe_load(out)
    assert data["train"]["lr"] == 3e-4 and data["train"]["max_steps"] == 700
    assert load_config(RunConfig, [_yaml_file(tmp_path, "out.yaml", out)]).train.lr == 3e-4


def test_config_json(capsys):
    assert main(["config", "-c", QUICKSTART, "--json", "generation.num_beams=3"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"]["arch"] == "tiny" and data["generation"]["num_beams"] == 3


def test_dump_config_prints_yaml_and_exits_0(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["config", "-c", QUICKSTART, "--dump-config", "train.lr=2e-4"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    cfg = load_config(RunConfig, [_yaml_file(tmp_path, "dumped.yaml", out)])
    assert cfg == load_config(RunConfig, [QUICKSTART], ["train.lr=2e-4"])


def test_keys_lists_every_key_with_type_value_and_doc(capsys):
    assert main(["config", "--keys", "train.lr=3e-4"]) == 0
    out = capsys.readouterr().out
    assert "train.lr = 0.0003  [float]" in out
    assert "model.arch = \"tiny\"  [one of 'tiny', 'small', 'medium', 'base', 'large']" in out
    assert "data.mixture = {}  [dict[str, float]]" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train.lrr=3e-4"], "error: unknown key 'train.lrr'; did you mean 'train.lr'?"),
        (["train.lr"], "error: malformed override 'train.lr': expected KEY=VALUE, e.g. train.lr=3e-4"),
        (["train.max_steps=many"], "error: train.max_steps: expected int, got str 'many'"),
        (["-c", "missing.yaml"], "error: config file not found: missing.yaml"),
    ],
)
def test_bad_config_exits_2_with_one_line_on_stderr(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["config", *argv])
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert captured.err == message + "\n"
    assert captured.out == ""
