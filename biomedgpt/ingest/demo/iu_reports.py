"""Summarization samples from the real IU X-ray reports in the torchxrayvision 1.5.7 wheel.

``torchxrayvision/data/NLMCXR_reports.tgz`` holds 3,955 Indiana University chest X-ray reports
(``ecgen-radiology/N.xml``, de-identified by their publisher: "XXXX" marks removed words). Each
report with both a FINDINGS and an IMPRESSION section gives one text-only summarization sample:
``text`` = findings, ``summary`` = impression. Reports are taken in numeric id order, at most
``options.text_cap``; the split comes from a hash of the report id.

LICENCE: the reports are CC BY-NC-ND 4.0. They are read IN MEMORY from the cached wheel (never
unpacked to disk) and written only into the shards of the output folder, which are gitignored.
Never commit these shards, the report text or anything derived from it; the data card says so.
"""

from __future__ import annotations

import io
import re
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator

from biomedgpt.data.schema import Sample
from biomedgpt.ingest.demo.common import (
    DemoOptions,
    Provenance,
    SourceReport,
    archive_member,
    hash_split,
    make_key,
)

REGISTRY_NAME = "torchxrayvision"
MEMBER = "torchxrayvision/data/NLMCXR_reports.tgz"
LICENCE_NOTE = "CC BY-NC-ND 4.0: run-time use only; never commit the text or anything derived from it"
_REPORT_NAME = re.compile(r"ecgen-radiology/(\d+)\.xml$")


def _sections(xml_bytes: bytes) -> dict[str, str]:
    """{LABEL: text} of the report's AbstractText sections (whitespace collapsed)."""
    root = ET.fromstring(xml_bytes)
    out = {}
    for node in root.iter("AbstractText"):
        label = (node.get("Label") or "").upper()
        text = " ".join("".join(node.itertext()).split())
        if label and text:
            out[label] = text
    return out


def iter_reports(tgz: bytes) -> Iterator[tuple[int, str, str]]:
    """(report id, findings, impression) for every report holding both, in numeric id order."""
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tf:
        members = [
            (int(m.group(1)), info) for info in tf.getmembers() if (m := _REPORT_NAME.search(info.name))
        ]
        for report_id, info in sorted(members, key=lambda pair: pair[0]):
            handle = tf.extractfile(info)
            if handle is None:
                continue
            sections = _sections(handle.read())
            findings, impression = sections.get("FINDINGS"), sections.get("IMPRESSION")
            if findings and impression:
                yield report_id, findings, impression


def samples(options: DemoOptions, report: SourceReport) -> Iterator[Sample]:
    """Findings -> impression summarization samples (text only), at most ``options.text_cap``."""
    prov = Provenance.of(REGISTRY_NAME)
    tgz = archive_member(REGISTRY_NAME, MEMBER)
    record = {**prov.record(MEMBER, tgz), "licence_note": LICENCE_NOTE}
    for n, (report_id, findings, impression) in enumerate(iter_reports(tgz)):
        if n >= options.text_cap:
            break
        split = hash_split(f"iuxray-{report_id}")
        report.count("summarization", split)
        yield Sample(
            key=make_key("iuxray", report_id),
            task="summarization",
            split=split,
            fields={"text": findings, "summary": impression},
            source=prov.tag,
            extra={"source": record, "report_id": report_id, "sections": ["FINDINGS", "IMPRESSION"]},
        )
