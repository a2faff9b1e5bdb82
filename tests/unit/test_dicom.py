"""read_dicom on the real DICOM files shipped inside the installed pydicom package.

For each file: every identifying value of the original (names, IDs, dates, times, instance UIDs,
institution and device fields, descriptions, private text) must be absent from the de-identified
dataset (every element, sequences and file meta included) and from what ``read_dicom`` returns;
pixels must equal the original's after the Modality LUT. Run with ``-s`` to see what was removed.
"""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, get_decoder

from biomedgpt.ingest.deid import PROFILE_ACTIONS, BurnedInAnnotationError
from biomedgpt.ingest.dicom import DicomDecoderError, DicomReadError, load_deidentified, read_dicom

# Files with PHI-like tags: CT, MR, RT dose (multi-frame), SEG, MR with overlays and private tags,
# NM (JPEG 2000), US (multi-frame YBR JPEG).
REAL_FILES = ["CT_small.dcm", "MR_small.dcm", "rtdose.dcm", "liver_1frame.dcm", "examples_overlay.dcm",
              "JPEG2000.dcm", "examples_ybr_color.dcm"]  # fmt: skip

# Identifying by nature, listed here independently of the de-identification table.
IDENTIFYING_KEYWORDS = {
    "PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "OtherPatientNames", "PatientAddress",
    "InstitutionName", "InstitutionAddress", "StationName", "DeviceSerialNumber", "ReferringPhysicianName",
    "OperatorsName", "NameOfPhysiciansReadingStudy", "PerformingPhysicianName", "RequestingPhysician",
    "AccessionNumber", "StudyID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
    "FrameOfReferenceUID", "MediaStorageSOPInstanceUID", "ReferencedSOPInstanceUID", "StorageMediaFileSetUID",
    "StudyDescription", "SeriesDescription", "ImageComments", "ProtocolName", "RequestedProcedureDescription",
    "PerformedProcedureStepID", "ScheduledProcedureStepID", "RequestedProcedureID", "StudyComments",
    "ClinicalTrialCoordinatingCenterName", "ContentCreatorName",
}  # fmt: skip
TRIVIAL = set("0-. ")


def _path(name: str) -> Path:
    return Path(get_testdata_file(name))


def _read(path: Path) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some test files carry deliberately odd values
        return pydicom.dcmread(path)


def _all_elements(ds: Dataset):
    yield from ds.file_meta.iterall()
    yield from ds.iterall()


def _strings(value) -> list[str]:
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return [s for v in value for s in _strings(v)]
    if isinstance(value, bytes):
        return []
    return [str(value).strip()]


def _identifying_values(ds: Dataset) -> set[str]:
    """Non-trivial values of identifying elements, dates, times, names and private text.

    A value that the original also holds inside an attribute the profile keeps (e.g. private
    "WHOLE BODY" next to BodyPartExamined, institution "TOSHIBA" inside Manufacturer "TOSHIBA_MEC")
    cannot be a leak of the identifying element, so it is left out.
    """
    found: set[str] = set()
    kept: list[str] = []
    for el in _all_elements(ds):
        if el.VR == "SQ" or el.tag.group == 0x7FE0:
            continue
        if (
            el.keyword in IDENTIFYING_KEYWORDS
            or el.VR in {"PN", "DA", "TM", "DT"}
            or (el.tag.is_private and el.VR in {"LO", "SH", "LT", "ST", "UT", "PN", "UI"})
        ):
            found |= {v for v in _strings(el.value) if len(v) >= 4 and not set(v) <= TRIVIAL}
        elif not el.tag.is_private and el.VR != "UI" and el.keyword not in PROFILE_ACTIONS:
            kept += _strings(el.value)
    return {v for v in found if not any(v in k for k in kept)}


def _leaks(values: set[str], ds: Dataset) -> list[str]:
    leaks = []
    for el in _all_elements(ds):
        for s in _strings(el.value) if el.VR != "SQ" else []:
            for v in values:
                if (len(v) >= 6 and v in s) or v == s:
                    leaks.append(f"{el.keyword or el.tag}={s!r} holds {v!r}")
    return leaks


def _table_keywords_present(ds: Dataset) -> set[str]:
    """Table keywords at the top level and in the file meta (nested ones go with their sequence)."""
    return {el.keyword for part in (ds.file_meta, ds) for el in part if el.keyword in PROFILE_ACTIONS}


@pytest.mark.parametrize("name", REAL_FILES)
def test_no_identifying_value_survives(name: str) -> None:
    path = _path(name)
    original = _read(path)
    secrets = _identifying_values(original)
    assert secrets, f"{name}: the test file should carry identifying values"
    deid_ds, report = load_deidentified(path, salt="test-salt")
    print(f"\n{name}: removed={list(report.removed)}\n  emptied={list(report.emptied)}"
          f"\n  replaced={list(report.replaced)}\n  private_removed={report.private_removed}")  # fmt: skip
    assert report.touched, name
    assert _table_keywords_present(original) - {"ReferencedImageSequence", "SourceImageSequence"} <= set(
        report.touched
    )
    assert _leaks(secrets, deid_ds) == []
    assert deid_ds.PatientIdentityRemoved == "YES"
    image = read_dicom(path, salt="test-salt")
    returned = repr(image.meta) + repr(image.deid)
    assert [v for v in secrets if v in returned] == []


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "rtdose.dcm", "liver_1frame.dcm"])
def test_pixels_equal_the_original_after_the_modality_lut(name: str) -> None:
    original = _read(_path(name))
    expected = original.pixel_array
    image = read_dicom(_path(name))
    if original.Modality == "CT":
        expected = apply_modality_lut(expected, original).astype(np.float32)
        assert image.pixels.dtype == np.float32
    else:
        assert image.pixels.dtype == expected.dtype
    assert np.array_equal(image.pixels, expected)


def test_ct_values_are_hounsfield_units() -> None:
    image = read_dicom(_path("CT_small.dcm"))
    raw = _read(_path("CT_small.dcm")).pixel_array
    assert np.array_equal(image.pixels, raw.astype(np.float32) - 1024.0)  # RescaleIntercept -1024
    assert (image.modality, image.photometric, image.spacing) == ("CT", "MONOCHROME2", (0.661468, 0.661468))
    assert image.meta["Rows"] == 128 and image.meta["PixelSpacing"] == [0.661468, 0.661468]
    assert "StudyDescription" not in image.meta and "InstitutionName" not in image.meta


def test_multi_frame_and_colour() -> None:
    dose = read_dicom(_path("rtdose.dcm"))
    assert dose.pixels.shape == (15, 10, 10)
    us = read_dicom(_path("examples_ybr_color.dcm"))
    assert us.pixels.shape == (30, 240, 320, 3) and us.photometric == "RGB" and us.modality == "US"


def _write_copy(tmp_path: Path, name: str, **changes: str) -> Path:
    ds = _read(_path(name))
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    out = tmp_path / f"patient_scan_{name}"
    ds.save_as(out)
    return out


def test_burned_in_annotation_is_refused_and_accepted_with_opt_in(tmp_path: Path) -> None:
    path = _write_copy(tmp_path, "CT_small.dcm", BurnedInAnnotation="YES")
    with pytest.raises(BurnedInAnnotationError, match=re.escape(str(path))):
        read_dicom(path)
    image = read_dicom(path, allow_burned_in=True)
    assert image.meta["BurnedInAnnotation"] == "YES" and image.pixels.shape == (128, 128)


@pytest.mark.parametrize("keep", [300, 20_000])  # cut inside the header, cut inside the pixel data
def test_truncated_file_raises_with_the_path(tmp_path: Path, keep: int) -> None:
    path = tmp_path / "cut.dcm"
    path.write_bytes(_path("CT_small.dcm").read_bytes()[:keep])
    with pytest.raises(DicomReadError, match=r"cut\.dcm"):
        read_dicom(path)


def test_corrupt_and_pixel_less_files_raise(tmp_path: Path) -> None:
    with pytest.raises(DicomReadError, match=r"MR_truncated\.dcm.*pixel data"):
        read_dicom(_path("MR_truncated.dcm"))
    with pytest.raises(DicomReadError, match=r"no pixel data"):
        read_dicom(_path("rtplan.dcm"))
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\x89PNG not a dicom file" * 20)
    with pytest.raises(DicomReadError, match=r"junk\.dcm: not readable as DICOM"):
        read_dicom(junk)


def test_compressed_without_decoder_names_syntax_and_package() -> None:
    path = _path("MR_small_jpeg_ls_lossless.dcm")
    if get_decoder(_read(path).file_meta.TransferSyntaxUID).available_plugins:
        pytest.skip("a JPEG-LS decoder is installed here")
    with pytest.raises(DicomDecoderError, match=r"JPEG-LS Lossless") as err:
        read_dicom(path)
    assert "pylibjpeg" in str(err.value) or "pyjpegls" in str(err.value)


def test_uids_deterministic_per_salt(tmp_path: Path) -> None:
    first = read_dicom(_path("CT_small.dcm"), salt="a").meta
    again = read_dicom(_path("CT_small.dcm"), salt="a").meta
    other = read_dicom(_path("CT_small.dcm"), salt="b").meta
    original = _read(_path("CT_small.dcm"))
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        assert first[kw] == again[kw] != other[kw]
        assert first[kw] != str(original[kw].value)


def test_copy_keeps_series_membership(tmp_path: Path) -> None:
    """Two files of one series get the same new SeriesInstanceUID and different SOPInstanceUIDs."""
    second = _write_copy(tmp_path, "CT_small.dcm", SOPInstanceUID="1.3.6.1.4.1.5962.1.1.1.1.2.99")
    copy = tmp_path / "first.dcm"
    shutil.copy(_path("CT_small.dcm"), copy)
    a, b = read_dicom(copy).meta, read_dicom(second).meta
    assert a["SeriesInstanceUID"] == b["SeriesInstanceUID"] and a["SOPInstanceUID"] != b["SOPInstanceUID"]
