"""The README's main job: the quickstart runs end to end and checks its own save/reload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from biomedgpt import cli

pytestmark = pytest.mark.integration
CONFIG = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"


def test_quickstart_end_to_end(tmp_path, capsys):
    out = tmp_path / "model"
    code = cli.main(["quickstart", "-c", str(CONFIG), "--out", str(out), "--samples", "2"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    summary = json.loads(printed.strip().splitlines()[-1])
    assert summary["weights_identical"] and summary["outputs_identical"] and summary["vqa_answers_in_list"]
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pt"))
