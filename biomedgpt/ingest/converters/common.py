"""What every dataset converter shares: options, the skip log, layout errors, splits, keys, records.

A converter (one module per public dataset layout; docs/ARCHITECTURE.md says how to add one) exposes
``CONVERTER = Converter(...)``. Its ``prepare(input, options, skips)`` checks the layout eagerly (a
missing annotation file or folder raises ``LayoutError`` naming the expected path and the whole
expected layout, before anything is written) and returns a ``Prepared``: a lazy iterator of
``Sample``s plus what the manifest should record. ``convert`` sends every converter through the one
writer, ``shards.write_dataset``, so shards, manifest, progress bar and atomicity are the writer's.

Input items that cannot be used (a corrupt or missing image, an unreadable DICOM or volume, a report
without findings) are skipped and recorded in the ``SkipLog`` (item, kind, detail), never fatal;
``convert`` returns them so the caller can report them. A run where every item was skipped is an
error that lists why.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biomedgpt.data.schema import Sample
from biomedgpt.data.shards import (
    DEFAULT_MAX_BYTES,
    DatasetSummary,
    ShardsExistError,
    SourceInfo,
    existing_outputs,
    write_dataset,
)
from biomedgpt.hashing import sha256_file

USER_LICENCE = "user-provided, licence of the original dataset"
"""Licence recorded in manifest.json unless --licence names one: the data is the user's copy."""
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
"""train/val/test shares of hash splits (by patient, report or volume, never by image or slice)."""
ANSWER_TYPES = frozenset({"closed", "open"})
"""VQA answer types the closed/open accuracy split of the evaluation uses."""
_KEY_BAD = re.compile(r"[^A-Za-z0-9_-]+")


class LayoutError(FileNotFoundError):
    """An expected file or folder of a dataset layout is missing; names both and the whole layout."""

    def __init__(self, path: Path, what: str, *, fmt: str, layout: str) -> None:
        self.path = path
        super().__init__(f"{path}: {what} not found; --format {fmt} expects: {layout}")


@dataclass(kw_only=True)
class ConvertOptions:
    """Converter options (the `--format` options of `biomedgpt shard`); each says who reads it."""

    max_side: int | None = None
    """All image formats: downscale images whose longer side is larger (aspect kept; masks nearest)."""
    language: str = "en"
    """slake: keep questions whose ``q_lang`` is this ("en", "zh"); "all" keeps every language."""
    flag: str | None = None
    """medmnist: the dataset flag (pathmnist, chestmnist, ...); default: the .npz file's name."""
    labels: Path | None = None
    """medmnist: JSON class names, ``{"0": name, ...}`` or ``[name, ...]``; default: the flag's own."""
    allow_burned_in: bool = False
    """dicom-folder: also convert files flagged ``BurnedInAnnotation == YES`` (else skipped)."""
    target: str = "lesion"
    """volumes: the structure the masks show (the segmentation target field)."""
    empty_fraction: float = 0.1
    """volumes: share of each volume's slices without foreground that are kept (evenly spaced)."""
    modality: str | None = None
    """volumes: modality of the images (CT is windowed in HU); default: dataset.json's, else none."""

    def __post_init__(self) -> None:
        if self.max_side is not None and self.max_side < 8:
            raise ValueError(f"max_side: must be at least 8 pixels, got {self.max_side}")
        if not 0.0 <= self.empty_fraction <= 1.0:
            raise ValueError(f"empty_fraction: must be in [0, 1], got {self.empty_fraction}")
        if not self.target.strip():
            raise ValueError("target: must be a non-empty structure name")
        if not self.language.strip():
            raise ValueError("language: must be a language code such as 'en', or 'all'")


@dataclass(frozen=True, order=True)
class Skipped:
    """One input item that was not converted."""

    item: str
    """The item: a path relative to --input, or a record id."""
    kind: str
    """Short reason, counted in the summary ("unreadable image", "missing image", ...)."""
    detail: str = ""

    @property
    def line(self) -> str:
        """The item; `biomedgpt shard` counts distinct `.line` values of what it skipped."""
        return self.item

    def __str__(self) -> str:
        return f"{self.item}: {self.kind}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class SkipLog:
    """Every skipped input item, in order."""

    items: list[Skipped] = field(default_factory=list)

    def add(self, item: str, kind: str, detail: str = "") -> None:
        self.items.append(Skipped(item, kind, detail))

    def summary(self) -> str:
        """ "3 (2 unreadable image, 1 missing image)" or "0"."""
        counts = Counter(s.kind for s in self.items)
        parts = ", ".join(f"{n} {kind}" for kind, n in counts.most_common())
        return f"{len(self.items)} ({parts})" if self.items else "0"


@dataclass(kw_only=True)
class Prepared:
    """A converter's checked input: lazy samples plus what manifest.json records."""

    samples: Iterator[Sample]
    total: int | None = None
    """Number of input items, for the progress bar, where cheap to know."""
    annotation: Path | None = None
    """The annotation file whose sha256 goes into the manifest's source entry, if there is one."""
    default_name: str | None = None
    """Shard name when --name is not given (default: the format name)."""


@dataclass(frozen=True, kw_only=True)
class Converter:
    """One public dataset layout."""

    name: str
    """The `--format` name."""
    source: str
    """Dataset name for `Sample.source` and the manifest."""
    layout: str
    """The expected input layout, in one paragraph (shown in errors and the README)."""
    prepare: Callable[[Path, ConvertOptions, SkipLog], Prepared]

    def missing(self, path: Path, what: str) -> LayoutError:
        return LayoutError(path, what, fmt=self.name, layout=self.layout)

    def require_file(self, path: Path, what: str = "file") -> Path:
        if not path.is_file():
            raise self.missing(path, what)
        return path

    def require_dir(self, path: Path, what: str = "folder") -> Path:
        if not path.is_dir():
            raise self.missing(path, what)
        return path


@dataclass(kw_only=True)
class ConvertResult:
    """What `convert` wrote and which input items it skipped."""

    summary: DatasetSummary
    skipped: list[Skipped]


def convert(
    converter: Converter,
    input_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    options: ConvertOptions | None = None,
    name: str | None = None,
    overwrite: bool = False,
    max_samples_per_shard: int = 1000,
    max_bytes: int = DEFAULT_MAX_BYTES,
    licence: str | None = None,
    command_line: Sequence[str] | None = None,
    progress: bool = True,
) -> ConvertResult:
    """Convert the dataset at `input_path` into shards + manifest.json in `out_dir`, all or nothing."""
    input_path, out = Path(input_path), Path(out_dir)
    if not input_path.exists():
        raise converter.missing(input_path, "input")
    old = existing_outputs(out)
    if old and not overwrite:
        raise ShardsExistError(f"{out} already holds {old[0].name} (and {len(old) - 1} more)")
    skips = SkipLog()
    prepared = converter.prepare(input_path, options or ConvertOptions(), skips)
    first = next(prepared.samples, None)  # the whole input may be unusable: say why, write nothing
    if first is None:
        raise ValueError(
            f"{input_path}: no usable samples for --format {converter.name}; skipped {skips.summary()}"
        )
    sha = sha256_file(prepared.annotation) if prepared.annotation is not None else None
    source = SourceInfo(name=converter.source, sha256=sha, licence=licence or USER_LICENCE)
    summary = write_dataset(
        itertools.chain([first], prepared.samples),
        out,
        name=name or prepared.default_name or converter.name,
        overwrite=overwrite,
        max_samples_per_shard=max_samples_per_shard,
        max_bytes=max_bytes,
        sources=[source],
        command_line=command_line,
        progress=progress,
        total=prepared.total,
    )
    return ConvertResult(summary=summary, skipped=list(skips.items))


# ---------------------------------------------------------------------------------------------
# Splits, keys, text and records


def hash_split(group: str, *, salt: str) -> str:
    """ "train", "val" or "test" (80/10/10) from a sha256 of `salt:group`: same group, same split."""
    value = int(hashlib.sha256(f"{salt}:{group}".encode()).hexdigest()[:12], 16) / float(1 << 48)
    train, val, _test = SPLIT_FRACTIONS
    return "train" if value < train else "val" if value < train + val else "test"


class KeyMaker:
    """Sample keys from id parts: letters, digits, `_`, `-` (no dots), <= 128 chars, unique."""

    def __init__(self) -> None:
        self._seen: Counter[str] = Counter()

    def make(self, *parts: object) -> str:
        raw = "-".join(_KEY_BAD.sub("_", id_text(p)).strip("_") or "x" for p in parts)
        if len(raw) > 100:  # keep the start readable, make the rest unique
            raw = f"{raw[:80]}-{hashlib.sha256(raw.encode()).hexdigest()[:16]}"
        key = raw if raw[0].isalnum() else f"k{raw}"
        self._seen[key] += 1
        return key if self._seen[key] == 1 else f"{key}-{self._seen[key]}"


def id_text(value: object) -> str:
    """An id as text: 12.0 -> "12" (ids read from pandas-made JSON or CSV may be floats)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def clean_text(value: object) -> str:
    """Whitespace collapsed to single spaces; None and NaN give ""."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return " ".join(id_text(value).split())


def clean_extra(record: dict[str, Any], *, drop: Sequence[str] = ()) -> dict[str, Any]:
    """The record's other fields, JSON-safe: None, NaN/inf and empty strings dropped."""
    extra = {}
    for name, value in record.items():
        if name in drop or value is None or value == "":
            continue
        if isinstance(value, float) and not math.isfinite(value):
            continue
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            value = str(value)
        extra[str(name)] = value
    return extra


def report_text(findings: str, impression: str) -> str:
    """The report-generation target: findings, then impression, whichever are present."""
    return " ".join(part for part in (findings, impression) if part)


def vqa_fields(question: str, answer: str, answer_type: object) -> dict[str, str]:
    """question, answer and, when it says closed or open (any case), answer_type in lower case."""
    fields = {"question": question, "answer": answer}
    kind = clean_text(answer_type).lower()
    if kind in ANSWER_TYPES:
        fields["answer_type"] = kind
    return fields


def read_records(path: Path) -> list[dict[str, Any]]:
    """Rows of a .json (a list of objects), .jsonl (one object a line) or .csv (a header row) file."""
    text = path.read_text(encoding="utf-8-sig")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return list(csv.DictReader(io.StringIO(text)))
        rows = (
            [json.loads(line) for line in text.splitlines() if line.strip()]
            if suffix == ".jsonl"
            else json.loads(text)
        )
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON: {err}") from err
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ValueError(f"{path}: expected a list of JSON objects (one per sample)")
    return rows


def visible_files(folder: Path, pattern: str = "*") -> list[Path]:
    """Files under `folder` matching `pattern`, recursively, sorted; hidden names (``._x``) left out."""
    return sorted(
        p
        for p in folder.rglob(pattern)
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
