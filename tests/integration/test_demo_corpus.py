"""End to end: `biomedgpt shard --demo --demo-limit N` on the real registry cache, then `data verify`.

The cache is the `registry_cache` fixture's (tests/conftest.py): every source of ``registry.SOURCES``, fetched
once per checkout by `make test` (scripts/fetch_registry.py) or by the fixture itself.
"""

from __future__ import annotations

import json

import pytest

from biomedgpt.cli import main
from biomedgpt.data.shards import read_manifest
from biomedgpt.ingest import registry
from biomedgpt.ingest.demo.builder import DEMO_SOURCES, REPORT_NAME
from biomedgpt.ingest.demo.common import cached_archive

pytestmark = [pytest.mark.integration, pytest.mark.slow]
LIMIT = 16
"""Per source; enough that the DICOM source, five samples per image, reaches the pydicom-data files."""


@pytest.fixture(scope="module")
def cache_ready(registry_cache):
    missing = [
        name
        for name, src in registry.SOURCES.items()
        if src.dist != "installed" and cached_archive(name) is None
    ]
    assert not missing, f"registry cache {registry_cache} lacks {missing} after the fetch"
    pytest.importorskip("pydicom")


def _build(out, capsys) -> str:
    argv = ["shard", "--demo", "--demo-limit", str(LIMIT), "--synthetic", "10", "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    return capsys.readouterr().out


def test_small_demo_builds_verifies_and_rebuilds_identically(cache_ready, tmp_path, capsys):
    out = _build(tmp_path / "a", capsys)
    assert "wrote" in out and "report:" in out
    assert main(["data", "verify", str(tmp_path / "a")]) == 0
    assert "OK:" in capsys.readouterr().out

    manifest = read_manifest(tmp_path / "a")
    names = {s["name"] for s in manifest["sources"]}
    assert names == set(registry.SOURCES) | {"biomedgpt-synthetic"}
    for source in manifest["sources"]:
        if source["name"] in registry.SOURCES:
            assert source["sha256"] == registry.SOURCES[source["name"]].sha256
            assert source["licence"] == registry.SOURCES[source["name"]].licence
    report = json.loads((tmp_path / "a" / REPORT_NAME).read_text())
    for source in DEMO_SOURCES:
        assert 0 < report["sources"][source.name]["samples"] <= LIMIT, source.name
    assert report["sources"]["synthetic"]["samples"] == 10
    assert manifest["num_samples"] == len(DEMO_SOURCES) * LIMIT + 10
    assert "--demo" in manifest["command_line"] and "--demo-limit" in manifest["command_line"]

    _build(tmp_path / "b", capsys)
    first = {s["file"]: s["sha256"] for s in manifest["shards"]}
    second = {s["file"]: s["sha256"] for s in read_manifest(tmp_path / "b")["shards"]}
    assert first == second  # deterministic: same cache, same bytes
    assert (tmp_path / "a" / REPORT_NAME).read_bytes() == (tmp_path / "b" / REPORT_NAME).read_bytes()
