"""The generic JSONL manifest input of `biomedgpt shard`: validate every line, then build samples.

One JSON object per line; paths are relative to the manifest file (absolute paths work too):

    {"image": "img/001.png", "task": "caption", "split": "train", "text": "a chest x-ray"}
    {"image": "ct.nii.gz", "slice": 40, "mask": "liver.nii.gz", "task": "segmentation",
     "split": "val", "target": "liver", "modality": "CT", "id": "case7-40"}

Required: `image` (png, jpg, dcm, nii, nii.gz, nrrd or npy; none for the text-only tasks
summarization and text_infilling), `task`, `split`, and the task's fields (`schema.TASK_FIELDS`):
caption/report: text; vqa: question, answer (optional answer_type); classification: label;
segmentation: mask (same geometry as the image, nonzero = foreground) + target;
grounding/detection: boxes [{"box": [x0, y0, x1, y1], "label": ...}] in pixels of the image;
summarization: text + summary; text_infilling: text. Optional: `slice` (index along the last axis
of a volume; the mask volume is sliced the same way), `modality`, `id` (becomes the sample key),
and any other field, kept in `Sample.extra`.

Every line is checked before anything is written, and every problem is collected as
(line, field, message); `ManifestError` lists them all. Validation reads image headers only
(`imageio.check_image_size`, `volumes.volume_shape`), except for a `slice` of a non-volume file
(multi-frame DICOM, 3-D npy), which is loaded once to check the index.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from biomedgpt.data.schema import (
    SPLITS,
    TASK_FIELDS,
    TASKS,
    TEXT_ONLY_TASKS,
    Sample,
    SampleError,
    box_problems,
)
from biomedgpt.data.shards import (
    DEFAULT_MAX_BYTES,
    DatasetSummary,
    ShardsExistError,
    SourceInfo,
    existing_outputs,
    write_dataset,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".nii", ".nii.gz", ".nrrd", ".npy")
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd")
CONTROL_KEYS = frozenset({"image", "task", "split", "mask", "slice", "modality", "id"})
OPTIONAL_FIELDS: dict[str, tuple[str, ...]] = {"vqa": ("answer_type",)}
"""Task fields kept in `Sample.fields` when present (everything else unknown goes to `extra`)."""


@dataclass(frozen=True, order=True)
class ManifestProblem:
    """One problem of one manifest line."""

    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.message}"


class ManifestError(ValueError):
    """The manifest has invalid lines; `problems` lists every one of them."""

    def __init__(self, problems: Sequence[ManifestProblem]) -> None:
        self.problems = sorted(problems)
        lines = "\n".join(str(p) for p in self.problems)
        super().__init__(f"{len(self.bad_lines)} invalid manifest lines:\n{lines}")

    @property
    def bad_lines(self) -> list[int]:
        return sorted({p.line for p in self.problems})


@dataclass(kw_only=True)
class ManifestEntry:
    """One valid manifest line, resolved: absolute paths, a sample key, fields split from extras."""

    line: int
    key: str
    task: str
    split: str
    image: Path | None
    mask: Path | None = None
    slice: int | None = None
    modality: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class ManifestShardResult:
    """What `shard_manifest` wrote and which lines it skipped (with --skip-invalid)."""

    summary: DatasetSummary
    skipped: list[ManifestProblem]


# ---------------------------------------------------------------------------------------------
# Validation


def validate_manifest(
    path: str | os.PathLike[str], *, key_prefix: str = "line", progress: bool = False
) -> tuple[list[ManifestEntry], list[ManifestProblem]]:
    """Check every line; returns (valid entries, every problem of the invalid lines)."""
    from tqdm import tqdm

    path = Path(path)
    entries: list[ManifestEntry] = []
    problems: list[ManifestProblem] = []
    keys: dict[str, int] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, text in enumerate(tqdm(lines, disable=not progress, unit="line", desc="validate"), start=1):
        if not text.strip():
            continue
        found: list[tuple[str, str]] = []
        entry = _check_line(text, number, path.parent, key_prefix, found)
        if entry is not None and entry.key in keys:
            found.append(("id", f"key {entry.key!r} duplicates line {keys[entry.key]}"))
        if found:
            problems += [ManifestProblem(number, name, message) for name, message in found]
        elif entry is not None:
            keys[entry.key] = number
            entries.append(entry)
    return entries, problems


def _check_line(
    text: str, number: int, base: Path, key_prefix: str, found: list[tuple[str, str]]
) -> ManifestEntry | None:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        found.append(("json", f"invalid JSON: {err.msg} at column {err.colno}"))
        return None
    if not isinstance(doc, dict):
        found.append(("json", f"must be a JSON object, got {type(doc).__name__}"))
        return None
    task = _check_choice(doc, "task", TASKS, found)
    split = _check_choice(doc, "split", SPLITS, found)
    modality = doc.get("modality")
    if modality is not None and (not isinstance(modality, str) or not modality):
        found.append(("modality", f"must be a non-empty string, got {modality!r}"))
    key = _key(doc, number, key_prefix, found)
    if task is None:  # still report files that are missing
        for name in ("image", "mask"):
            _check_path(doc, name, base, found, required=False)
        return None
    fields = _check_fields(doc, task, found)
    image = mask = None
    index = _check_slice(doc, found)
    if task in TEXT_ONLY_TASKS:
        for name in ("image", "mask", "slice"):
            if name in doc:
                found.append((name, f"task {task} takes no {name}"))
    else:
        image = _check_path(doc, "image", base, found, required=True)
        mask = _check_path(doc, "mask", base, found, required=task == "segmentation")
        size = _check_geometry(image, mask, index, found) if image is not None else None
        if "boxes" in fields:
            found += box_problems(fields["boxes"], image_size=size, allow_empty=task == "detection")
    extra = {k: v for k, v in doc.items() if k not in CONTROL_KEYS and k not in fields}
    extra.setdefault(
        "origin", {k: doc[k] for k in ("image", "mask", "slice", "id") if k in doc} | {"line": number}
    )
    return ManifestEntry(
        line=number,
        key=key,
        task=task,
        split=split or "",
        image=image,
        mask=mask,
        slice=index,
        modality=modality,
        fields=fields,
        extra=extra,
    )


def _check_choice(doc: dict, name: str, choices: Sequence[str], found: list) -> str | None:
    value = doc.get(name)
    if value is None:
        found.append((name, f"missing (one of {', '.join(choices)})"))
        return None
    if value in choices:
        return value
    close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else f" (expected one of {', '.join(choices)})"
    found.append((name, f"unknown {name} {value!r}{hint}"))
    return None


def _key(doc: dict, number: int, key_prefix: str, found: list) -> str:
    if "id" not in doc:
        return f"{key_prefix}-{number:07d}"
    raw = doc["id"]
    if isinstance(raw, bool) or not isinstance(raw, (str, int)) or str(raw) == "":
        found.append(("id", f"must be a non-empty string or integer, got {raw!r}"))
        return ""
    # Keys hold no dots (webdataset splits member names at the first dot) and no slashes.
    key = re.sub(r"[^A-Za-z0-9_-]", "_", str(raw))[:128]
    return key if key[0].isalnum() else f"id{key}"[:128]


def _check_fields(doc: dict, task: str, found: list) -> dict[str, Any]:
    fields = {}
    for name in (*TASK_FIELDS[task], *OPTIONAL_FIELDS.get(task, ())):
        if name not in doc:
            if name in TASK_FIELDS[task]:
                found.append((name, f"missing (task {task} needs {', '.join(TASK_FIELDS[task])})"))
            continue
        value = doc[name]
        if name != "boxes" and (not isinstance(value, str) or not value.strip()):
            found.append((name, f"must be a non-empty string, got {value!r}"))
        fields[name] = value
    return fields


def _check_slice(doc: dict, found: list) -> int | None:
    index = doc.get("slice")
    if index is None:
        return None
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        found.append(("slice", f"must be an integer >= 0, got {index!r}"))
        return None
    return index


def _check_path(doc: dict, name: str, base: Path, found: list, *, required: bool) -> Path | None:
    raw = doc.get(name)
    if raw is None:
        if required:
            found.append((name, "missing"))
        return None
    if not isinstance(raw, str) or not raw:
        found.append((name, f"must be a file path, got {raw!r}"))
        return None
    path = base / raw
    if _suffix(path) is None:
        found.append((name, f"{raw}: unsupported file type (supported: {', '.join(IMAGE_SUFFIXES)})"))
        return None
    if not path.is_file():
        found.append((name, f"{raw}: file not found"))
        return None
    return path


def _suffix(path: Path) -> str | None:
    name = path.name.lower()
    return next((s for s in sorted(IMAGE_SUFFIXES, key=len, reverse=True) if name.endswith(s)), None)


def _check_geometry(image: Path, mask: Path | None, index: int | None, found: list) -> tuple[int, int] | None:
    """(width, height) of the image (of one slice for volumes), from headers; checks slice and mask."""
    geometry = _geometry(image, found, name="image")
    if geometry is None:
        return None
    width, height, depth = geometry
    if index is None and depth > 1:
        found.append(("slice", f"required: {image.name} has {depth} slices (0..{depth - 1})"))
    elif index is not None and depth == 1 and _suffix(image) not in (".dcm", *VOLUME_SUFFIXES):
        found.append(("slice", "only volumes (nii, nii.gz, nrrd) and multi-frame DICOM have slices"))
    elif index is not None and index >= depth:
        found.append(("slice", f"{index} out of range: {image.name} has {depth} slices (0..{depth - 1})"))
    if mask is not None:
        mask_geometry = _geometry(mask, found, name="mask")
        if mask_geometry is not None and mask_geometry != geometry:
            found.append(
                ("mask", f"geometry {_whd(mask_geometry)} differs from the image's {_whd(geometry)}")
            )
    return width, height


def _geometry(path: Path, found: list, *, name: str) -> tuple[int, int, int] | None:
    """(width, height, slices) of what `load_image` returns per slice, from headers only."""
    from biomedgpt.ingest.imageio import check_image_size

    try:
        width, height = check_image_size(path)
        depth = 1
        if _suffix(path) in VOLUME_SUFFIXES:
            from biomedgpt.ingest.volumes import volume_shape

            depth = volume_shape(path)[2]
        elif _suffix(path) == ".dcm":
            import pydicom

            depth = int(pydicom.dcmread(path, stop_before_pixels=True).get("NumberOfFrames") or 1)
    except Exception as err:  # readers raise many types on unreadable files; all mean "cannot read"
        found.append((name, f"cannot read {path.name}: {err}"))
        return None
    return int(width), int(height), depth


def _whd(geometry: tuple[int, int, int]) -> str:
    width, height, depth = geometry
    return f"{width}x{height}" + (f"x{depth}" if depth > 1 else "")


# ---------------------------------------------------------------------------------------------
# Loading and writing


def load_mask(path: Path, *, slice_index: int | None = None) -> np.ndarray:
    """(H, W) bool mask, nonzero = foreground, oriented as `load_image` orients the image.

    Masks are read as raw labels, not through `load_image`, which maps intensities to display
    values (a CT-tagged mask through the default HU window turns background 0 into mid-gray).
    """
    suffix = _suffix(path)
    if suffix in VOLUME_SUFFIXES:
        from biomedgpt.ingest.volumes import load_volume, slice_volume

        labels = slice_volume(load_volume(path), 0 if slice_index is None else slice_index)
    elif suffix == ".npy":
        labels = np.load(path, allow_pickle=False)
    elif suffix == ".dcm":
        from biomedgpt.ingest.dicom import read_dicom

        dicom = read_dicom(path)
        labels = dicom.pixels
        if int(dicom.meta.get("NumberOfFrames") or 1) > 1:
            labels = labels[slice_index or 0]
    else:
        from PIL import Image

        from biomedgpt.ingest.imageio import apply_exif_orientation

        with Image.open(path) as img:
            # Upright as load_image turns the image; palette images keep their indices: 0 = background.
            labels = np.asarray(apply_exif_orientation(img))
    labels = np.asarray(labels)
    return labels.any(axis=-1) if labels.ndim == 3 else labels != 0


def load_entry(entry: ManifestEntry, *, source: str | None = None) -> Sample:
    """Load the image (and mask) of one validated entry into a validated `Sample`."""
    from biomedgpt.ingest.imageio import load_image

    image = modality = None
    mask = None
    if entry.image is not None:
        # A one-slice volume needs no `slice` in the manifest, but load_image wants an index.
        index = 0 if entry.slice is None and _suffix(entry.image) in VOLUME_SUFFIXES else entry.slice
        loaded = load_image(entry.image, slice_index=index, modality=entry.modality)
        image, modality = loaded.pixels, entry.modality or loaded.modality
    if entry.mask is not None:
        mask = load_mask(entry.mask, slice_index=entry.slice)
    sample = Sample(
        key=entry.key,
        task=entry.task,
        split=entry.split,
        image=image,
        fields=dict(entry.fields),
        mask=mask,
        modality=modality,
        source=source,
        extra=dict(entry.extra),
    )
    sample.validate()
    return sample


def _samples(
    entries: list[ManifestEntry], *, source: str, skip_invalid: bool, skipped: list[ManifestProblem]
) -> Iterator[Sample]:
    for entry in entries:
        try:
            sample = load_entry(entry, source=source)
        except SampleError as err:
            problem = ManifestProblem(entry.line, err.field, err.message)
        except Exception as err:  # a reader failing on a file whose header looked fine
            problem = ManifestProblem(entry.line, "image", f"cannot load: {err}")
        else:
            yield sample
            continue
        if not skip_invalid:
            raise ManifestError([problem])
        skipped.append(problem)


def shard_manifest(
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    name: str,
    skip_invalid: bool = False,
    overwrite: bool = False,
    max_samples_per_shard: int = 1000,
    max_bytes: int = DEFAULT_MAX_BYTES,
    licence: str = "unknown",
    command_line: Sequence[str] | None = None,
    progress: bool = True,
) -> ManifestShardResult:
    """Validate the JSONL manifest at `path`, then write its samples as shards into `out_dir`.

    Raises `ManifestError` (nothing written) when a line is invalid, unless `skip_invalid`: then
    the valid lines are written and the problems of the others come back in `skipped`.
    """
    path, out = Path(path), Path(out_dir)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such manifest file")
    old = existing_outputs(out)
    if old and not overwrite:
        raise ShardsExistError(f"{out} already holds {old[0].name} (and {len(old) - 1} more)")
    entries, problems = validate_manifest(path, key_prefix=name, progress=progress)
    if problems and not skip_invalid:
        raise ManifestError(problems)
    if not entries:
        raise ManifestError(problems) if problems else ValueError(f"{path}: no samples (empty manifest)")
    source = SourceInfo(name=name, sha256=hashlib.sha256(path.read_bytes()).hexdigest(), licence=licence)
    skipped = list(problems)
    summary = write_dataset(
        _samples(entries, source=name, skip_invalid=skip_invalid, skipped=skipped),
        out,
        name=name,
        overwrite=overwrite,
        max_samples_per_shard=max_samples_per_shard,
        max_bytes=max_bytes,
        sources=[source],
        command_line=command_line,
        progress=progress,
        total=len(entries),
    )
    return ManifestShardResult(summary=summary, skipped=sorted(skipped))
