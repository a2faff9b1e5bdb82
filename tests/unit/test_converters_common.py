"""Shared converter pieces: registry, options, hash splits, keys, records, image fitting."""

from __future__ import annotations

import argparse
import json
from collections import Counter

import numpy as np
import pytest

from biomedgpt.commands import shard
from biomedgpt.data.schema import KEY_RE
from biomedgpt.ingest.converters import CONVERTERS, get_converter
from biomedgpt.ingest.converters.cli import options_from_args
from biomedgpt.ingest.converters.common import (
    ConvertOptions,
    KeyMaker,
    SkipLog,
    clean_extra,
    hash_split,
    read_records,
)
from biomedgpt.ingest.converters.images import fit_image, fit_mask, gray_if_equal


def test_every_registered_format_loads_and_is_a_shard_format():
    for name, module in CONVERTERS.items():
        converter = get_converter(name)
        assert converter.name == name and module.endswith(converter.prepare.__module__.rsplit(".", 1)[-1])
        assert converter.layout and name in shard.FORMATS
    with pytest.raises(KeyError, match="known: dicom-folder"):
        get_converter("vqa_rad")


def test_hash_split_is_stable_and_near_80_10_10():
    counts = Counter(hash_split(f"patient-{i}", salt="t") for i in range(5000))
    assert 0.77 < counts["train"] / 5000 < 0.83 and 0.08 < counts["val"] / 5000 < 0.12
    assert hash_split("patient-1", salt="t") == hash_split("patient-1", salt="t")
    assert {hash_split("patient-1", salt=s) for s in map(str, range(40))} == {"train", "val", "test"}


def test_key_maker_sanitizes_and_deduplicates():
    keys = KeyMaker()
    assert keys.make("slake", "train", 12.0) == "slake-train-12"
    assert keys.make("a.b/c d", "x") == "a_b_c_d-x"
    assert keys.make("a.b/c d", "x") == "a_b_c_d-x-2"
    assert keys.make("_hidden") == "hidden"
    long = keys.make("p" * 300)
    assert KEY_RE.match(long) and len(long) <= 128


def test_clean_extra_drops_what_json_cannot_hold():
    extra = clean_extra({"a": float("nan"), "b": None, "c": "", "d": 1, "e": {1, 2}, "f": "x"}, drop=("f",))
    assert extra == {"d": 1, "e": "{1, 2}"}
    json.dumps(extra, allow_nan=False)


def test_read_records_names_the_file(tmp_path):
    bad = tmp_path / "t.json"
    bad.write_text('{"not": "a list"}')
    with pytest.raises(ValueError, match=r"t\.json: expected a list of JSON objects"):
        read_records(bad)
    bad.write_text("[{")
    with pytest.raises(ValueError, match=r"t\.json: invalid JSON"):
        read_records(bad)
    table = tmp_path / "t.csv"
    table.write_text("image,question\nx.jpg,why?\n", encoding="utf-8-sig")
    assert read_records(table) == [{"image": "x.jpg", "question": "why?"}]


def test_options_validate_and_cli_defaults_stay_unset():
    with pytest.raises(ValueError, match="empty_fraction"):
        ConvertOptions(empty_fraction=1.5)
    with pytest.raises(ValueError, match="max_side"):
        ConvertOptions(max_side=2)
    parser = argparse.ArgumentParser()
    shard.add_arguments(parser)
    args = parser.parse_args(["--input", "x", "--out", "y", "--format", "volumes", "--target", "liver"])
    assert options_from_args(args) == ConvertOptions(target="liver")
    words = shard.command_line(args)  # options left unset do not show in manifest.json
    assert "--target" in words and "--language" not in words and "--empty-fraction" not in words


def test_fit_image_and_mask():
    image = np.arange(40 * 20, dtype=np.uint16).reshape(40, 20)
    small = fit_image(image, 10)
    assert small.shape == (10, 5) and small.dtype == np.uint16
    assert fit_image(image, 64) is image
    mask = np.zeros((40, 20), bool)
    mask[:20] = True
    assert fit_mask(mask, small.shape).tolist() == [[True] * 5] * 5 + [[False] * 5] * 5
    rgb = np.stack([image.astype(np.uint8)] * 3, axis=-1)
    assert gray_if_equal(rgb).shape == (40, 20)
    rgb[0, 0, 1] += 1
    assert gray_if_equal(rgb).shape == (40, 20, 3)


def test_skip_log_summary():
    skips = SkipLog()
    assert skips.summary() == "0"
    skips.add("a", "missing image")
    skips.add("b", "unreadable image", "OSError")
    skips.add("c", "missing image")
    assert skips.summary() == "3 (2 missing image, 1 unreadable image)"
    assert str(skips.items[1]) == "b: unreadable image (OSError)" and skips.items[1].line == "b"
