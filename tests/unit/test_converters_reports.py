"""Report converters (iu-xray, mimic-cxr) on tiny fixtures in each dataset's published layout.

The report texts here are invented for the tests; no real report (or text derived from one) is used.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from biomedgpt.ingest.converters import convert
from biomedgpt.ingest.converters.common import LayoutError, hash_split
from biomedgpt.ingest.converters.mimic_cxr import findings_and_impression, report_sections
from tests.unit.test_converters_vqa import assert_verifies, read_back


def _png(path: Path, value: int, shape=(20, 16)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(shape, value, np.uint8)).save(path)


def _iu_report(n: int, sections: dict[str, str], images: list[str]) -> str:
    texts = "".join(
        f'<AbstractText Label="{label}">{text}</AbstractText>' for label, text in sections.items()
    )
    parents = "".join(
        f'<parentImage id="{i}"><figureId>F1</figureId><caption>Xray Chest PA and Lateral</caption></parentImage>'
        for i in images
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><eCitation><meta type="rr"/><uId id="CXR{n}"/>'
        f'<pmcId id="{n}"/><docSource>CXR</docSource><IUXRId id="{n}"/>'
        "<MedlineCitation><Article><ArticleTitle>Indiana University Chest X-ray Collection</ArticleTitle>"
        f'<Abstract><AbstractText Label="COMPARISON">None.</AbstractText>{texts}</Abstract></Article>'
        f"</MedlineCitation><MeSH><major>normal</major></MeSH>{parents}</eCitation>"
    )


def write_iu_xray(root: Path) -> Path:
    reports = root / "ecgen-radiology"
    reports.mkdir(parents=True)
    (reports / "1.xml").write_text(
        _iu_report(
            1,
            {
                "INDICATION": "Cough.",
                "FINDINGS": "The heart is  normal in size.",
                "IMPRESSION": "No acute disease.",
            },
            ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001", "CXR1_1_IM-0001-5001"],
        )
    )
    (reports / "2.xml").write_text(_iu_report(2, {"IMPRESSION": "Stable XXXX."}, ["CXR2_1_IM-0652-1001"]))
    (reports / "3.xml").write_text(_iu_report(3, {"INDICATION": "Pain."}, ["CXR3_1_IM-1384-1001"]))
    (reports / "4.xml").write_text("<eCitation><uId id='CXR4'>")  # truncated XML
    _png(root / "images" / "CXR1_1_IM-0001-3001.png", 10)
    _png(root / "images" / "CXR1_1_IM-0001-4001.png", 20)
    (root / "images" / "CXR1_1_IM-0001-5001.png").write_bytes(b"\x89PNG broken")
    _png(root / "images" / "CXR2_1_IM-0652-1001.png", 30)
    _png(root / "images" / "CXR3_1_IM-1384-1001.png", 40)
    return root


def test_iu_xray(tmp_path):
    root = write_iu_xray(tmp_path / "iu")
    out = tmp_path / "out"
    result = convert("iu-xray", root, out, progress=False)
    samples = read_back(out)
    assert sorted(samples) == [
        "iuxray-CXR1_1_IM-0001-3001",
        "iuxray-CXR1_1_IM-0001-4001",
        "iuxray-CXR2_1_IM-0652-1001",
    ]
    first = samples["iuxray-CXR1_1_IM-0001-3001"]
    assert first.task == "report" and first.modality == "CR"
    assert first.fields == {"text": "The heart is normal in size. No acute disease."}
    assert first.extra["findings"] == "The heart is normal in size." and first.extra["mesh"] == ["normal"]
    assert samples["iuxray-CXR2_1_IM-0652-1001"].fields["text"] == "Stable XXXX."  # impression only
    assert int(first.image[0, 0]) == 10 and int(samples["iuxray-CXR1_1_IM-0001-4001"].image[0, 0]) == 20
    # Patient-level split: both images of report CXR1 share the split its report id hashes to.
    assert {samples[k].split for k in samples if "CXR1_" in k} == {hash_split("CXR1", salt="iu-xray")}
    assert samples["iuxray-CXR2_1_IM-0652-1001"].split == hash_split("CXR2", salt="iu-xray")
    kinds = sorted((s.item, s.kind) for s in result.skipped)
    assert kinds == [
        ("ecgen-radiology/1.xml image CXR1_1_IM-0001-5001", "unreadable image"),
        ("ecgen-radiology/3.xml", "no findings or impression"),
        ("ecgen-radiology/4.xml", "unreadable report"),
    ]
    assert_verifies(out)


def test_iu_xray_missing_images_folder(tmp_path):
    root = write_iu_xray(tmp_path / "iu")
    (root / "images").rename(root / "pngs")
    with pytest.raises(LayoutError, match=r"iu/images: image folder not found; --format iu-xray expects"):
        convert("iu-xray", root, tmp_path / "out", progress=False)


MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough  // eval for pneumonia

 COMPARISON:  None.

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  The
 cardiac silhouette is normal.

 IMPRESSION:

 No acute cardiopulmonary process.
"""


def test_report_sections_follow_the_mimic_headings():
    sections = report_sections(MIMIC_REPORT)
    assert list(sections) == ["EXAMINATION", "INDICATION", "COMPARISON", "FINDINGS", "IMPRESSION"]
    assert sections["EXAMINATION"] == "CHEST (PA AND LAT)"
    assert findings_and_impression(MIMIC_REPORT) == (
        "There is no focal consolidation, pleural effusion or pneumothorax. The cardiac silhouette is normal.",
        "No acute cardiopulmonary process.",
    )
    assert findings_and_impression("FINAL REPORT\n CONCLUSION: Normal chest.\n") == ("", "Normal chest.")
    assert findings_and_impression("FINAL REPORT\n Findings discussed with Dr. ___ at 10:00.\n") == ("", "")


def write_mimic(root: Path) -> Path:
    files = root / "files"

    def study(subject: str, study_id: str, report: str | None, images: dict[str, int]) -> None:
        folder = files / f"p{subject[:2]}" / f"p{subject}"
        folder.mkdir(parents=True, exist_ok=True)
        if report is not None:
            (folder / f"s{study_id}.txt").write_text(report)
        for dicom_id, value in images.items():
            path = folder / f"s{study_id}" / f"{dicom_id}.jpg"
            path.parent.mkdir(exist_ok=True)
            Image.fromarray(np.full((24, 20, 3), value, np.uint8)).save(path, quality=95)

    study("10000032", "50414267", MIMIC_REPORT, {"02aa804e-bde0afdd": 100, "174413ec-4ec4c1f7": 150})
    study("10000032", "53189527", "FINAL REPORT\n IMPRESSION: Unchanged ___.\n", {"2a2277a9-b0ded155": 50})
    study("11000011", "50000001", MIMIC_REPORT, {})  # report, no images
    study("11000011", "50000002", None, {"5c1b2f7e-00000000": 80})  # images, no report
    study("12000012", "50000003", "FINAL REPORT\n History of cough.\n", {"8f3e1a2b-11111111": 90})
    return root


def test_mimic_cxr_hash_split_by_subject(tmp_path):
    root = write_mimic(tmp_path / "mimic")
    out = tmp_path / "out"
    result = convert("mimic-cxr", root, out, progress=False)
    samples = read_back(out)
    assert sorted(samples) == [
        "mimic-s50414267-02aa804e-bde0afdd",
        "mimic-s50414267-174413ec-4ec4c1f7",
        "mimic-s53189527-2a2277a9-b0ded155",
    ]
    first = samples["mimic-s50414267-02aa804e-bde0afdd"]
    assert first.fields["text"].startswith("There is no focal consolidation") and first.fields[
        "text"
    ].endswith("No acute cardiopulmonary process.")
    assert first.image.ndim == 2  # gray JPEG saved as RGB comes back gray
    assert first.extra["subject_id"] == "10000032" and first.extra["study_id"] == "50414267"
    assert samples["mimic-s53189527-2a2277a9-b0ded155"].fields["text"] == "Unchanged ___."
    assert {s.split for s in samples.values()} == {hash_split("p10000032", salt="mimic-cxr")}
    assert sorted((s.item, s.kind) for s in result.skipped) == [
        ("files/p11/p11000011/s50000001", "no images"),
        ("files/p11/p11000011/s50000002", "no report"),
        ("files/p12/p12000012/s50000003.txt", "no findings or impression"),
    ]
    assert_verifies(out)


def test_mimic_cxr_official_split_csv(tmp_path):
    root = write_mimic(tmp_path / "mimic")
    with gzip.open(root / "mimic-cxr-2.0.0-split.csv.gz", "wt", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["dicom_id", "study_id", "subject_id", "split"])
        writer.writerow(["02aa804e-bde0afdd", "50414267", "10000032", "validate"])
        writer.writerow(["174413ec-4ec4c1f7", "50414267", "10000032", "validate"])
        writer.writerow(["2a2277a9-b0ded155", "53189527", "10000032", "test"])
    out = tmp_path / "out"
    convert("mimic-cxr", root, out, progress=False)
    splits = {k: s.split for k, s in read_back(out).items()}
    assert splits == {
        "mimic-s50414267-02aa804e-bde0afdd": "val",
        "mimic-s50414267-174413ec-4ec4c1f7": "val",
        "mimic-s53189527-2a2277a9-b0ded155": "test",
    }
    assert_verifies(out)


def test_mimic_cxr_without_files_folder(tmp_path):
    with pytest.raises(LayoutError, match=r"files: files/ folder not found; --format mimic-cxr expects"):
        convert("mimic-cxr", tmp_path, tmp_path / "out", progress=False)
