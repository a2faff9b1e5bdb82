"""Every committed run-config YAML loads, validates and starts with its purpose, command and expected result.

To cover a new folder of configs, add its glob to CONFIG_GLOBS with the dataclass its files build.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from biomedgpt.config import dump_yaml, from_dict, load_config, parse_yaml
from biomedgpt.run_config import RunConfig
from biomedgpt.serve.config import ServeConfig

REPO = Path(__file__).resolve().parents[2]

# glob under configs/ -> the config class its files build
CONFIG_GLOBS: dict[str, type] = {
    "*.yaml": RunConfig,
    "model/*.yaml": RunConfig,
    "cluster/*.yaml": RunConfig,
    "pretrain/*.yaml": RunConfig,
    "finetune/*.yaml": RunConfig,
    "serve/*.yaml": ServeConfig,
}

CONFIG_FILES = sorted(
    (path, cls) for pattern, cls in CONFIG_GLOBS.items() for path in (REPO / "configs").glob(pattern)
)


def _id(item: tuple[Path, type]) -> str:
    return str(item[0].relative_to(REPO))


def test_the_globs_find_the_committed_configs():
    names = {_id(item) for item in CONFIG_FILES}
    assert {"configs/quickstart.yaml", "configs/model/tiny.yaml", "configs/model/base.yaml"} <= names
    assert "configs/serve/default.yaml" in names


@pytest.mark.parametrize("item", CONFIG_FILES, ids=_id)
def test_config_loads_validates_and_round_trips(item):
    path, cls = item
    cfg = load_config(cls, [path])
    assert isinstance(cfg, cls)
    assert from_dict(cls, parse_yaml(dump_yaml(cfg))) == cfg


@pytest.mark.parametrize("item", CONFIG_FILES, ids=_id)
def test_config_header_says_purpose_command_and_expected_result(item):
    path, _ = item
    lines = path.read_text(encoding="utf-8").splitlines()
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line)
    text = "\n".join(header).lower()
    assert len(header) >= 3, f"{path.name}: start with comment lines: purpose, command, result to expect"
    assert "biomedgpt " in text and _id(item).lower() in text, f"{path.name}: show the command that runs it"
    assert "expect" in text, f"{path.name}: say what result to expect"
