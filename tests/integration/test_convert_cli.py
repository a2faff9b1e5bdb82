"""`biomedgpt shard --format NAME` end to end through `biomedgpt.cli.main`, then `data verify`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from biomedgpt.cli import main
from biomedgpt.ingest.converters.common import USER_LICENCE
from tests.unit.test_converters_images import _case, _nifti
from tests.unit.test_converters_vqa import read_back, write_vqa_rad

pytestmark = pytest.mark.integration


def test_vqa_rad_through_the_cli(tmp_path, capsys):
    root = write_vqa_rad(tmp_path / "VQA_RAD")
    out = tmp_path / "shards"
    args = ["shard", "--format", "vqa-rad", "--input", str(root), "--out", str(out), "--no-progress"]
    assert main([*args, "--max-side", "8"]) == 0
    captured = capsys.readouterr()
    assert "wrote 4 samples (train 2, test 2; vqa 4)" in captured.out
    assert "vqa-rad: skipped 2 (1 unreadable image, 1 missing image) input items" in captured.err
    assert "skipped qid 5: missing image" in captured.err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["licences"] == [USER_LICENCE] and manifest["name"] == "vqa-rad"
    assert manifest["command_line"][:4] == ["biomedgpt", "shard", "--input", str(root)]
    assert "--format" in manifest["command_line"] and "--language" not in manifest["command_line"]
    assert {max(s.image.shape[:2]) for s in read_back(out).values()} == {8}  # --max-side applied
    assert main(["data", "verify", str(out)]) == 0
    assert "OK" in capsys.readouterr().out

    assert main(args) == 2  # the folder already holds shards
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--licence", "CC0-1.0", "--name", "rad"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["licences"] == ["CC0-1.0"] and sorted(p.name for p in out.glob("*.tar")) == [
        "rad-test-000000.tar",
        "rad-train-000000.tar",
    ]


def test_volumes_through_the_cli(tmp_path, capsys):
    root = tmp_path / "Task03_Liver"
    image, mask = _case(0, [2, 3, 4], depth=8)
    _nifti(root / "imagesTr" / "liver_0.nii.gz", image)
    _nifti(root / "labelsTr" / "liver_0.nii.gz", mask)
    out = tmp_path / "liver"
    args = ["shard", "--format", "volumes", "--input", str(root), "--out", str(out), "--no-progress"]
    assert main([*args, "--target", "liver", "--empty-fraction", "0", "--modality", "CT"]) == 0
    assert "wrote 3 samples" in capsys.readouterr().out
    samples = read_back(out)
    assert {s.fields["target"] for s in samples.values()} == {"liver"} and {
        s.modality for s in samples.values()
    } == {"CT"}
    assert all(np.any(s.mask) for s in samples.values())
    assert main(["data", "verify", str(out)]) == 0


def test_layout_errors_exit_2_and_name_the_expected_path(tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        main(["shard", "--format", "slake", "--input", str(tmp_path), "--out", str(out), "--no-progress"])
        == 2
    )
    err = capsys.readouterr().err
    assert f"{tmp_path}/train.json: train split file not found; --format slake expects" in err
    assert not out.exists()
    args = [
        "shard",
        "--format",
        "volumes",
        "--input",
        str(tmp_path),
        "--out",
        str(out),
        "--empty-fraction",
        "2",
    ]
    assert main(args) == 2
    assert "empty_fraction: must be in [0, 1]" in capsys.readouterr().err
