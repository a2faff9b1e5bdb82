"""The sample schema: per-task validation and the webdataset member encoding round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from biomedgpt.data.schema import (
    SCHEMA_VERSION,
    SPLITS,
    TASKS,
    Sample,
    SampleError,
    decode_sample,
    encode_sample,
)


def _image(dtype=np.uint8, shape=(16, 20)) -> np.ndarray:
    return (np.arange(np.prod(shape)).reshape(shape) % 200).astype(dtype)


def _sample(task: str, /, **overrides) -> Sample:
    fields = {
        "caption": {"text": "a chest x-ray"},
        "report": {"text": "Findings: clear lungs."},
        "vqa": {"question": "is there a lesion?", "answer": "no"},
        "classification": {"label": "normal"},
        "segmentation": {"target": "liver"},
        "grounding": {"boxes": [{"box": [1, 2, 10, 12], "label": "the lesion"}]},
        "detection": {"boxes": [{"box": [0, 0, 20, 16], "label": "lesion"}]},
        "image_infilling": {},
        "text_infilling": {"text": "the heart is normal in size"},
        "summarization": {"text": "long text", "summary": "short"},
    }[task]
    text_only = task in ("text_infilling", "summarization")
    values = {
        "key": f"k-{task}",
        "task": task,
        "split": "train",
        "image": None if text_only else _image(),
        "fields": fields,
        "mask": np.eye(16, 20, dtype=bool) if task == "segmentation" else None,
        "modality": None if text_only else "CT",
        "source": "unit",
    }
    values.update(overrides)
    return Sample(**values)


def test_tasks_and_splits_are_pinned():
    assert TASKS == (
        "caption",
        "report",
        "vqa",
        "classification",
        "segmentation",
        "grounding",
        "detection",
        "image_infilling",
        "text_infilling",
        "summarization",
    )
    assert SPLITS == ("train", "val", "test")


@pytest.mark.parametrize("task", TASKS)
def test_every_task_round_trips(task):
    sample = _sample(task)
    sample.validate()
    members = encode_sample(sample)
    back = decode_sample({"__key__": sample.key, **members})
    assert (back.key, back.task, back.split, back.modality, back.source) == (
        sample.key,
        task,
        "train",
        sample.modality,
        "unit",
    )
    assert back.fields == sample.fields
    if sample.image is None:
        assert back.image is None and "png" not in members
    else:
        np.testing.assert_array_equal(back.image, sample.image)
    if sample.mask is not None:
        np.testing.assert_array_equal(back.mask, sample.mask)
    doc = json.loads(members["json"])
    assert doc["schema_version"] == SCHEMA_VERSION and doc["task"] == task


@pytest.mark.parametrize(
    ("dtype", "shape", "member"),
    [
        (np.uint8, (8, 9), "png"),
        (np.uint8, (8, 9, 3), "png"),
        (np.uint16, (8, 9), "png"),
        (np.int16, (8, 9), "npy"),
        (np.float32, (8, 9), "npy"),
        (np.uint16, (8, 9, 3), "npy"),
    ],
)
def test_image_encoding_keeps_dtype_and_intensity(dtype, shape, member):
    image = _image(dtype, shape) * (300 if dtype in (np.uint16, np.int16) else 1)
    image = image.astype(dtype)
    sample = _sample("image_infilling", image=image)
    members = encode_sample(sample)
    assert member in members
    back = decode_sample({"__key__": sample.key, **members})
    assert back.image.dtype == image.dtype
    np.testing.assert_array_equal(back.image, image)


def test_mask_is_binary_png_0_255():
    from io import BytesIO

    from PIL import Image

    mask = np.zeros((16, 20), dtype=np.uint8)
    mask[2:5, 3:7] = 7  # any nonzero value is foreground
    members = encode_sample(_sample("segmentation", mask=mask))
    pixels = np.asarray(Image.open(BytesIO(members["mask.png"])))
    assert set(np.unique(pixels)) == {0, 255}
    assert (pixels == 255).sum() == 12


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"key": "has.dot"}, "key"),
        ({"key": ""}, "key"),
        ({"task": "captioning"}, "task"),
        ({"split": "dev"}, "split"),
        ({"fields": {"question": "q?"}}, "answer"),
        ({"fields": {"question": "q?", "answer": ""}}, "answer"),
        ({"image": None}, "image"),
        ({"image": np.zeros((4, 4, 2), np.uint8)}, "image"),
        ({"fields": {"question": "q?", "answer": "a", "task": "x"}}, "task"),
        ({"fields": {"question": "q?", "answer": "a"}, "extra": {"x": object()}}, "extra"),
    ],
)
def test_validate_names_the_field(overrides, field):
    with pytest.raises(SampleError) as info:
        _sample("vqa", **overrides).validate()
    assert info.value.field == field


def test_text_tasks_take_no_image():
    with pytest.raises(SampleError) as info:
        _sample("summarization", image=_image()).validate()
    assert info.value.field == "image"
    with pytest.raises(SampleError) as info:
        _sample("summarization", fields={"text": "t"}).validate()
    assert info.value.field == "summary"


def test_segmentation_needs_a_mask_of_the_image_geometry():
    with pytest.raises(SampleError) as info:
        _sample("segmentation", mask=None).validate()
    assert info.value.field == "mask"
    with pytest.raises(SampleError) as info:
        _sample("segmentation", mask=np.zeros((15, 20), bool)).validate()
    assert info.value.field == "mask"


@pytest.mark.parametrize(
    ("box", "field"),
    [
        ([0, 0, 21, 10], "boxes[0].box"),  # past the right edge (width 20)
        ([-1, 0, 5, 5], "boxes[0].box"),
        ([5, 0, 5, 5], "boxes[0].box"),  # x1 <= x0
        ([0, 0, 5], "boxes[0].box"),
        ([0, 0, 5, float("nan")], "boxes[0].box"),
    ],
)
def test_boxes_must_lie_inside_the_image(box, field):
    with pytest.raises(SampleError) as info:
        _sample("grounding", fields={"boxes": [{"box": box, "label": "x"}]}).validate()
    assert info.value.field == field


def test_grounding_needs_a_box_detection_may_be_empty():
    with pytest.raises(SampleError):
        _sample("grounding", fields={"boxes": []}).validate()
    _sample("detection", fields={"boxes": []}).validate()
    with pytest.raises(SampleError) as info:
        _sample("detection", fields={"boxes": [{"box": [0, 0, 1, 1], "label": ""}]}).validate()
    assert info.value.field == "boxes[0].label"


def test_decode_rejects_broken_members():
    sample = _sample("caption")
    members = {"__key__": sample.key, **encode_sample(sample)}
    with pytest.raises(SampleError, match="json"):
        decode_sample({k: v for k, v in members.items() if k != "json"})
    with pytest.raises(SampleError) as info:
        decode_sample({k: v for k, v in members.items() if k != "png"})
    assert info.value.field == "image"
    with pytest.raises(SampleError) as info:
        decode_sample({**members, "png": members["png"][:40]})
    assert info.value.field == "image"
    with pytest.raises(SampleError) as info:
        decode_sample({**members, "__key__": "other"})
    assert info.value.field == "key"
    doc = json.loads(members["json"])
    doc["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(SampleError, match="schema_version"):
        decode_sample({**members, "json": json.dumps(doc).encode()})
