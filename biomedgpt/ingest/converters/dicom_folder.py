"""A folder tree of DICOM files (PS3.10 files named ``*.dcm``, at any depth; e.g. the TCIA download
layout ``<patient>/<study>/<series>/*.dcm``) to captioned images.

Every file goes through ``imageio.load_image``, which reads it with ``dicom.read_dicom``: the whole
dataset is de-identified (PS3.15 basic profile, ``deid``) before pixels are decoded or anything is
copied out, and files with ``BurnedInAnnotation == YES`` are refused unless ``--allow-burned-in``.
A refused or unreadable file (not DICOM, no pixels, a codec not installed) is skipped, counted and
reported; it never stops the run. Multi-frame files give their middle frame.

DICOM carries no caption, so the ``caption`` text is TEMPLATED from non-identifying tags only:
Modality, BodyPartExamined and ViewPosition ("a ct scan of the chest", "an x-ray of the chest,
pa view"); ``extra.text_source`` says so. ``extra.dicom`` holds the de-identified allow-list of
``dicom.META_ALLOW_LIST``. Nothing derived from paths is stored: folder names are often patient
names or IDs, so keys are hashes of the relative path. Splits (80/10/10) are hashed from the
top-level sub-folder of --input (one per patient in the TCIA layout, so a patient stays in one
split); files directly in --input are hashed by their de-identified StudyInstanceUID.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from biomedgpt.data.schema import Sample
from biomedgpt.ingest.converters.common import (
    Converter,
    ConvertOptions,
    KeyMaker,
    Prepared,
    SkipLog,
    hash_split,
    visible_files,
)
from biomedgpt.ingest.converters.images import fit_image, gray_if_equal

SOURCE = "dicom-folder"
TEXT_SOURCE = "template from the DICOM tags Modality, BodyPartExamined, ViewPosition"
NOUNS = {
    "CT": "a ct scan",
    "MR": "an mri scan",
    "CR": "an x-ray",
    "DX": "an x-ray",
    "MG": "a mammogram",
    "US": "an ultrasound image",
    "NM": "a nuclear medicine scan",
    "PT": "a pet scan",
    "XA": "an x-ray angiogram",
    "RF": "a fluoroscopy image",
    "SM": "a microscopy image",
    "OP": "an ophthalmic photograph",
    "OPT": "an oct scan",
}
"""Modality code -> noun phrase of the caption; other codes give "a medical image"."""


def caption(meta: dict[str, Any]) -> str:
    """The templated caption of a de-identified file's allow-listed attributes."""
    text = NOUNS.get(str(meta.get("Modality", "")).upper(), "a medical image")
    body = " ".join(str(meta.get("BodyPartExamined", "")).replace("_", " ").lower().split())
    if body:
        text += f" of the {body}"
    view = " ".join(str(meta.get("ViewPosition", "")).lower().split())
    return f"{text}, {view} view" if view else text


def _frame_count(path: Path) -> int:
    """NumberOfFrames from the header (nothing from this read is kept or written)."""
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["NumberOfFrames"])
    return int(ds.get("NumberOfFrames") or 1)


def _prepare(root: Path, options: ConvertOptions, skips: SkipLog) -> Prepared:
    CONVERTER.require_dir(root, "DICOM folder")
    files = [p for p in visible_files(root) if p.suffix.lower() == ".dcm"]
    if not files:
        raise CONVERTER.missing(root / "**" / "*.dcm", "DICOM files")
    return Prepared(samples=_samples(root, files, options, skips), total=len(files))


def _samples(root: Path, files: list[Path], options: ConvertOptions, skips: SkipLog) -> Iterator[Sample]:
    from biomedgpt.ingest.deid import BurnedInAnnotationError
    from biomedgpt.ingest.imageio import load_image

    keys = KeyMaker()
    for path in files:
        relative = path.relative_to(root)
        try:
            frames = _frame_count(path)
            loaded = load_image(
                path, slice_index=frames // 2 if frames > 1 else None, allow_burned_in=options.allow_burned_in
            )
        except BurnedInAnnotationError:
            skips.add(relative.as_posix(), "burned-in annotation", "refused; --allow-burned-in converts it")
            continue
        except Exception as err:  # pydicom and the decoders raise many types; all mean "unreadable"
            skips.add(relative.as_posix(), "unreadable DICOM", f"{type(err).__name__}: {err}")
            continue
        meta = loaded.meta["dicom"]
        group = (
            relative.parts[0] if len(relative.parts) > 1 else str(meta.get("StudyInstanceUID") or relative)
        )
        extra: dict[str, Any] = {"text_source": TEXT_SOURCE, "dicom": meta}
        if frames > 1:
            extra["frame"] = frames // 2
        yield Sample(
            key=keys.make("dcm", hashlib.sha256(relative.as_posix().encode()).hexdigest()[:24]),
            task="caption",
            split=hash_split(group, salt=SOURCE),
            image=fit_image(gray_if_equal(loaded.pixels), options.max_side),
            fields={"text": caption(meta)},
            modality=loaded.modality,
            source=SOURCE,
            extra=extra,
        )


CONVERTER = Converter(
    name="dicom-folder",
    source=SOURCE,
    layout="DIR holding DICOM files named *.dcm at any depth (e.g. <patient>/<study>/<series>/*.dcm)",
    prepare=_prepare,
)
