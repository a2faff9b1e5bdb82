"""Demo DICOM source: templated text from allowed tags, and on the real files: de-identified, deduplicated,
downsampled, split by file, undecodable and burned-in-risk files reported instead of written."""

from __future__ import annotations

import json
import warnings
from collections import defaultdict

import pytest

from biomedgpt.data.schema import encode_sample
from biomedgpt.ingest.demo import dicom_files
from biomedgpt.ingest.demo.common import DemoOptions, SourceReport, cached_archive

pydicom = pytest.importorskip("pydicom")


def test_caption_and_questions_come_from_allowed_tags():
    meta = {"BodyPartExamined": "CHEST", "ViewPosition": "PA"}
    assert (
        dicom_files.caption("CR", meta) == "a computed radiography image of the chest, posteroanterior view"
    )
    fields = {variant: f for _, variant, f in dicom_files.task_fields("CR", meta)}
    assert fields["modality"]["answer"] == "x-ray" and fields["type"]["label"] == "x-ray"
    assert fields["bodypart"]["answer"] == "chest" and fields["view"]["answer"] == "posteroanterior"
    bare = {v for _, v, _ in dicom_files.task_fields("MR", {})}
    assert bare == {"caption", "type", "modality", "report"}  # no body part, no view: no question about them
    assert dicom_files.caption("NM", {"BodyPartExamined": "WHOLE BODY"}) == (
        "a nuclear medicine image of the whole body"
    )
    assert [dicom_files.file_split(i) for i in range(8)] == ["train"] * 5 + ["val", "test", "train"]
    assert fields["report"]["text"] == (
        "findings: a computed radiography image of the chest, posteroanterior view. "
        "impression: x-ray study of the chest; findings are not annotated for this image."
    )


def test_report_names_the_plane_measured_from_the_orientation():
    axial = {"ImageOrientationPatient": [1, 0, 0, 0, 1, 0], "BodyPartExamined": "PANCREAS"}
    assert dicom_files.image_plane(axial) == "axial"
    assert dicom_files.image_plane({"ImageOrientationPatient": [1, 0, 0, 0, 0, -1]}) == "coronal"
    assert dicom_files.image_plane({"ImageOrientationPatient": [0, 1, 0, 0, 0, -1]}) == "sagittal"
    assert dicom_files.image_plane({"ImageOrientationPatient": [0.57, 0.82, 0, 0, 0, -1]}) == "oblique"
    assert dicom_files.image_plane({}) is None
    assert dicom_files.report_text("CT", axial) == (
        "findings: an axial ct image of the pancreas. "
        "impression: ct study of the pancreas; findings are not annotated for this image."
    )
    assert dicom_files.report_text("MR", {}).startswith("findings: an mri image. impression: mri study;")
    assert dicom_files.frames_to_read(1) == [None] and dicom_files.frames_to_read(120) == [0, 40, 79, 119]


# A subset of the real files that exercises every rule and stays fast: the chest CR in two encodings
# (one lossy), the CT slice 693 lossless and lossy (same position), small CT/MR and an RLE copy,
# a multi-frame MR, NM, an ultrasound screen capture, a JPEG-lossless file, an RT plan and a SEG object.
SUBSET = {
    "RG1_UNCR.dcm", "RG1_UNCI.dcm", "693_UNCR.dcm", "693_UNCI.dcm", "CT_small.dcm", "MR_small.dcm",
    "MR_small_RLE.dcm", "emri_small.dcm", "JPEG2000_UNC.dcm", "US1_UNCR.dcm", "JPEG-LL.dcm", "rtplan.dcm",
    "liver.dcm",
}  # fmt: skip


@pytest.fixture(scope="module")
def built(registry_cache):
    assert cached_archive("pydicom-data") is not None, f"pydicom-data 1.0.0 is not in {registry_cache}"
    files = [f for f in dicom_files.candidate_files() if f.path.name in SUBSET]
    assert {f.path.name for f in files} == SUBSET
    report = SourceReport(name="dicom")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dicom_files, "candidate_files", lambda: files)
        samples = list(dicom_files.samples(DemoOptions(), report))
    return samples, report, files


def _original_identifiers(files) -> set[str]:
    """PatientName / PatientID / InstitutionName values of the files, read raw."""
    found = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for file in files:
            try:
                ds = pydicom.dcmread(file.path, stop_before_pixels=True)
            except Exception:
                continue
            for keyword in ("PatientName", "PatientID", "InstitutionName"):
                value = str(ds.get(keyword, "") or "").strip()
                if len(value) >= 4:
                    found.add(value)
    return found


def test_written_samples_are_deidentified(built):
    samples, _, files = built
    assert samples
    identifiers = _original_identifiers(files)
    assert "CompressedSamples^RG1" in identifiers  # the originals do carry names
    for sample in samples:
        assert sample.extra["deidentified"] is True
        doc = encode_sample(sample)["json"].decode()
        assert "PatientName" not in doc and "PatientID" not in doc
        assert not [value for value in identifiers if value in doc], sample.key


def test_every_file_is_kept_or_reported(built):
    samples, report, _files = built
    kept = {s.extra["source"]["member"].rsplit("/", 1)[-1] for s in samples}
    assert kept == {"RG1_UNCR.dcm", "693_UNCR.dcm", "CT_small.dcm", "MR_small.dcm", "emri_small.dcm",
                    "JPEG2000_UNC.dcm"}  # fmt: skip
    why = {line.split(": ", 1)[0].rsplit("/", 1)[-1].split("#")[0]: line for line in report.skipped}
    assert set(why) == SUBSET - kept
    # lossless and uncompressed copies are read first; the lossy copies are the duplicates
    assert "duplicate of data_store/data/RG1_UNCR.dcm" in why["RG1_UNCI.dcm"]
    assert "duplicate of data_store/data/693_UNCR.dcm" in why["693_UNCI.dcm"]
    assert "duplicate of" in why["MR_small_RLE.dcm"]
    assert "needs a decoder" in why["JPEG-LL.dcm"] and "JPEG Lossless" in why["JPEG-LL.dcm"]
    assert "not a clinical image type" in why["rtplan.dcm"]
    # the liver SEG references CT slices that neither package ships: no image to pair the mask with
    assert "segmentation object (SEG)" in why["liver.dcm"] and "in neither package" in why["liver.dcm"]
    # ultrasound screen captures carry burned-in names and dates; none is written
    assert "burned-in text" in why["US1_UNCR.dcm"] and not [s for s in samples if s.modality == "US"]
    assert report.skip_reasons["needs a decoder"] == 1


def test_images_are_downsampled_and_split_by_file(built):
    samples, _, _ = built
    splits = defaultdict(set)
    for sample in samples:
        assert max(sample.image.shape[:2]) <= 512
        splits[sample.extra["source"]["member"]].add(sample.split)
    assert all(len(s) == 1 for s in splits.values())
    chest = [s for s in samples if s.extra["dicom"]["BodyPartExamined"] == "CHEST" and s.task == "caption"]
    assert chest and chest[0].image.shape == (512, 482)  # 1955x1841 CR, aspect kept
    assert chest[0].fields["text"].startswith("a computed radiography image of the chest")
    keys = [s.key for s in samples]
    assert len(keys) == len(set(keys))
    assert json.dumps(samples[0].extra)  # JSON-ready
    reports = {s.extra["source"]["member"].rsplit("/", 1)[-1]: s for s in samples if s.task == "report"}
    assert set(reports) == {s.extra["source"]["member"].rsplit("/", 1)[-1] for s in samples}  # one per file
    assert reports["693_UNCR.dcm"].fields["text"].startswith("findings: an axial ct image.")
    assert all(r.extra["templated_text"] for r in reports.values())
