"""The sample schema: one image (or one slice of a volume) with a task and its targets.

A `Sample` is what every converter produces and what every shard holds. In a webdataset tar a
sample is a group of members sharing one key (data_shards/README.md):

    {key}.png        the image: 8-bit png (uint8 gray or RGB) or 16-bit png (uint16 gray)
    {key}.npy        the image instead, for any other dtype (int16 CT, float), read with allow_pickle=False
    {key}.json       task fields + key, task, split, modality, source, schema_version, image_info, extra
    {key}.mask.png   optional binary mask, 0 = background, 255 = foreground

Keys hold no dots: webdataset splits a member name at the first dot of its basename.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
TASKS = (
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
SPLITS = ("train", "val", "test")

# Fields each task needs in `Sample.fields` (segmentation also needs `Sample.mask`).
TASK_FIELDS: dict[str, tuple[str, ...]] = {
    "caption": ("text",),
    "report": ("text",),
    "vqa": ("question", "answer"),
    "classification": ("label",),
    "segmentation": ("target",),
    "grounding": ("boxes",),
    "detection": ("boxes",),
    "image_infilling": (),
    "text_infilling": ("text",),
    "summarization": ("text", "summary"),
}
TEXT_ONLY_TASKS = frozenset({"text_infilling", "summarization"})
MASK_TASKS = frozenset({"segmentation"})
BOX_FIELDS = frozenset({"boxes"})
# Names the JSON member uses itself; task fields may not take them.
RESERVED_KEYS = frozenset(
    {"key", "task", "split", "modality", "source", "schema_version", "image_info", "mask_member", "extra"}
)
KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
MASK_MEMBER = "mask.png"


class SampleError(ValueError):
    """A sample breaks the schema; `field` names the offending field."""

    def __init__(self, field: str, message: str, *, key: str | None = None) -> None:
        self.field = field
        self.message = message
        self.key = key
        where = f"sample {key!r}: " if key else ""
        super().__init__(f"{where}{field}: {message}")


@dataclass(kw_only=True)
class Sample:
    """One training example: an optional image, its task, split and targets."""

    key: str
    """Unique id inside a dataset: letters, digits, `_` and `-` only (no dots), at most 128 chars."""
    task: str
    """One of `TASKS`."""
    split: str
    """One of `SPLITS`."""
    image: np.ndarray | None = None
    """(H, W) or (H, W, 3) pixels; uint8/uint16 go to png, any other dtype to npy. None for text tasks."""
    fields: dict[str, Any] = field(default_factory=dict)
    """Task fields (text, question, answer, label, target, boxes, summary, ...); JSON-serialisable."""
    mask: np.ndarray | None = None
    """(H, W) binary mask, nonzero = foreground; required for segmentation, optional otherwise."""
    modality: str | None = None
    """Imaging modality, e.g. "CT", "MR", "CR" (DICOM codes where known)."""
    source: str | None = None
    """Name of the dataset or generator the sample comes from."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Anything else worth keeping (JSON-serialisable); never read by the trainer."""

    def validate(self) -> None:
        """Raise `SampleError` naming the first field that breaks the schema."""
        problem = first_problem(self)
        if problem is not None:
            raise SampleError(problem[0], problem[1], key=self.key if isinstance(self.key, str) else None)


def first_problem(sample: Sample) -> tuple[str, str] | None:
    """(field, message) for the first schema violation of `sample`, or None if it is valid."""
    for check in (_check_identity, _check_image, _check_fields, _check_mask, _check_json):
        problem = check(sample)
        if problem is not None:
            return problem
    return None


def _check_identity(sample: Sample) -> tuple[str, str] | None:
    if not isinstance(sample.key, str) or not KEY_RE.match(sample.key):
        return "key", f"{sample.key!r} must be 1-128 letters, digits, '_' or '-' (no dots), starting alnum"
    if sample.task not in TASKS:
        return "task", f"unknown task {sample.task!r}; expected one of {', '.join(TASKS)}"
    if sample.split not in SPLITS:
        return "split", f"unknown split {sample.split!r}; expected one of {', '.join(SPLITS)}"
    for name in ("modality", "source"):
        value = getattr(sample, name)
        if value is not None and (not isinstance(value, str) or not value):
            return name, "must be a non-empty string or None"
    return None


def _check_image(sample: Sample) -> tuple[str, str] | None:
    image = sample.image
    if sample.task in TEXT_ONLY_TASKS:
        return ("image", f"task {sample.task} takes no image") if image is not None else None
    if image is None:
        return "image", f"task {sample.task} needs an image"
    if not isinstance(image, np.ndarray):
        return "image", f"must be a numpy array, got {type(image).__name__}"
    if image.dtype.kind not in "uif":
        return "image", f"dtype {image.dtype} is not an integer or float type"
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        return "image", f"shape {image.shape} is neither (H, W) nor (H, W, 3)"
    if image.shape[0] == 0 or image.shape[1] == 0:
        return "image", f"shape {image.shape} is empty"
    return None


def _check_fields(sample: Sample) -> tuple[str, str] | None:
    if not isinstance(sample.fields, dict):
        return "fields", "must be a dict"
    reserved = sorted(RESERVED_KEYS & set(sample.fields))
    if reserved:
        return reserved[0], "is a reserved name and cannot be a task field"
    for name in TASK_FIELDS[sample.task]:
        if name not in sample.fields:
            return name, f"missing (task {sample.task} needs {', '.join(TASK_FIELDS[sample.task])})"
        value = sample.fields[name]
        if name in BOX_FIELDS:
            problems = box_problems(
                value, image_size=_image_size(sample), allow_empty=sample.task == "detection"
            )
            if problems:
                return problems[0]
        elif not isinstance(value, str) or not value.strip():
            return name, f"must be a non-empty string, got {value!r}"
    return None


def _check_mask(sample: Sample) -> tuple[str, str] | None:
    mask = sample.mask
    if mask is None:
        return ("mask", f"task {sample.task} needs a mask") if sample.task in MASK_TASKS else None
    if sample.task in TEXT_ONLY_TASKS:
        return "mask", f"task {sample.task} takes no mask"
    if not isinstance(mask, np.ndarray) or mask.ndim != 2:
        return "mask", "must be a 2-D numpy array"
    if mask.dtype.kind not in "biu":
        return "mask", f"dtype {mask.dtype} is not bool or integer"
    if sample.image is not None and mask.shape != sample.image.shape[:2]:
        return "mask", f"shape {mask.shape} differs from the image's {sample.image.shape[:2]}"
    return None


def _check_json(sample: Sample) -> tuple[str, str] | None:
    for name, value in [*sample.fields.items(), ("extra", sample.extra)]:
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as err:
            return name, f"is not JSON-serialisable: {err}"
    if not isinstance(sample.extra, dict):
        return "extra", "must be a dict"
    return None


def _image_size(sample: Sample) -> tuple[int, int] | None:
    if isinstance(sample.image, np.ndarray) and sample.image.ndim >= 2:
        return int(sample.image.shape[1]), int(sample.image.shape[0])
    return None


def box_problems(
    boxes: Any, *, image_size: tuple[int, int] | None, allow_empty: bool = False
) -> list[tuple[str, str]]:
    """Every problem of a `boxes` list as (field, message); `image_size` is (width, height) in pixels.

    A box is {"box": [x0, y0, x1, y1], "label": str} in pixel-edge coordinates of the image:
    0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height.
    """
    if not isinstance(boxes, list):
        return [("boxes", f"must be a list of {{'box': [x0, y0, x1, y1], 'label': ...}}, got {boxes!r}")]
    if not boxes and not allow_empty:
        return [("boxes", "must hold at least one box")]
    problems = []
    for i, entry in enumerate(boxes):
        where = f"boxes[{i}]"
        if not isinstance(entry, dict) or "box" not in entry:
            problems.append((where, "must be an object with 'box' and 'label'"))
            continue
        label = entry.get("label")
        if not isinstance(label, str) or not label.strip():
            problems.append((f"{where}.label", f"must be a non-empty string, got {label!r}"))
        problems.extend(_coord_problems(entry["box"], f"{where}.box", image_size))
    return problems


def _coord_problems(box: Any, where: str, image_size: tuple[int, int] | None) -> list[tuple[str, str]]:
    is_number = (
        [isinstance(v, (int, float)) and not isinstance(v, bool) for v in box]
        if isinstance(box, list)
        else []
    )
    if len(is_number) != 4 or not all(is_number) or not all(math.isfinite(v) for v in box):
        return [(where, f"must be 4 finite numbers [x0, y0, x1, y1], got {box!r}")]
    x0, y0, x1, y1 = box
    problems = []
    if x1 <= x0:
        problems.append((where, f"x1 ({x1}) must be greater than x0 ({x0})"))
    if y1 <= y0:
        problems.append((where, f"y1 ({y1}) must be greater than y0 ({y0})"))
    if image_size is not None:
        width, height = image_size
        if min(x0, y0) < 0 or x1 > width or y1 > height:
            problems.append((where, f"{box} lies outside the {width}x{height} image"))
    return problems


# ---------------------------------------------------------------------------------------------
# Encoding to and from webdataset members


def encode_sample(sample: Sample) -> dict[str, bytes]:
    """Validate `sample` and return its members as {extension: bytes} ("json", "png"|"npy", "mask.png")."""
    sample.validate()
    members: dict[str, bytes] = {}
    image_info = None
    if sample.image is not None:
        ext, pixels = _encode_image(sample.image)
        members[ext] = pixels
        image_info = {"member": ext, "dtype": str(sample.image.dtype), "shape": list(sample.image.shape)}
    if sample.mask is not None:
        members[MASK_MEMBER] = _png_bytes(np.where(sample.mask != 0, 255, 0).astype(np.uint8))
    doc = {
        "schema_version": SCHEMA_VERSION,
        "key": sample.key,
        "task": sample.task,
        "split": sample.split,
        "modality": sample.modality,
        "source": sample.source,
        "image_info": image_info,
        "mask_member": MASK_MEMBER if sample.mask is not None else None,
        **sample.fields,
        "extra": sample.extra,
    }
    members["json"] = json.dumps(doc, ensure_ascii=False, allow_nan=False, sort_keys=False).encode("utf-8")
    return members


def _image_ext(image: np.ndarray) -> str:
    if image.dtype == np.uint8 or (image.dtype == np.uint16 and image.ndim == 2):
        return "png"
    return "npy"


def _encode_image(image: np.ndarray) -> tuple[str, bytes]:
    if _image_ext(image) == "png":
        return "png", _png_bytes(image)
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(image), allow_pickle=False)
    return "npy", buffer.getvalue()


def _png_bytes(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def decode_sample(members: Mapping[str, Any], *, validate: bool = True) -> Sample:
    """Build a `Sample` from one webdataset group: {"__key__": key, "json": bytes, "png"|"npy": bytes, ...}.

    Values may be raw bytes (as read from the tar) or already decoded (a dict for json, an array
    for images). Raises `SampleError` on a member that is missing, unreadable or inconsistent.
    """
    doc = _decode_json(members.get("json"))
    key = members.get("__key__", doc.get("key"))
    key = key.rsplit("/", 1)[-1] if isinstance(key, str) else key
    version = doc.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise SampleError("schema_version", f"{version!r} is not supported (<= {SCHEMA_VERSION})", key=key)
    if doc.get("key") != key:
        raise SampleError("key", f"json says {doc.get('key')!r} but the member key is {key!r}", key=key)
    image = _decode_image(members, doc.get("image_info"), key)
    mask = None
    if doc.get("mask_member"):
        if doc["mask_member"] not in members:
            raise SampleError("mask", f"member {key}.{doc['mask_member']} is missing", key=key)
        mask = _decode_pixels(members[doc["mask_member"]], "png", "mask", key) != 0
    fields = {k: v for k, v in doc.items() if k not in RESERVED_KEYS}
    sample = Sample(
        key=key,
        task=doc.get("task"),
        split=doc.get("split"),
        image=image,
        fields=fields,
        mask=mask,
        modality=doc.get("modality"),
        source=doc.get("source"),
        extra=doc.get("extra") or {},
    )
    if validate:
        sample.validate()
    return sample


def _decode_json(value: Any) -> dict[str, Any]:
    if value is None:
        raise SampleError("json", "member is missing")
    if isinstance(value, dict):
        return value
    try:
        doc = json.loads(value)
    except (ValueError, UnicodeDecodeError) as err:
        raise SampleError("json", f"is not valid JSON: {err}") from err
    if not isinstance(doc, dict):
        raise SampleError("json", "must hold a JSON object")
    return doc


def _decode_image(members: Mapping[str, Any], info: Any, key: str) -> np.ndarray | None:
    if info is None:
        return None
    if not isinstance(info, dict) or info.get("member") not in ("png", "npy"):
        raise SampleError("image_info", f"{info!r} names no png or npy member", key=key)
    ext = info["member"]
    if ext not in members:
        raise SampleError("image", f"member {key}.{ext} is missing", key=key)
    image = _decode_pixels(members[ext], ext, "image", key)
    if str(image.dtype) != info.get("dtype") or list(image.shape) != info.get("shape"):
        raise SampleError(
            "image",
            f"decoded {image.dtype}{list(image.shape)} but json says {info.get('dtype')}{info.get('shape')}",
            key=key,
        )
    return image


def _decode_pixels(value: Any, ext: str, name: str, key: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    try:
        if ext == "npy":
            return np.load(io.BytesIO(value), allow_pickle=False)
        from PIL import Image

        with Image.open(io.BytesIO(value)) as img:
            img.load()
            pixels = np.asarray(img)
        # Older Pillow reads 16-bit gray png as mode "I" (int32); the schema stores uint16.
        return pixels.astype(np.uint16) if pixels.dtype == np.int32 else pixels
    except Exception as err:  # PIL raises many types on corrupt data; all mean "unreadable"
        raise SampleError(name, f"member {key}.{ext} cannot be decoded: {err}", key=key) from err
