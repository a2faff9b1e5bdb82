"""The typed config machinery (`biomedgpt.config`) and the run-config tree (`biomedgpt.run_config`)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from biomedgpt.config import (
    ConfigError,
    apply_overrides,
    check,
    describe_keys,
    dump_yaml,
    from_dict,
    load_config,
    load_yaml,
    merge_dicts,
    parse_override,
    parse_yaml,
    set_dotted,
    to_dict,
)
from biomedgpt.data.config import DataConfig
from biomedgpt.model.run_config import GenerationConfig, ModelConfig
from biomedgpt.run_config import RunConfig
from biomedgpt.train.config import TrainConfig


@dataclass(kw_only=True)
class Inner:
    rate: float = 0.5
    """a float"""
    name: str = "x"
    """a str"""

    def __post_init__(self) -> None:
        check(self.rate >= 0, "rate", f"must be >= 0, got {self.rate}")


@dataclass(kw_only=True)
class Outer:
    count: int = 1
    """an int"""
    flag: bool = False
    """a bool"""
    maybe: int | None = None
    """optional int"""
    mode: Literal["a", "b", "32"] = "a"
    """a literal"""
    items: list[str] = field(default_factory=list)
    """a list"""
    pair: tuple[float, float] = (0.1, 0.2)
    """a fixed tuple"""
    weights: dict[str, float] = field(default_factory=dict)
    """a dict"""
    where: Path = Path("runs")
    """a path"""
    inner: Inner = field(default_factory=Inner)
    """a nested section"""
    inners: list[Inner] = field(default_factory=list)
    """a list of sections"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- from_dict


def test_from_dict_builds_every_supported_type():
    cfg = from_dict(
        Outer,
        {
            "count": 3,
            "flag": True,
            "maybe": 4,
            "mode": "b",
            "items": ["p", "q"],
            "pair": [1, 2.5],
            "weights": {"caption": 2, "vqa": 0.5},
            "where": "out/dir",
            "inner": {"rate": 1},
            "inners": [{"name": "y"}],
        },
    )
    assert cfg.count == 3 and cfg.flag is True and cfg.maybe == 4 and cfg.mode == "b"
    assert cfg.pair == (1.0, 2.5) and isinstance(cfg.pair[0], float)
    assert cfg.weights == {"caption": 2.0, "vqa": 0.5}
    assert cfg.where == Path("out/dir")
    assert cfg.inner == Inner(rate=1.0) and isinstance(cfg.inner.rate, float)
    assert cfg.inners == [Inner(name="y")]


def test_unknown_top_level_key_suggests_closest():
    with pytest.raises(ConfigError, match=r"unknown key 'cuont'; did you mean 'count'\?"):
        from_dict(Outer, {"cuont": 1})


def test_unknown_nested_key_names_dotted_path_and_suggests():
    with pytest.raises(ConfigError) as err:
        from_dict(RunConfig, {"train": {"lrr": 1e-3}})
    assert str(err.value) == "unknown key 'train.lrr'; did you mean 'train.lr'?"
    with pytest.raises(
        ConfigError, match=r"unknown key 'inners\[0\]\.nmae'; did you mean 'inners\[0\]\.name'"
    ):
        from_dict(Outer, {"inners": [{"nmae": "z"}]})


def test_unknown_key_in_wrong_section_points_to_the_right_one():
    with pytest.raises(ConfigError, match=r"unknown key 'model.lr'; did you mean 'train.lr'\?"):
        from_dict(RunConfig, {"model": {"lr": 1e-3}})
    with pytest.raises(ConfigError, match=r"unknown key 'batch_size'; did you mean 'data.batch_size'"):
        from_dict(RunConfig, {"batch_size": 4})


def test_unknown_key_without_a_close_match_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown key 'inner.zzzzzz'; valid keys in 'inner': rate, name"):
        from_dict(Outer, {"inner": {"zzzzzz": 1}})


@pytest.mark.parametrize(
    ("data", "key", "expected", "got"),
    [
        ({"count": "3"}, "count", "int", "str '3'"),
        ({"count": 1.5}, "count", "int", "float 1.5"),
        ({"inner": {"rate": "fast"}}, "inner.rate", "float", "str 'fast'"),
        ({"items": "a.tar"}, "items", "list[str]", "str 'a.tar'"),
        ({"items": ["a", 3]}, "items[1]", "str", "int 3"),
        ({"maybe": "x"}, "maybe", "int | null", "str 'x'"),
        ({"weights": {"a": "heavy"}}, "weights.a", "float", "str 'heavy'"),
        ({"inner": [1]}, "inner", "a mapping (Inner)", "list [1]"),
        ({"flag": 1}, "flag", "bool", "int 1"),
    ],
)
def test_wrong_type_names_key_expected_type_and_value(data, key, expected, got):
    with pytest.raises(ConfigError) as err:
        from_dict(Outer, data)
    assert str(err.value) == f"{key}: expected {expected}, got {got}"


def test_bool_is_not_an_int_or_a_float():
    with pytest.raises(ConfigError, match=r"^count: expected int, got bool True$"):
        from_dict(Outer, {"count": True})
    with pytest.raises(ConfigError, match=r"^inner.rate: expected float, got bool False$"):
        from_dict(Outer, {"inner": {"rate": False}})
    with pytest.raises(ConfigError, match=r"train.max_steps: expected int, got bool"):
        from_dict(RunConfig, {"train": {"max_steps": True}})


def test_literal_suggests_the_closest_choice_and_takes_numbers_that_spell_one():
    with pytest.raises(
        ConfigError, match=r"schedule: expected one of 'cosine', .*got str 'cosin'; did you mean 'cosine'\?"
    ):
        from_dict(RunConfig, {"train": {"schedule": "cosin"}})
    assert from_dict(Outer, {"mode": 32}).mode == "32"  # `precision: 32` in YAML is an int
    assert from_dict(RunConfig, {"train": {"precision": 32}}).train.precision == "32"


def test_tuple_length_is_checked():
    with pytest.raises(ConfigError, match=r"^pair: expected tuple\[float, float\] \(2 items\), got list"):
        from_dict(Outer, {"pair": [1, 2, 3]})


def test_post_init_errors_get_the_dotted_path():
    with pytest.raises(ConfigError) as err:
        from_dict(Outer, {"inners": [{}, {"rate": -1}]})
    assert str(err.value) == "inners[1].rate: must be >= 0, got -1.0"
    assert err.value.key == "inners[1].rate"
    with pytest.raises(ConfigError, match=r"^train.warmup_steps: must be in 0..max_steps \(10\), got 20$"):
        from_dict(RunConfig, {"train": {"max_steps": 10, "warmup_steps": 20}})
    with pytest.raises(ConfigError, match=r"^model.image_size: must be a multiple of 16"):
        from_dict(RunConfig, {"model": {"image_size": 100}})
    with pytest.raises(ConfigError, match=r"^data.mixture: needs at least one weight > 0$"):
        from_dict(RunConfig, {"data": {"mixture": {"caption": 0.0}}})
    with pytest.raises(ConfigError, match=r"^data.mixture.vqa: must be >= 0"):
        from_dict(RunConfig, {"data": {"mixture": {"vqa": -1.0}}})


def test_path_argument_prefixes_errors():
    with pytest.raises(ConfigError, match=r"^train.lr: must be a finite number > 0"):
        from_dict(TrainConfig, {"lr": 0}, path="train")


def test_cross_section_checks_name_the_key():
    with pytest.raises(ConfigError, match=r"^data.max_prompt_tokens: must be <= model.max_source_positions"):
        from_dict(RunConfig, {"model": {"max_source_positions": 16}, "data": {"max_prompt_tokens": 32}})


def test_sections_validate_when_built_in_python():
    with pytest.raises(ConfigError, match="num_beams"):
        GenerationConfig(num_beams=0)
    with pytest.raises(ConfigError, match="dropout"):
        ModelConfig(dropout=1.0)
    with pytest.raises(ConfigError, match="batch_size"):
        DataConfig(batch_size=0)


# ----------------------------------------------------------------------------- merging and overrides


def test_merge_dicts_is_deep_later_wins_lists_replaced():
    a = {"train": {"lr": 1.0, "seed": 1}, "data": {"shards": ["a", "b"]}}
    b = {"train": {"lr": 2.0}, "data": {"shards": ["c"]}}
    assert merge_dicts(a, b) == {"train": {"lr": 2.0, "seed": 1}, "data": {"shards": ["c"]}}
    assert a["train"]["lr"] == 1.0  # inputs untouched


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("train.lr=3e-4", "train.lr", 3e-4),
        ("train.lr=1E5", "train.lr", 1e5),
        ("train.lr=-2.5e-3", "train.lr", -2.5e-3),
        ("train.lr=.5", "train.lr", 0.5),
        ("train.max_steps=20", "train.max_steps", 20),
        ("train.resume=true", "train.resume", True),
        ("model.init_from=null", "model.init_from", None),
        ("train.output_dir=runs/x=1", "train.output_dir", "runs/x=1"),
        ("data.shards=[a.tar, b.tar]", "data.shards", ["a.tar", "b.tar"]),
        ("data.mixture.vqa-rad=2", "data.mixture.vqa-rad", 2),
    ],
)
def test_parse_override(text, key, value):
    parsed_key, parsed = parse_override(text)
    assert parsed_key == key
    assert parsed == value and type(parsed) is type(value)


def test_scientific_notation_is_a_float_in_files_too():
    assert isinstance(parse_override("train.lr=3e-4")[1], float)
    assert parse_yaml("lr: 3e-4\nwd: 1e-2\nsteps: 100\nv: 1.0.0") == {
        "lr": 3e-4,
        "wd": 1e-2,
        "steps": 100,
        "v": "1.0.0",
    }


@pytest.mark.parametrize("text", ["train.lr", "=3", "train..lr=1", ".lr=1", "train lr=1", "1x=2"])
def test_malformed_override_is_an_error(text):
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override(text)


def test_override_with_invalid_yaml_value_names_the_override():
    with pytest.raises(ConfigError, match=r"invalid YAML in override 'data.shards=\[a'"):
        parse_override("data.shards=[a")


def test_set_dotted_refuses_to_descend_into_a_scalar():
    assert set_dotted({}, "a.b.c", 1) == {"a": {"b": {"c": 1}}}
    with pytest.raises(ConfigError, match=r"cannot set 'train.lr.x': 'train.lr' holds float"):
        set_dotted({"train": {"lr": 1.0}}, "train.lr.x", 1)


# ----------------------------------------------------------------------------- files


def test_later_file_wins_and_overrides_beat_files(tmp_path):
    a = _write(tmp_path, "a.yaml", "train:\n  lr: 1e-3\n  max_steps: 500\ndata:\n  batch_size: 4\n")
    b = _write(tmp_path, "b.yaml", "train:\n  lr: 2e-3\n")
    cfg = load_config(RunConfig, [a, b])
    assert cfg.train.lr == 2e-3 and cfg.train.max_steps == 500 and cfg.data.batch_size == 4
    cfg = load_config(RunConfig, [a, b], ["train.lr=3e-4", "data.batch_size=16"])
    assert cfg.train.lr == 3e-4 and cfg.data.batch_size == 16
    assert load_config(RunConfig, [b, a]).train.lr == 1e-3


def test_base_inheritance_is_relative_to_the_file(tmp_path):
    _write(tmp_path, "base/root.yaml", "train:\n  lr: 1e-3\n  max_steps: 500\nmodel:\n  arch: small\n")
    _write(tmp_path, "base/mid.yaml", "_base_: root.yaml\ntrain:\n  max_steps: 800\n")
    child = _write(tmp_path, "recipes/child.yaml", "_base_: ../base/mid.yaml\ntrain:\n  lr: 5e-4\n")
    cfg = load_config(RunConfig, [child])
    assert (cfg.model.arch, cfg.train.lr, cfg.train.max_steps) == ("small", 5e-4, 800)


def test_base_list_merges_in_order(tmp_path):
    _write(tmp_path, "one.yaml", "train:\n  lr: 1e-3\n  seed: 1\n")
    _write(tmp_path, "two.yaml", "train:\n  lr: 2e-3\n")
    top = _write(tmp_path, "top.yaml", "_base_: [one.yaml, two.yaml]\n")
    assert load_yaml(top) == {"train": {"lr": 2e-3, "seed": 1}}


def test_base_cycle_and_missing_base_are_errors(tmp_path):
    _write(tmp_path, "x.yaml", "_base_: y.yaml\n")
    y = _write(tmp_path, "y.yaml", "_base_: x.yaml\n")
    with pytest.raises(ConfigError, match="_base_ cycle"):
        load_yaml(y)
    orphan = _write(tmp_path, "orphan.yaml", "_base_: gone.yaml\n")
    with pytest.raises(
        ConfigError, match=r"config file not found: .*gone.yaml \(the _base_ of .*orphan.yaml\)"
    ):
        load_yaml(orphan)


def test_missing_file_invalid_yaml_and_non_mapping_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"config file not found: .*nope.yaml"):
        load_config(RunConfig, [tmp_path / "nope.yaml"])
    bad = _write(tmp_path, "bad.yaml", "train:\n  lr: [1, 2\n")
    with pytest.raises(ConfigError, match=r"invalid YAML in .*bad.yaml \(line \d+, column \d+\)"):
        load_config(RunConfig, [bad])
    listed = _write(tmp_path, "list.yaml", "- a\n- b\n")
    with pytest.raises(ConfigError, match=r"list.yaml: the top level must be a mapping"):
        load_config(RunConfig, [listed])
    dup = _write(tmp_path, "dup.yaml", "train:\n  lr: 1\n  lr: 2\n")
    with pytest.raises(ConfigError, match=r"dup.yaml.*duplicate key 'lr'"):
        load_config(RunConfig, [dup])
    empty = _write(tmp_path, "empty.yaml", "# nothing yet\n")
    assert load_config(RunConfig, [empty]) == RunConfig()


# ----------------------------------------------------------------------------- dumping


def test_dump_load_round_trip_is_equal(tmp_path):
    cfg = load_config(
        RunConfig,
        [],
        [
            "train.lr=3e-4",
            "train.betas=[0.8, 0.95]",
            "train.ema_decay=0.9999",
            "train.precision=bf16-mixed",
            "data.mixture={caption: 2, vqa: 1}",
            "data.shards=['a-{000000..000003}.tar']",
            "model.init_from=runs/x/ckpt",
            "generation.length_penalty=1e-8",
        ],
    )
    text = dump_yaml(cfg)
    path = _write(tmp_path, "resolved.yaml", text)
    assert load_config(RunConfig, [path]) == cfg
    assert from_dict(RunConfig, parse_yaml(text)) == cfg
    assert dump_yaml(load_config(RunConfig, [path])) == text  # stable


def test_dump_is_in_field_order_and_plain():
    data = to_dict(RunConfig())
    assert list(data) == ["model", "data", "train", "generation", "dist", "eval"]
    assert list(data["train"])[:3] == ["lr", "weight_decay", "betas"]
    assert data["train"]["betas"] == [0.9, 0.999]
    assert to_dict(Outer(where=Path("a/b")))["where"] == "a/b"
    assert from_dict(Outer, to_dict(Outer(inners=[Inner()]))) == Outer(inners=[Inner()])


def test_apply_overrides_returns_a_validated_copy():
    base = RunConfig()
    changed = apply_overrides(base, ["train.lr=2e-4", "model.arch=base"])
    assert (changed.train.lr, changed.model.arch) == (2e-4, "base")
    assert base.train.lr == 1e-4
    with pytest.raises(ConfigError, match=r"did you mean 'model\.arch'"):
        apply_overrides(base, ["model.ach=base"])


# ----------------------------------------------------------------------------- the tree


def test_every_field_of_the_run_config_has_a_docstring():
    undocumented = [k.key for k in describe_keys(RunConfig) if not k.doc]
    assert undocumented == []
    for section in (RunConfig, ModelConfig, DataConfig, TrainConfig, GenerationConfig):
        assert all(f.kw_only for f in dataclasses.fields(section)), section.__name__


def test_defaults_build_and_match_the_documented_ones():
    cfg = RunConfig()
    assert cfg.model.arch == "tiny" and cfg.model.image_size == 256 and cfg.model.vocab_size is None
    assert cfg.train.lr == 1e-4 and cfg.train.betas == (0.9, 0.999) and cfg.train.precision == "32"
    assert cfg.data.batch_size == 8 and cfg.data.mixture == {}
    assert cfg.generation.num_beams == 1 and cfg.generation.constraint == "text"
    assert from_dict(RunConfig, {}) == cfg


def test_run_config_import_is_light():
    code = (
        "import sys, biomedgpt.run_config, biomedgpt.commands.config_cmd; "
        "heavy = sorted(m for m in ('torch', 'transformers', 'lightning', 'ray') if m in sys.modules); "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
