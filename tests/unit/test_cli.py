"""The CLI surface: the subcommand table is pinned, --help is light, describe reports sizes and layout."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from biomedgpt import cli

PINNED_COMMANDS = (
    "describe", "quickstart", "config", "tokenizer", "shard", "data", "pretrain", "finetune", "eval",
    "import", "export", "demo", "serve",
)  # fmt: skip


def test_command_table_is_pinned():
    # A new subcommand is a deliberate change: add it here and to the README.
    assert tuple(cli.COMMANDS) == PINNED_COMMANDS
    for name, (module, help_text) in cli.COMMANDS.items():
        assert module.startswith("biomedgpt.commands."), name
        assert help_text, name


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys, contextlib, io\n"
        "from biomedgpt import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        "        cli.main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'ray', 'lightning', 'onnxruntime', 'gradio', 'fastapi', 'uvicorn') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_every_command_module_has_the_interface():
    import argparse
    import importlib

    for name, (module_name, _) in cli.COMMANDS.items():
        module = importlib.import_module(module_name)
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)
        assert callable(module.run), name


def test_describe_json_reports_size_and_layout(capsys):
    assert cli.main(["describe", "--arch", "small", "--vocab-size", "59457", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["arch"] == "small" and info["vocab_size"] == 59457
    assert info["layout"] == {
        "text": [4, 50263],
        "mask": 50264,
        "code": [50265, 58456],
        "bin": [58457, 59456],
    }
    assert abs(info["params"] / 33e6 - 1) < 0.05


def test_describe_default_vocabulary(capsys):
    assert cli.main(["describe", "--arch", "tiny", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["vocab_size"] == 32768 and info["layout"]["bin"] == [31768, 32767]


def test_describe_unknown_arch_is_a_clear_error(capsys):
    assert cli.main(["describe", "--arch", "bsae"]) == 2
    assert "did you mean 'base'" in capsys.readouterr().err


def test_unknown_command_exits_2():
    with pytest.raises(SystemExit) as exc:
        cli.main(["frobnicate"])
    assert exc.value.code == 2
