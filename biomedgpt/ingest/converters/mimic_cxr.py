"""MIMIC-CXR (Johnson et al., Sci Data 2019) reports with the MIMIC-CXR-JPG images (Johnson et al.,
2019, arXiv:1901.07042), in the PhysioNet folder layout; both trees may share one ``files/``:

    DIR/files/p<NN>/p<subject_id>/s<study_id>.txt          free-text report (mimic-cxr-reports)
    DIR/files/p<NN>/p<subject_id>/s<study_id>/<dicom_id>.jpg   images of the study (mimic-cxr-jpg)
    DIR/mimic-cxr-2.0.0-split.csv[.gz]    optional: dicom_id, study_id, subject_id, split
                                          (train | validate | test), the official split

Sections are found as in the MIMIC-CXR code's section parser: an upper-case heading at the start
of a line followed by a colon ("FINDINGS:", "IMPRESSION:"). The target text is FINDINGS (or
"FINDINGS AND IMPRESSION") followed by IMPRESSION (or "CONCLUSION"), whichever exist; a study with
neither, a study without images and images without a report are skipped. Every image of a study is
one ``report`` sample. Splits: the official CSV when present (looked up by dicom_id, then study_id;
validate -> val; images it does not list are skipped), else a hash of subject_id (80/10/10) so no
patient is in two splits. The reports' "___" de-identification placeholders are kept.
"""

from __future__ import annotations

import csv
import gzip
import re
from collections.abc import Iterator
from pathlib import Path

from biomedgpt.data.schema import Sample
from biomedgpt.ingest.converters.common import (
    Converter,
    ConvertOptions,
    KeyMaker,
    Prepared,
    SkipLog,
    clean_text,
    hash_split,
    report_text,
)
from biomedgpt.ingest.converters.images import ImageReader

SPLIT_CSV_NAMES = ("mimic-cxr-2.0.0-split.csv.gz", "mimic-cxr-2.0.0-split.csv")
OFFICIAL_SPLITS = {"train": "train", "validate": "val", "val": "val", "test": "test"}
FINDINGS = ("FINDINGS", "FINDINGS AND IMPRESSION")
IMPRESSION = ("IMPRESSION", "IMPRESSIONS", "CONCLUSION")
SOURCE = "mimic-cxr"
_HEADING = re.compile(r"^[ \t]*([A-Z][A-Z /(),&-]*[A-Z)])[ \t]*:", re.MULTILINE)
_STUDY_DIR = re.compile(r"^s\d+$")


def report_sections(text: str) -> dict[str, str]:
    """{HEADING: text} of a free-text report; the first section of a repeated heading wins."""
    sections: dict[str, str] = {}
    headings = list(_HEADING.finditer(text))
    for i, heading in enumerate(headings):
        end = headings[i + 1].start() if i + 1 < len(headings) else len(text)
        body = clean_text(text[heading.end() : end])
        name = " ".join(heading.group(1).split())
        if body:
            sections.setdefault(name, body)
    return sections


def findings_and_impression(text: str) -> tuple[str, str]:
    sections = report_sections(text)
    findings = next((sections[name] for name in FINDINGS if name in sections), "")
    impression = next((sections[name] for name in IMPRESSION if name in sections), "")
    return findings, impression


def read_split_csv(path: Path) -> dict[str, str]:
    """{dicom_id or "s<study_id>": split} from the official split CSV (plain or gzip)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and not {"dicom_id", "study_id", "split"} <= set(rows[0]):
        raise ValueError(
            f"{path}: needs columns dicom_id, study_id, subject_id, split; has {sorted(rows[0])}"
        )
    splits: dict[str, str] = {}
    for row in rows:
        split = OFFICIAL_SPLITS.get(row["split"].strip().lower())
        if split is None:
            raise ValueError(f"{path}: unknown split {row['split']!r} (expected train, validate, test)")
        splits[row["dicom_id"].strip()] = split
        splits.setdefault(f"s{row['study_id'].strip()}", split)
    return splits


def _studies(files: Path) -> list[tuple[str, str, Path]]:
    """(subject dir name, study name, study path without suffix) of every report or image folder."""
    found: dict[tuple[str, str], Path] = {}
    for subject in sorted(p for p in files.glob("p*/p*") if p.is_dir()):
        for entry in sorted(subject.iterdir()):
            stem = entry.name[:-4] if entry.name.endswith(".txt") else entry.name
            if _STUDY_DIR.match(stem) and (entry.is_dir() or entry.suffix == ".txt"):
                found.setdefault((subject.name, stem), subject / stem)
    return [(subject, study, path) for (subject, study), path in sorted(found.items())]


def _prepare(root: Path, options: ConvertOptions, skips: SkipLog) -> Prepared:
    files = CONVERTER.require_dir(root / "files", "files/ folder")
    studies = _studies(files)
    if not studies:
        raise CONVERTER.missing(files / "p10/p10000032/s50414267.txt", "reports or study folders")
    split_csv = next((root / name for name in SPLIT_CSV_NAMES if (root / name).is_file()), None)
    splits = read_split_csv(split_csv) if split_csv is not None else None
    reader = ImageReader(skips, root=root, max_side=options.max_side)
    return Prepared(samples=_samples(studies, splits, reader), total=len(studies), annotation=split_csv)


def _samples(
    studies: list[tuple[str, str, Path]], splits: dict[str, str] | None, reader: ImageReader
) -> Iterator[Sample]:
    keys = KeyMaker()
    for subject, study, path in studies:
        item = reader.relative(path)
        report, images = path.with_name(f"{study}.txt"), sorted(path.glob("*.jpg")) if path.is_dir() else []
        if not report.is_file():
            reader.skips.add(item, "no report", f"{len(images)} images without {study}.txt")
            continue
        if not images:
            reader.skips.add(item, "no images", f"no {study}/*.jpg next to the report")
            continue
        findings, impression = findings_and_impression(report.read_text(encoding="utf-8", errors="replace"))
        if not (findings or impression):
            reader.skips.add(f"{item}.txt", "no findings or impression")
            continue
        for image in images:
            dicom_id = image.stem
            split = (
                hash_split(subject, salt=SOURCE)
                if splits is None
                else splits.get(dicom_id, splits.get(study))
            )
            if split is None:
                reader.skips.add(reader.relative(image), "not in split csv")
                continue
            pixels = reader.read(image)
            if pixels is None:
                continue
            yield Sample(
                key=keys.make("mimic", study, dicom_id),
                task="report",
                split=split,
                image=pixels,
                fields={"text": report_text(findings, impression)},
                modality="CR",
                source=SOURCE,
                extra={
                    "subject_id": subject[1:],
                    "study_id": study[1:],
                    "dicom_id": dicom_id,
                    "findings": findings,
                    "impression": impression,
                },
            )


CONVERTER = Converter(
    name="mimic-cxr",
    source=SOURCE,
    layout="DIR/files/p<NN>/p<subject_id>/s<study_id>.txt (reports) and "
    "DIR/files/p<NN>/p<subject_id>/s<study_id>/<dicom_id>.jpg (MIMIC-CXR-JPG), optional "
    "DIR/mimic-cxr-2.0.0-split.csv[.gz] (dicom_id, study_id, subject_id, split)",
    prepare=_prepare,
)
