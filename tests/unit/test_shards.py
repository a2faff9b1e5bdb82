"""Shard writing: naming, rollover, atomicity, manifest.json, overwrite, verify and stats."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from biomedgpt.commands.data_cmd import dataset_stats, verify_dataset
from biomedgpt.data.schema import Sample, decode_sample
from biomedgpt.data.shards import (
    MANIFEST_NAME,
    ShardsExistError,
    ShardWriter,
    SourceInfo,
    iter_tar_samples,
    read_manifest,
    write_dataset,
)


def _samples(n: int, *, split_of=lambda i: ("train", "val", "test")[i % 3]) -> list[Sample]:
    tasks = ("caption", "classification", "segmentation")
    out = []
    for i in range(n):
        task = tasks[i % 3]
        fields = {
            "caption": {"text": f"scan {i}"},
            "classification": {"label": "normal"},
            "segmentation": {},
        }[task]
        mask = None
        if task == "segmentation":
            fields, mask = {"target": "lesion"}, np.zeros((8, 8), bool)
            mask[2:4, 2:5] = True
        out.append(
            Sample(
                key=f"s-{i:04d}",
                task=task,
                split=split_of(i),
                image=np.full((8, 8), i, np.uint8),
                fields=fields,
                mask=mask,
                modality="CT" if i % 2 else "MR",
                source="unit",
            )
        )
    return out


def _raising(samples, after: int):
    for i, sample in enumerate(samples):
        if i == after:
            raise RuntimeError("boom")
        yield sample


def _visible(path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def test_write_dataset_names_rolls_over_and_records_manifest(tmp_path):
    samples = _samples(12)
    source = SourceInfo(name="unit", version="1", sha256="ab" * 32, licence="CC0-1.0")
    summary = write_dataset(
        samples,
        tmp_path,
        name="unit",
        max_samples_per_shard=3,
        sources=[source],
        command_line=["biomedgpt", "shard"],
        progress=False,
    )
    assert _visible(tmp_path) == [
        MANIFEST_NAME,
        "unit-test-000000.tar",
        "unit-test-000001.tar",
        "unit-train-000000.tar",
        "unit-train-000001.tar",
        "unit-val-000000.tar",
        "unit-val-000001.tar",
    ]
    manifest = read_manifest(tmp_path)
    assert manifest["num_samples"] == 12 == summary.num_samples
    assert manifest["counts"] == {
        "train": {"caption": 4},
        "val": {"classification": 4},
        "test": {"segmentation": 4},
    }
    assert manifest["counts_by_modality"] == {"CT": 6, "MR": 6}
    assert manifest["sources"] == [
        {"name": "unit", "version": "1", "sha256": "ab" * 32, "licence": "CC0-1.0"}
    ]
    assert manifest["licences"] == ["CC0-1.0"]
    assert manifest["command_line"] == ["biomedgpt", "shard"]
    assert manifest["created_at"] and manifest["schema_version"] == 1
    for shard in manifest["shards"]:
        data = (tmp_path / shard["file"]).read_bytes()
        assert shard["bytes"] == len(data)
        assert shard["sha256"] == hashlib.sha256(data).hexdigest()
        assert shard["num_samples"] in (1, 3)
    assert "12 samples" in summary.one_line() and "6 shards" in summary.one_line()


def test_shards_read_back_in_order_and_with_webdataset(tmp_path):
    import webdataset as wds

    samples = _samples(6, split_of=lambda i: "train")
    write_dataset(samples, tmp_path, name="unit", progress=False)
    tar = tmp_path / "unit-train-000000.tar"
    keys = [decode_sample(m).key for m in iter_tar_samples(tar)]
    assert keys == [s.key for s in samples]
    through_wds = [decode_sample(m) for m in wds.WebDataset(str(tar), shardshuffle=False)]
    assert [s.key for s in through_wds] == keys
    np.testing.assert_array_equal(through_wds[2].mask, samples[2].mask)


def test_same_input_gives_identical_shards(tmp_path):
    write_dataset(_samples(5), tmp_path / "a", name="unit", progress=False)
    write_dataset(_samples(5), tmp_path / "b", name="unit", progress=False)
    for name in _visible(tmp_path / "a"):
        if name.endswith(".tar"):
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_max_bytes_rolls_over(tmp_path):
    write_dataset(_samples(6, split_of=lambda i: "train"), tmp_path, name="u", max_bytes=4096, progress=False)
    shards = read_manifest(tmp_path)["shards"]
    assert len(shards) > 1 and sum(s["num_samples"] for s in shards) == 6


def test_exception_mid_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        write_dataset(
            _raising(_samples(10), after=7), tmp_path, name="unit", max_samples_per_shard=2, progress=False
        )
    assert _visible(tmp_path) == []


def test_invalid_sample_mid_write_leaves_nothing(tmp_path):
    samples = _samples(5)
    samples[3].fields = {}
    with pytest.raises(ValueError, match="text"):
        write_dataset(samples, tmp_path, name="unit", progress=False)
    assert _visible(tmp_path) == []


def test_duplicate_keys_are_refused(tmp_path):
    samples = _samples(4)
    samples[3].key = samples[0].key
    with pytest.raises(ValueError, match="duplicate"):
        write_dataset(samples, tmp_path, name="unit", progress=False)
    assert _visible(tmp_path) == []


def test_shard_writer_context_manager_is_atomic(tmp_path):
    samples = _samples(4, split_of=lambda i: "val")
    with (
        pytest.raises(RuntimeError),
        ShardWriter(tmp_path, name="w", split="val", max_samples_per_shard=1) as writer,
    ):
        for sample in samples[:3]:
            writer.write(sample)
        assert not list(tmp_path.glob("*.tar"))  # only partials so far
        raise RuntimeError("stop")
    assert _visible(tmp_path) == []
    with ShardWriter(tmp_path, name="w", split="val") as writer:
        for sample in samples:
            writer.write(sample)
    assert _visible(tmp_path) == ["w-val-000000.tar"]


def test_killed_process_leaves_only_a_partial_that_the_next_run_cleans(tmp_path):
    script = textwrap.dedent(
        f"""
        import os, numpy as np
        from biomedgpt.data.schema import Sample
        from biomedgpt.data.shards import write_dataset
        def samples():
            for i in range(50):
                if i == 20:
                    os._exit(9)  # dies without cleanup, like SIGKILL
                yield Sample(key=f"k{{i}}", task="caption", split="train",
                             image=np.zeros((8, 8), np.uint8), fields={{"text": "t"}})
        write_dataset(samples(), {str(tmp_path)!r}, name="crash", max_samples_per_shard=5, progress=False)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 9, done.stderr
    left = _visible(tmp_path)
    assert left and all(name.startswith(".") and name.endswith(".partial") for name in left)
    assert verify_dataset(tmp_path).failures  # no manifest: not a good folder
    write_dataset(_samples(3), tmp_path, name="crash", progress=False)
    assert not [name for name in _visible(tmp_path) if name.endswith(".partial")]


def test_existing_output_needs_overwrite_and_old_shards_survive_a_failed_overwrite(tmp_path):
    write_dataset(_samples(6), tmp_path, name="old", progress=False)
    before = {name: (tmp_path / name).read_bytes() for name in _visible(tmp_path)}
    with pytest.raises(ShardsExistError):
        write_dataset(_samples(3), tmp_path, name="new", progress=False)
    with pytest.raises(RuntimeError):
        write_dataset(_raising(_samples(6), after=4), tmp_path, name="old", overwrite=True, progress=False)
    assert {name: (tmp_path / name).read_bytes() for name in _visible(tmp_path)} == before
    write_dataset(
        _samples(2, split_of=lambda i: "train"), tmp_path, name="new", overwrite=True, progress=False
    )
    assert _visible(tmp_path) == [MANIFEST_NAME, "new-train-000000.tar"]
    assert not verify_dataset(tmp_path).failures


def test_verify_passes_then_fails_on_a_flipped_byte_or_truncation(tmp_path):
    write_dataset(_samples(9), tmp_path, name="v", progress=False)
    report = verify_dataset(tmp_path)
    assert report.failures == [] and report.samples == 9 and report.shards == 3
    shard = tmp_path / "v-train-000000.tar"
    good = shard.read_bytes()
    flipped = bytearray(good)
    flipped[len(good) // 3] ^= 0xFF
    shard.write_bytes(bytes(flipped))
    assert any("sha256" in line for line in verify_dataset(tmp_path).failures)
    shard.write_bytes(good[: len(good) // 2])
    failures = verify_dataset(tmp_path).failures
    assert any("bytes" in line for line in failures) and any(
        "v-train-000000.tar" in line for line in failures
    )
    shard.write_bytes(good)
    assert verify_dataset(tmp_path).failures == []


def test_verify_flags_unlisted_and_missing_shards(tmp_path):
    write_dataset(_samples(3), tmp_path, name="v", progress=False)
    (tmp_path / "v-train-000000.tar").rename(tmp_path / "v-train-000009.tar")
    failures = verify_dataset(tmp_path).failures
    assert any("v-train-000000.tar: missing" in line for line in failures)
    assert any("v-train-000009.tar: not listed" in line for line in failures)


def test_verify_validates_every_sample(tmp_path):
    import tarfile

    write_dataset(_samples(3, split_of=lambda i: "train"), tmp_path, name="v", progress=False)
    shard = tmp_path / "v-train-000000.tar"
    # Rewrite one JSON member with a broken task, then fix the manifest hash so only the schema fails.
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    import io

    with tarfile.open(shard, "w") as tar:
        for member, data in members:
            if member.name == "s-0001.json":
                doc = json.loads(data)
                doc["label"] = ""
                data = json.dumps(doc).encode()
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    manifest = read_manifest(tmp_path)
    manifest["shards"][0]["sha256"] = hashlib.sha256(shard.read_bytes()).hexdigest()
    manifest["shards"][0]["bytes"] = shard.stat().st_size
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(manifest))
    failures = verify_dataset(tmp_path).failures
    assert len(failures) == 1 and "s-0001" in failures[0] and "label" in failures[0]


def test_stats_match_what_was_written(tmp_path):
    write_dataset(_samples(10), tmp_path, name="st", max_samples_per_shard=2, progress=False)
    stats = dataset_stats(tmp_path)
    assert stats["num_samples"] == 10 and stats["num_shards"] == 6
    assert stats["by_split"] == {"train": 4, "val": 3, "test": 3}
    assert stats["by_task"] == {"caption": 4, "classification": 3, "segmentation": 3}
    assert stats["by_modality"] == {"CT": 5, "MR": 5}
    assert stats["bytes"] == sum(os.path.getsize(tmp_path / s["file"]) for s in stats["shards"])
