"""IU X-ray (Demner-Fushman et al., JAMIA 2016, "Preparing a collection of radiology examinations
for distribution and retrieval"), the Indiana University chest X-ray collection as distributed by
Open-i (NLMCXR_reports.tgz + NLMCXR_png.tgz):

    DIR/ecgen-radiology/<n>.xml   one report per file: <uId id="CXR<n>"/>, <AbstractText
                                  Label="FINDINGS">, <AbstractText Label="IMPRESSION">, <MeSH>,
                                  and one <parentImage id="CXR<n>_..._IM-....-....">  per image
    DIR/images/<parentImage id>.png     (the flat PNG folder; ``NLMCXR_png/`` is accepted too)

Each image of a report is one ``report`` sample whose text is the findings followed by the
impression (whichever exist; both also kept apart in ``extra``); a report with neither is skipped.
The split comes from a hash of the report id (80/10/10). The collection has one report per patient,
so no patient is in two splits, and a report's images always share a split. The reports' own
de-identification placeholders ("XXXX") are kept. Parsed with the standard library's expat-based
ElementTree (expat >= 2.4 limits entity expansion; no external entities are fetched).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
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
    visible_files,
)
from biomedgpt.ingest.converters.images import ImageReader

REPORT_DIR = "ecgen-radiology"
IMAGE_DIRS = ("images", "NLMCXR_png")
SOURCE = "iu-xray"


def _parse(path: Path) -> tuple[str, dict[str, str], list[str], list[str]]:
    """(report id, {FINDINGS, IMPRESSION, ...} texts, image ids, MeSH terms) of one report file."""
    root = ET.parse(path).getroot()
    uid = root.find("uId")
    report_id = clean_text(uid.get("id")) if uid is not None else ""
    sections: dict[str, str] = {}
    for node in root.iter("AbstractText"):
        label = clean_text(node.get("Label")).upper()
        text = clean_text("".join(node.itertext()))
        if label and text:
            sections.setdefault(label, text)
    images = [clean_text(node.get("id")) for node in root.iter("parentImage") if clean_text(node.get("id"))]
    mesh = [
        clean_text(node.text)
        for node in root.iter()
        if node.tag in ("major", "minor") and clean_text(node.text)
    ]
    return report_id or path.stem, sections, images, mesh


def _prepare(root: Path, options: ConvertOptions, skips: SkipLog) -> Prepared:
    reports_dir = CONVERTER.require_dir(root / REPORT_DIR, "report folder")
    image_dir = next((root / name for name in IMAGE_DIRS if (root / name).is_dir()), None)
    if image_dir is None:
        raise CONVERTER.missing(root / IMAGE_DIRS[0], "image folder")
    reports = visible_files(reports_dir, "*.xml")
    if not reports:
        raise CONVERTER.missing(reports_dir / "<n>.xml", "report files")
    reader = ImageReader(skips, root=root, max_side=options.max_side)
    return Prepared(samples=_samples(reports, image_dir, reader), total=len(reports))


def _samples(reports: list[Path], image_dir: Path, reader: ImageReader) -> Iterator[Sample]:
    keys = KeyMaker()
    for path in reports:
        item = reader.relative(path)
        try:
            report_id, sections, image_ids, mesh = _parse(path)
        except (ET.ParseError, OSError, UnicodeDecodeError) as err:
            reader.skips.add(item, "unreadable report", f"{type(err).__name__}: {err}")
            continue
        findings, impression = sections.get("FINDINGS", ""), sections.get("IMPRESSION", "")
        if not (findings or impression):
            reader.skips.add(item, "no findings or impression")
            continue
        if not image_ids:
            reader.skips.add(item, "no images", "the report lists no parentImage")
            continue
        split = hash_split(report_id, salt=SOURCE)
        for image_id in image_ids:
            pixels = reader.read(image_dir / f"{image_id}.png", item=f"{item} image {image_id}")
            if pixels is None:
                continue
            yield Sample(
                key=keys.make("iuxray", image_id),
                task="report",
                split=split,
                image=pixels,
                fields={"text": report_text(findings, impression)},
                modality="CR",
                source=SOURCE,
                extra={
                    "report_id": report_id,
                    "image_id": image_id,
                    "findings": findings,
                    "impression": impression,
                    "mesh": mesh,
                },
            )


CONVERTER = Converter(
    name="iu-xray",
    source=SOURCE,
    layout=f"DIR/{REPORT_DIR}/<n>.xml (Open-i reports: AbstractText FINDINGS/IMPRESSION, "
    "parentImage ids) and DIR/images/<parentImage id>.png (or DIR/NLMCXR_png/)",
    prepare=_prepare,
)
