"""Checking a model folder's files against the sha256 digests of its manifest.json (`biomedgpt.hashing.verify_files`),
and the `verify_files` serve setting with its `--no-verify` flags."""

from __future__ import annotations

import json

import pytest

from biomedgpt.errors import ModelFileError
from biomedgpt.hashing import sha256_file, verify_files


def folder_with_manifest(tmp_path, files: dict[str, bytes]):
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    hashes = {name: sha256_file(tmp_path / name) for name in files}
    (tmp_path / "manifest.json").write_text(json.dumps({"files": hashes}))
    return tmp_path


def test_matching_files_pass_and_absent_optional_files_are_skipped(tmp_path):
    folder = folder_with_manifest(tmp_path, {"a.onnx": b"graph", "sub/state.ckpt": b"state"})
    assert verify_files(folder, ["a.onnx", "sub/state.ckpt", "answers.json"], require_manifest=True) == [
        "a.onnx",
        "sub/state.ckpt",
    ]


def test_a_changed_file_is_refused_by_name(tmp_path):
    folder = folder_with_manifest(tmp_path, {"decoder.onnx": b"graph", "config.json": b"{}"})
    (folder / "decoder.onnx").write_bytes(b"grapH")
    with pytest.raises(
        ModelFileError, match=r"decoder\.onnx does not match the sha256 in manifest\.json"
    ) as err:
        verify_files(folder, ["config.json", "decoder.onnx"], require_manifest=True)
    assert err.value.path == str(folder / "decoder.onnx")
    assert "\n" not in str(err.value) and "--no-verify" in str(err.value)


def test_a_listed_file_that_is_missing_is_refused(tmp_path):
    folder = folder_with_manifest(tmp_path, {"answers.json": b"{}"})
    (folder / "answers.json").unlink()
    with pytest.raises(ModelFileError, match=r"answers\.json is missing \(manifest\.json lists it\)"):
        verify_files(folder, ["answers.json"], require_manifest=True)


def test_a_read_file_the_manifest_does_not_list_is_refused(tmp_path):
    folder = folder_with_manifest(tmp_path, {"config.json": b"{}"})
    (folder / "serving.json").write_text('{"tasks": ["vqa"]}')
    with pytest.raises(ModelFileError, match=r"serving\.json is not listed in manifest\.json"):
        verify_files(folder, ["config.json", "serving.json"], require_manifest=True)


def test_names_outside_the_folder_are_refused(tmp_path):
    folder = folder_with_manifest(tmp_path, {"config.json": b"{}"})
    with pytest.raises(ModelFileError, match="not a file inside"):
        verify_files(folder, ["../secret"], require_manifest=False)


def test_without_a_manifest_nothing_is_checked_unless_it_is_required(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    assert verify_files(tmp_path, ["model.safetensors"], require_manifest=False) == []
    with pytest.raises(ModelFileError, match=r"manifest\.json is missing or records no sha256"):
        verify_files(tmp_path, ["model.safetensors"], require_manifest=True)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="cannot be read"):
        verify_files(tmp_path, ["model.safetensors"], require_manifest=False)


def test_serve_config_verifies_by_default_and_can_be_turned_off():
    from biomedgpt.serve.config import load_serve_config

    assert load_serve_config(environ={}).verify_files is True
    assert load_serve_config(environ={"BIOMEDGPT_SERVE_VERIFY_FILES": "false"}).verify_files is False
    assert load_serve_config(["configs/serve/default.yaml"], environ={}).verify_files is True
    assert load_serve_config(environ={}, flags={"verify_files": False}).verify_files is False


def test_the_serve_command_has_no_verify():
    import argparse

    from biomedgpt.commands import demo, serve

    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    assert parser.parse_args(["--no-verify"]).verify_files is False
    assert parser.parse_args([]).verify_files is None  # unset: the config decides
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    assert parser.parse_args(["--model", "x", "--no-verify"]).no_verify is True
