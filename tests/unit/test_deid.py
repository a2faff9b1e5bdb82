"""De-identification rules (PS3.15 Annex E basic profile) on small hand-built datasets.

Real pydicom test files are covered in test_dicom.py; here each rule is pinned on its own.
"""

from __future__ import annotations

import pytest
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian

from biomedgpt.ingest import deid
from biomedgpt.ingest.deid import BurnedInAnnotationError, deidentify, derive_uid, refuse_burned_in


def _dataset() -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5.6"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.SourceApplicationEntityTitle = "SCANNER_AE"
    ds.file_meta.PrivateInformationCreatorUID = "1.2.3.99"
    ds.file_meta.PrivateInformation = b"vendor notes"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = "1.2.3.4.5.6"
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = "1.2.3.4.5"
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "MRN-778899"
    ds.PatientBirthDate = "19700101"
    ds.PatientAge = "055Y"
    ds.StudyDate = "20240102"
    ds.SeriesTime = "101010"
    ds.InstitutionName = "General Hospital"
    ds.StudyDescription = "CHEST CT for Jane"
    ds.ImageComments = "call Dr. House"
    ds.Modality = "CT"
    ds.BodyPartExamined = "CHEST"
    ds.Manufacturer = "ACME"
    nested = Dataset()
    nested.ReferencedSOPClassUID = CTImageStorage
    nested.ReferencedSOPInstanceUID = "1.2.3.4.5.7"
    nested.add_new(0x00091001, "LO", "private inside a sequence")
    ds.ReferencedImageSequence = [nested]
    other = Dataset()
    other.add_new(0x0040A123, "PN", "Observer^Nested")  # PersonName (D) inside an unlisted sequence
    other.add_new(0x00142006, "PN", "Evaluator^Nested")  # EvaluatorName: PN not in the table
    other.add_new(0x00140102, "DA", "20240105")  # SecondaryReviewDate: DA not in the table
    other.add_new(0x00321032, "PN", "Requesting^Doctor")  # RequestingPhysician (X)
    other.add_new(0x00181050, "DS", "0.5")  # SpatialResolution, kept
    ds.add_new(0x00400260, "SQ", [other])  # PerformedProtocolCodeSequence: not in the table
    ds.add_new(0x00090010, "LO", "ACME_PRIVATE")
    ds.add_new(0x00091002, "SH", "secret")
    ds.add_new(0x60003000, "OW", b"\x00\x01")  # OverlayData
    ds.add_new(0x60000010, "US", 2)  # OverlayRows
    ds.add_new(0x50000005, "US", 1)  # CurveDimensions
    return ds


def test_table_uses_known_keywords_and_actions() -> None:
    for name, action in deid.PROFILE_ACTIONS.items():
        assert tag_for_keyword(name) is not None or (len(name) == 8 and int(name, 16) >= 0), name
        assert action in deid._RESOLVE, action
    assert len(deid.PROFILE_ACTIONS) > 600
    # A few rows of PS3.15 Table E.1-1, basic profile column.
    rows = {"PatientName": "Z", "PatientID": "Z/D", "PatientBirthDate": "Z", "StudyInstanceUID": "U",
            "StudyDescription": "X", "InstitutionName": "X/Z/D", "AccessionNumber": "Z",
            "OtherPatientIDsSequence": "X", "ReferencedImageSequence": "X/Z/U*", "SeriesDate": "X/D"}  # fmt: skip
    for keyword, action in rows.items():
        assert deid.PROFILE_ACTIONS[keyword] == action


def test_identifying_values_are_removed_or_blanked() -> None:
    ds = _dataset()
    report = deidentify(ds, salt="s1")
    print("\nremoved:", report.removed, "\nemptied:", report.emptied, "\nreplaced:", report.replaced)
    assert ds.PatientName == "" and ds.PatientID == "" and ds.PatientBirthDate == "" and ds.StudyDate == ""
    for gone in ("PatientAge", "SeriesTime", "InstitutionName", "StudyDescription", "ImageComments"):
        assert gone not in ds and gone in report.removed
    assert {"PatientName", "PatientID", "PatientBirthDate", "StudyDate"} <= set(report.emptied)
    for gone in ("SourceApplicationEntityTitle", "PrivateInformation", "PrivateInformationCreatorUID"):
        assert gone not in ds.file_meta
    # kept: not identifying in the basic profile
    assert (ds.Modality, ds.BodyPartExamined, ds.Manufacturer) == ("CT", "CHEST", "ACME")
    assert ds.SOPClassUID == CTImageStorage and ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


def test_private_curves_overlays_and_nested_people_are_removed() -> None:
    ds = _dataset()
    report = deidentify(ds, salt="s1")
    assert report.private_removed == 3  # creator + element at top level, one inside a sequence
    assert not any(el.tag.is_private for el in ds.iterall())
    assert not any(el.tag.group in (0x5000, 0x6000) for el in ds.iterall())
    assert {"OverlayData", "OverlayRows"} <= set(report.removed)
    nested = ds.PerformedProtocolCodeSequence[0]
    assert nested[0x0040A123].value == deid.DUMMY_TEXT  # D: dummy value
    assert 0x00321032 not in nested  # RequestingPhysician: X
    assert nested[0x00142006].value == "" and nested[0x00140102].value == ""  # safety net: any PN, any date
    assert float(nested[0x00181050].value) == 0.5


def test_uids_are_salted_deterministic_and_consistent() -> None:
    a, b, c = _dataset(), _dataset(), _dataset()
    deidentify(a, salt="run-1")
    deidentify(b, salt="run-1")
    deidentify(c, salt="run-2")
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        assert a[kw].value == b[kw].value != c[kw].value
        assert UID(a[kw].value).is_valid and a[kw].value.startswith("2.25.")
    assert a.SOPInstanceUID == a.file_meta.MediaStorageSOPInstanceUID  # one mapping for one run
    assert a.ReferencedImageSequence[0].ReferencedSOPInstanceUID == derive_uid("1.2.3.4.5.7", salt="run-1")
    assert a.ReferencedImageSequence[0].ReferencedSOPClassUID == CTImageStorage  # class UIDs are kept
    assert "1.2.3.4" not in {str(el.value) for el in a.iterall() if el.VR == "UI"}


def test_derive_uid_shape() -> None:
    uid = derive_uid("1.2.840.113619.2.55.3", salt="x")
    assert uid == derive_uid("1.2.840.113619.2.55.3 ", salt="x")  # padding does not matter
    assert len(uid) <= 64 and UID(uid).is_valid
    assert uid != derive_uid("1.2.840.113619.2.55.3", salt="y")


def test_dataset_is_marked_as_deidentified() -> None:
    ds = _dataset()
    deidentify(ds, salt="s")
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.DeidentificationMethod == deid.METHOD and len(deid.METHOD) <= 64
    assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"


def test_empty_salt_is_refused() -> None:
    with pytest.raises(ValueError, match=r"salt"):
        deidentify(_dataset(), salt="")


def test_report_serialises() -> None:
    report = deidentify(_dataset(), salt="s")
    as_dict = report.to_dict()
    assert as_dict["private_removed"] == report.private_removed and "PatientName" in report.touched
    assert "Doe^Jane" not in repr(as_dict)


def test_burned_in_annotation_is_refused_unless_allowed() -> None:
    ds = _dataset()
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(BurnedInAnnotationError, match=r"scan_017\.dcm"):
        refuse_burned_in(ds, source="scan_017.dcm", allow=False)
    refuse_burned_in(ds, source="scan_017.dcm", allow=True)
    ds.BurnedInAnnotation = "NO"
    refuse_burned_in(ds, source="scan_017.dcm", allow=False)
