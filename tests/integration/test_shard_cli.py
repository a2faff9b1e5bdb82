"""`biomedgpt shard` and `biomedgpt data verify|stats` end to end through `biomedgpt.cli.main`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from biomedgpt.cli import main

pytestmark = pytest.mark.integration


def _manifest(folder: Path, lines: list[dict]) -> Path:
    Image.fromarray(np.full((16, 16), 90, np.uint8)).save(folder / "img.png")
    path = folder / "m.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_synthetic_then_verify_then_stats(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["shard", "--synthetic", "40", "--out", str(out), "--seed", "1", "--no-progress"]) == 0
    summary = capsys.readouterr().out
    assert "wrote 40 samples" in summary and str(out) in summary and "shards" in summary
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_samples"] == 40 and manifest["licences"] == ["CC0-1.0"]
    assert (
        manifest["command_line"][:2] == ["biomedgpt", "shard"] and "--synthetic" in manifest["command_line"]
    )

    assert main(["data", "verify", str(out)]) == 0
    assert "OK" in capsys.readouterr().out

    assert main(["data", "stats", str(out), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["num_samples"] == 40 and sum(stats["by_task"].values()) == 40
    assert stats["by_task"] == dict.fromkeys(sorted(stats["by_task"]), 4)  # 10 tasks x 4
    assert stats["by_split"] == manifest["counts_by_split"]
    assert main(["data", "stats", str(out)]) == 0
    assert "caption" in capsys.readouterr().out

    # A second run into the same folder is refused without --overwrite.
    assert main(["shard", "--synthetic", "5", "--out", str(out), "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err

    # Corrupt one shard: verify fails with exit 1 and names it.
    shard = sorted(out.glob("*.tar"))[0]
    data = bytearray(shard.read_bytes())
    data[1000] ^= 0x01
    shard.write_bytes(bytes(data))
    assert main(["data", "verify", str(out)]) == 1
    assert shard.name in capsys.readouterr().out


def test_manifest_errors_exit_2_with_every_line(tmp_path, capsys):
    lines = [
        {"image": "img.png", "task": "caption", "split": "train", "text": "gray"},
        {"image": "nope.png", "task": "caption", "split": "train", "text": "x"},
        {"image": "img.png", "task": "vqa", "split": "train", "question": "q?"},
        {
            "image": "img.png",
            "task": "grounding",
            "split": "train",
            "boxes": [{"box": [0, 0, 17, 4], "label": "x"}],
        },
    ]
    manifest = _manifest(tmp_path, lines)
    out = tmp_path / "out"
    assert main(["shard", "--input", str(manifest), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "line 2: image:" in err and "line 3: answer:" in err and "line 4: boxes[0].box:" in err
    assert not out.exists() or not list(out.iterdir())

    args = ["shard", "--input", str(manifest), "--out", str(out), "--skip-invalid", "--no-progress"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "wrote 1 samples" in captured.out and "skipped 3 invalid lines" in captured.out
    assert "skipped line 3: answer:" in captured.err
    assert [p.name for p in sorted(out.glob("*.tar"))] == ["m-train-000000.tar"]
    assert main(["data", "verify", str(out)]) == 0


def test_a_format_with_a_missing_layout_exits_2_and_writes_nothing(tmp_path, capsys):
    assert main(["shard", "--format", "vqa-rad", "--input", str(tmp_path), "--out", str(tmp_path / "d")]) == 2
    assert "VQA_RAD Dataset Public.json" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_verify_of_a_folder_without_manifest_fails(tmp_path, capsys):
    assert main(["data", "verify", str(tmp_path)]) == 1
    assert "manifest.json: missing" in capsys.readouterr().out


# ----------------------------------------------------------------------------- stats agrees with verify


def _synthetic(out: Path, n: int = 40) -> dict:
    assert main(["shard", "--synthetic", str(n), "--out", str(out), "--seed", "1", "--no-progress"]) == 0
    return json.loads((out / "manifest.json").read_text())


def test_stats_of_a_truncated_shard_fails_like_verify(tmp_path, capsys):
    out = tmp_path / "synth"
    manifest = _synthetic(out)
    entry = max(manifest["shards"], key=lambda e: e["num_samples"])
    shard = out / entry["file"]
    shard.write_bytes(shard.read_bytes()[: int(shard.stat().st_size * 0.6)])
    capsys.readouterr()
    assert main(["data", "stats", str(out), "--json"]) == 1
    captured = capsys.readouterr()
    stats = json.loads(captured.out)
    assert stats["num_samples"] < manifest["num_samples"]
    assert any(entry["file"] in p and "manifest says" in p for p in stats["problems"])
    assert "incomplete" in captured.err and "Traceback" not in captured.err
    assert main(["data", "verify", str(out)]) == 1


def test_stats_of_a_sample_whose_json_is_an_array_is_a_problem_not_a_crash(tmp_path, capsys):
    import hashlib
    import io
    import tarfile

    out = tmp_path / "synth"
    manifest = _synthetic(out, n=10)
    entry = manifest["shards"][0]
    shard = out / entry["file"]
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shard, "w") as tar:
        replaced = False
        for member, data in members:
            if member.name.endswith(".json") and not replaced:
                data, replaced = b"[1, 2, 3]", True
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    entry["bytes"], entry["sha256"] = shard.stat().st_size, hashlib.sha256(shard.read_bytes()).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main(["data", "stats", str(out)]) == 1
    captured = capsys.readouterr()
    assert "no JSON object" in captured.err and "Traceback" not in captured.err
    assert main(["data", "verify", str(out)]) == 1


@pytest.mark.parametrize("escape", ["../../../../etc/passwd", "/etc/passwd", "../outside.tar"])
def test_manifest_paths_outside_the_folder_are_refused(tmp_path, capsys, escape):
    out = tmp_path / "synth"
    manifest = _synthetic(out, n=10)
    (tmp_path / "outside.tar").write_bytes((out / manifest["shards"][0]["file"]).read_bytes())
    manifest["shards"][0]["file"] = escape
    (out / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main(["data", "verify", str(out)]) == 1
    printed = capsys.readouterr().out
    assert f"{escape!r}: refused" in printed and "outside the shard folder" in printed
    assert "sha256" not in printed.split("refused", 1)[0]  # nothing was hashed for it
    assert main(["data", "stats", str(out), "--json"]) == 1
    captured = capsys.readouterr()
    assert all(s["file"] != escape for s in json.loads(captured.out)["shards"])
    assert "outside the shard folder" in captured.err
