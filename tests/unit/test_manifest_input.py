"""JSONL manifest input: every problem found before anything is written; valid lines become shards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from biomedgpt.data.schema import decode_sample
from biomedgpt.data.shards import ShardsExistError, iter_tar_samples, read_manifest
from biomedgpt.ingest.manifest_input import ManifestError, shard_manifest, validate_manifest


def _png(path: Path, pixels: np.ndarray) -> str:
    Image.fromarray(pixels).save(path)
    return path.name


def _write(path: Path, lines: list) -> Path:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    gray = (np.arange(24 * 32).reshape(24, 32) % 251).astype(np.uint8)
    _png(data / "a.png", gray)  # 32 wide, 24 high
    _png(data / "b16.png", (np.arange(24 * 32).reshape(24, 32) * 60).astype(np.uint16))
    mask = np.zeros((24, 32), np.uint8)
    mask[5:9, 10:20] = 1
    _png(data / "a_mask.png", mask)
    _png(data / "small_mask.png", np.zeros((10, 10), np.uint8))
    return data


def _read_all(out: Path) -> dict:
    samples = {}
    for tar in sorted(out.glob("*.tar")):
        for members in iter_tar_samples(tar):
            sample = decode_sample(members)
            samples[sample.key] = sample
    return samples


GOOD = [
    {
        "image": "a.png",
        "task": "caption",
        "split": "train",
        "text": "a gray ramp",
        "id": "cap.1",
        "site": "A",
    },
    {"image": "b16.png", "task": "vqa", "split": "val", "question": "is it bright?", "answer": "yes"},
    {"image": "a.png", "task": "classification", "split": "test", "label": "normal", "modality": "CR"},
    {"image": "a.png", "mask": "a_mask.png", "task": "segmentation", "split": "train", "target": "lesion"},
    {
        "image": "a.png",
        "task": "grounding",
        "split": "train",
        "boxes": [{"box": [10, 5, 20, 9], "label": "lesion"}],
    },
    {"task": "summarization", "split": "train", "text": "long findings", "summary": "short"},
]


def test_valid_manifest_becomes_shards(folder, tmp_path):
    manifest = _write(folder / "m.jsonl", GOOD)
    result = shard_manifest(manifest, tmp_path / "out", name="m", licence="CC0-1.0", progress=False)
    assert result.skipped == [] and result.summary.num_samples == 6
    samples = _read_all(tmp_path / "out")
    assert set(samples) == {"cap_1", "m-0000002", "m-0000003", "m-0000004", "m-0000005", "m-0000006"}
    cap = samples["cap_1"]
    np.testing.assert_array_equal(cap.image, np.asarray(Image.open(folder / "a.png")))
    assert cap.fields == {"text": "a gray ramp"} and cap.extra["site"] == "A"
    assert cap.extra["origin"] == {"image": "a.png", "id": "cap.1", "line": 1}
    vqa = samples["m-0000002"]
    assert vqa.image.dtype == np.uint16 and vqa.image.max() > 255  # 16-bit intensity kept
    assert samples["m-0000003"].modality == "CR"
    seg = samples["m-0000004"]
    assert seg.mask.sum() == 40 and seg.mask[5:9, 10:20].all()
    assert samples["m-0000005"].fields["boxes"] == [{"box": [10, 5, 20, 9], "label": "lesion"}]
    assert samples["m-0000006"].image is None
    doc = read_manifest(tmp_path / "out")
    assert doc["sources"][0]["licence"] == "CC0-1.0" and len(doc["sources"][0]["sha256"]) == 64
    assert doc["counts"] == {
        "train": {"caption": 1, "grounding": 1, "segmentation": 1, "summarization": 1},
        "val": {"vqa": 1},
        "test": {"classification": 1},
    }


BAD = [
    {"image": "a.png", "task": "caption", "split": "train", "text": "fine"},  # 1 ok
    {"image": "missing.png", "task": "caption", "split": "train", "text": "x"},  # 2 image
    {"image": "a.png", "task": "captoin", "split": "train", "text": "x"},  # 3 task
    {"image": "a.png", "task": "vqa", "split": "train", "question": "q?"},  # 4 answer
    {
        "image": "a.png",
        "task": "grounding",
        "split": "val",
        "boxes": [{"box": [0, 0, 40, 10], "label": "x"}],
    },  # 5
    "{not json",  # 6 json
    {"image": "a.png", "task": "caption", "split": "training", "text": "x"},  # 7 split
    {
        "image": "a.png",
        "task": "detection",
        "split": "val",
        "boxes": [{"box": [9, 0, 3, 5], "label": "x"}],
    },  # 8
    {
        "image": "a.png",
        "mask": "small_mask.png",
        "task": "segmentation",
        "split": "train",
        "target": "t",
    },  # 9
    {"image": "a.png", "task": "caption", "split": "test", "text": "ok too"},  # 10 ok
    {"image": "a.png", "task": "summarization", "split": "test", "text": "t", "summary": "s"},  # 11 image
    {"image": "a.png", "task": "caption", "split": "test", "text": "x", "slice": 3},  # 12 slice on a png
    {"image": "gone.png", "task": "nope", "split": "test"},  # 13 task and image
]
EXPECTED = {
    (2, "image"),
    (3, "task"),
    (4, "answer"),
    (5, "boxes[0].box"),
    (6, "json"),
    (7, "split"),
    (8, "boxes[0].box"),
    (9, "mask"),
    (11, "image"),
    (12, "slice"),
    (13, "task"),
    (13, "image"),
}


def test_every_bad_line_is_reported_and_nothing_written(folder, tmp_path):
    manifest = _write(folder / "bad.jsonl", BAD)
    out = tmp_path / "out"
    with pytest.raises(ManifestError) as info:
        shard_manifest(manifest, out, name="bad", progress=False)
    found = {(p.line, p.field) for p in info.value.problems}
    assert found == EXPECTED
    assert info.value.bad_lines == [2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13]
    messages = {(p.line, p.field): p.message for p in info.value.problems}
    assert "did you mean 'caption'" in messages[(3, "task")]
    assert "did you mean 'train'" in messages[(7, "split")]
    assert "outside the 32x24 image" in messages[(5, "boxes[0].box")]
    assert "x1 (3) must be greater than x0 (9)" in messages[(8, "boxes[0].box")]
    assert "file not found" in messages[(2, "image")]
    assert "line 4: answer: missing" in str(info.value)
    assert not out.exists() or list(out.iterdir()) == []


def test_skip_invalid_writes_the_rest_and_reports(folder, tmp_path):
    manifest = _write(folder / "bad.jsonl", BAD)
    result = shard_manifest(manifest, tmp_path / "out", name="bad", skip_invalid=True, progress=False)
    assert {(p.line, p.field) for p in result.skipped} == EXPECTED
    assert set(_read_all(tmp_path / "out")) == {"bad-0000001", "bad-0000010"}


def test_a_file_that_fails_to_load_after_a_good_header_aborts_cleanly(folder, tmp_path):
    data = (folder / "a.png").read_bytes()
    (folder / "broken.png").write_bytes(data[: len(data) // 2])  # header fine, pixel data cut
    lines = [GOOD[0], {"image": "broken.png", "task": "caption", "split": "train", "text": "x"}]
    manifest = _write(folder / "m.jsonl", lines)
    with pytest.raises(ManifestError) as info:
        shard_manifest(manifest, tmp_path / "out", name="m", progress=False)
    assert [(p.line, p.field) for p in info.value.problems] == [(2, "image")]
    assert list((tmp_path / "out").iterdir()) == []
    result = shard_manifest(manifest, tmp_path / "out", name="m", skip_invalid=True, progress=False)
    assert result.summary.num_samples == 1 and [p.line for p in result.skipped] == [2]


def test_duplicate_ids_and_text_tasks(folder):
    lines = [
        {"image": "a.png", "task": "caption", "split": "train", "text": "x", "id": "a.1"},
        {"image": "a.png", "task": "caption", "split": "train", "text": "x", "id": "a/1"},  # same key a_1
        {"task": "text_infilling", "split": "train", "text": "the heart is normal"},
    ]
    entries, problems = validate_manifest(_write(folder / "m.jsonl", lines))
    assert [(p.line, p.field) for p in problems] == [(2, "id")]
    assert [e.key for e in entries] == ["a_1", "line-0000003"]
    assert entries[1].image is None


def test_existing_output_is_refused_before_validation(folder, tmp_path):
    manifest = _write(folder / "m.jsonl", GOOD[:1])
    shard_manifest(manifest, tmp_path / "out", name="m", progress=False)
    with pytest.raises(ShardsExistError):
        shard_manifest(_write(folder / "bad.jsonl", BAD), tmp_path / "out", name="m", progress=False)
    shard_manifest(manifest, tmp_path / "out", name="m", overwrite=True, progress=False)


def test_volume_slices_with_masks(folder, tmp_path):
    nrrd = pytest.importorskip("nrrd")
    volume = np.random.default_rng(0).normal(100.0, 20.0, (20, 30, 6)).astype(np.float32)
    labels = np.zeros((20, 30, 6), np.uint8)
    labels[4:7, 10:12, 2] = 1  # 6 voxels: well under 1% of a slice
    nrrd.write(str(folder / "vol.nrrd"), volume)
    nrrd.write(str(folder / "vol_mask.nrrd"), labels)
    nrrd.write(str(folder / "other_mask.nrrd"), np.zeros((20, 30, 5), np.uint8))
    base = {"image": "vol.nrrd", "mask": "vol_mask.nrrd", "task": "segmentation", "target": "lesion"}
    lines = [
        {**base, "split": "train", "slice": 2, "modality": "MR"},
        {**base, "split": "train", "slice": 6},  # out of range
        {**base, "split": "train"},  # slice missing
        {**base, "split": "train", "slice": 1, "mask": "other_mask.nrrd"},  # geometry
    ]
    manifest = _write(folder / "vol.jsonl", lines)
    with pytest.raises(ManifestError) as info:
        shard_manifest(manifest, tmp_path / "out", name="vol", progress=False)
    assert [(p.line, p.field) for p in info.value.problems] == [(2, "slice"), (3, "slice"), (4, "mask")]
    result = shard_manifest(manifest, tmp_path / "out", name="vol", skip_invalid=True, progress=False)
    assert result.summary.num_samples == 1
    (sample,) = _read_all(tmp_path / "out").values()
    assert sample.modality == "MR" and sample.image.shape == sample.mask.shape == (30, 20)
    assert sample.mask.sum() == 6  # masks are read as raw labels
    np.testing.assert_array_equal(sample.mask, labels[:, :, 2].T != 0)


def test_npy_images_and_masks(folder, tmp_path):
    image = (np.arange(24 * 32).reshape(24, 32) * 50).astype(np.uint16)
    np.save(folder / "img.npy", image)
    labels = np.zeros((24, 32), np.int64)
    labels[3:6, 4:9] = 2
    np.save(folder / "lab.npy", labels)
    np.save(folder / "wrong.npy", np.zeros((24, 31), np.int64))
    base = {"image": "img.npy", "task": "segmentation", "split": "train", "target": "organ"}
    lines = [{**base, "mask": "lab.npy"}, {**base, "mask": "wrong.npy"}]
    manifest = _write(folder / "npy.jsonl", lines)
    result = shard_manifest(manifest, tmp_path / "out", name="npy", skip_invalid=True, progress=False)
    assert [(p.line, p.field) for p in result.skipped] == [(2, "mask")]
    (sample,) = _read_all(tmp_path / "out").values()
    np.testing.assert_array_equal(sample.image, image)  # uint16 intensities kept
    np.testing.assert_array_equal(sample.mask, labels != 0)


def test_exif_orientation_turns_image_and_mask_alike(tmp_path: Path):
    """A phone photo stored sideways with an EXIF Orientation tag: shards hold it upright, mask included."""
    from biomedgpt.ingest.imageio import load_image
    from biomedgpt.ingest.manifest_input import load_mask

    stored = np.zeros((20, 40), np.uint8)
    stored[:, :8] = 255  # a band along the stored left edge
    for name, mode in (("photo.jpg", "JPEG"), ("mask.png", "PNG")):
        image = Image.fromarray(stored)
        exif = image.getexif()
        exif[0x0112] = 6  # viewers rotate it 90 degrees clockwise: the band ends up along the top
        image.save(tmp_path / name, format=mode, exif=exif.tobytes())
    pixels = load_image(tmp_path / "photo.jpg").pixels
    mask = load_mask(tmp_path / "mask.png", slice_index=None)
    assert pixels.shape == mask.shape == (40, 20)
    assert mask[:8].all() and not mask[8:].any()
    assert pixels[:6].mean() > 200 and pixels[10:].mean() < 30
