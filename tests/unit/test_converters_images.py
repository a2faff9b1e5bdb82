"""Image converters (medmnist, dicom-folder, volumes) on tiny fixtures in each published layout.

DICOM fixtures are real files from pydicom's test data, copied and given identifying values that
must not reach the shards.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from biomedgpt.ingest.converters import convert
from biomedgpt.ingest.converters.common import ConvertOptions, LayoutError, hash_split
from biomedgpt.ingest.converters.dicom_folder import caption
from biomedgpt.ingest.converters.volume_pairs import kept_slices
from tests.unit.test_converters_vqa import assert_verifies, read_back

# ---------------------------------------------------------------------------------------------
# medmnist


def _images(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def write_pathmnist(folder: Path) -> tuple[Path, dict[str, np.ndarray]]:
    images = {
        "train": _images(3, (28, 28, 3), 0),
        "val": _images(1, (28, 28, 3), 1),
        "test": _images(2, (28, 28, 3), 2),
    }
    labels = {"train": [[0], [8], [12]], "val": [[5]], "test": [[1], [1]]}  # 12: out of range
    arrays = {f"{s}_images": images[s] for s in images} | {
        f"{s}_labels": np.array(labels[s], np.uint8) for s in labels
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pathmnist.npz"
    np.savez_compressed(path, **arrays)
    return path, images


def test_medmnist_multiclass(tmp_path):
    _, images = write_pathmnist(tmp_path / "in")
    out = tmp_path / "out"
    result = convert("medmnist", tmp_path / "in", out, progress=False)  # a folder with one .npz
    samples = read_back(out)
    assert sorted(samples) == ["pathmnist-test-000000", "pathmnist-test-000001", "pathmnist-train-000000",
                               "pathmnist-train-000001", "pathmnist-val-000000"]  # fmt: skip
    assert samples["pathmnist-train-000000"].fields == {"label": "adipose"}
    assert samples["pathmnist-train-000001"].fields == {"label": "colorectal adenocarcinoma epithelium"}
    assert samples["pathmnist-val-000000"].fields == {"label": "smooth muscle"}
    assert (
        samples["pathmnist-test-000001"].split == "test" and samples["pathmnist-test-000001"].modality == "SM"
    )
    np.testing.assert_array_equal(samples["pathmnist-train-000001"].image, images["train"][1])
    np.testing.assert_array_equal(samples["pathmnist-test-000000"].image, images["test"][0])
    assert [(s.item, s.kind) for s in result.skipped] == [("train_labels[2]", "bad label")]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["name"] == "pathmnist" and manifest["counts_by_split"] == {
        "train": 2,
        "val": 1,
        "test": 2,
    }
    assert_verifies(out)


def test_medmnist_multilabel_joins_positive_names(tmp_path):
    gray = {s: _images(2, (64, 64), i) for i, s in enumerate(("train", "val", "test"))}
    rows = np.zeros((2, 14), np.uint8)
    rows[0, [2, 4]] = 1  # effusion, mass
    arrays = {f"{s}_images": gray[s] for s in gray} | {f"{s}_labels": rows for s in gray}
    np.savez(tmp_path / "chestmnist_64.npz", **arrays)
    out = tmp_path / "out"
    convert("medmnist", tmp_path / "chestmnist_64.npz", out, progress=False)
    samples = read_back(out)
    assert len(samples) == 6 and {s.image.shape for s in samples.values()} == {(64, 64)}
    assert samples["chestmnist-train-000000"].fields["label"] == "effusion, mass"
    assert samples["chestmnist-train-000000"].extra["labels"] == ["effusion", "mass"]
    assert samples["chestmnist-train-000001"].fields["label"] == "no finding"
    assert_verifies(out)


def test_medmnist_labels_file_and_unknown_flag(tmp_path):
    path, _ = write_pathmnist(tmp_path)
    renamed = path.rename(tmp_path / "mytissue_28.npz")
    with pytest.raises(ValueError, match=r"flag 'mytissue' has no known class names.*--labels"):
        convert("medmnist", renamed, tmp_path / "out", progress=False)
    names = tmp_path / "names.json"
    names.write_text(json.dumps({str(i): f"class {i}" for i in range(13)}))
    convert("medmnist", renamed, tmp_path / "out", options=ConvertOptions(labels=names), progress=False)
    samples = read_back(tmp_path / "out")
    assert samples["mytissue-train-000002"].fields["label"] == "class 12" and len(samples) == 6


def test_medmnist_refuses_3d(tmp_path):
    volume = _images(2, (28, 28, 28), 0)
    arrays = {
        f"{s}_{k}": volume if k == "images" else np.zeros((2, 1), np.uint8)
        for s in ("train", "val", "test")
        for k in ("images", "labels")
    }
    np.savez(tmp_path / "organmnist3d.npz", **arrays)
    with pytest.raises(ValueError, match="3-D MedMNIST is not supported"):
        convert(
            "medmnist",
            tmp_path / "organmnist3d.npz",
            tmp_path / "out",
            options=ConvertOptions(flag="organamnist"),
            progress=False,
        )


# ---------------------------------------------------------------------------------------------
# dicom-folder

SECRET_NAME = "Doe^Jane^Secretname"
SECRET_ID = "MRN-99887766"


def _dicom(src: str, dest: Path, **tags: str) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(get_testdata_file(src), dest)
    ds = pydicom.dcmread(dest)
    ds.PatientName, ds.PatientID = SECRET_NAME, SECRET_ID
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.save_as(dest)


def write_dicom_tree(root: Path) -> Path:
    _dicom("CT_small.dcm", root / "Jane_Doe" / "study1" / "ct.dcm", BodyPartExamined="CHEST")
    _dicom("MR_small.dcm", root / "Jane_Doe" / "study2" / "mr.DCM")
    _dicom("CT_small.dcm", root / "burned" / "ct.dcm", BurnedInAnnotation="YES")
    (root / "broken").mkdir()
    (root / "broken" / "junk.dcm").write_bytes(b"this is not DICOM")
    (root / "notes.txt").write_text("ignored: not a .dcm file")
    return root


def test_dicom_folder_deidentifies_and_captions(tmp_path):
    root = write_dicom_tree(tmp_path / "dicom")
    out = tmp_path / "out"
    result = convert("dicom-folder", root, out, progress=False)
    samples = list(read_back(out).values())
    assert sorted(s.fields["text"] for s in samples) == ["a ct scan of the chest", "an mri scan"]
    assert {s.modality for s in samples} == {"CT", "MR"} and {s.task for s in samples} == {"caption"}
    # Both files are under the same top-level folder (one patient): one split, from that folder.
    assert {s.split for s in samples} == {hash_split("Jane_Doe", salt="dicom-folder")}
    assert all(s.extra["text_source"].startswith("template") for s in samples)
    ct = next(s for s in samples if s.modality == "CT")
    assert ct.image.shape == (128, 128) and ct.image.dtype == np.uint8 and ct.image.std() > 0
    assert ct.extra["dicom"]["PatientIdentityRemoved"] == "YES"
    assert sorted((s.item, s.kind) for s in result.skipped) == [
        ("broken/junk.dcm", "unreadable DICOM"),
        ("burned/ct.dcm", "burned-in annotation"),
    ]
    written = b"".join(p.read_bytes() for p in out.iterdir())
    for secret in (b"Secretname", SECRET_ID.encode(), b"Jane_Doe", b"CompressedSamples"):
        assert secret not in written, secret
    assert_verifies(out)

    allowed = tmp_path / "allowed"
    result = convert(
        "dicom-folder", root, allowed, options=ConvertOptions(allow_burned_in=True), progress=False
    )
    assert len(read_back(allowed)) == 3 and [s.kind for s in result.skipped] == ["unreadable DICOM"]


def test_dicom_caption_template():
    assert (
        caption({"Modality": "CR", "BodyPartExamined": "CHEST", "ViewPosition": "PA"})
        == "an x-ray of the chest, pa view"
    )
    assert caption({"Modality": "XX"}) == "a medical image"


def test_dicom_folder_without_dicom_files(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(LayoutError, match=r"DICOM files not found; --format dicom-folder expects"):
        convert("dicom-folder", tmp_path, tmp_path / "out", progress=False)


# ---------------------------------------------------------------------------------------------
# volumes


def _nifti(path: Path, data: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([-1.0, -1.0, 2.0, 1.0])), str(path))  # LPS, 2 mm slices


def _case(seed: int, lesion_slices: list[int], depth: int = 10) -> tuple[np.ndarray, np.ndarray]:
    image = np.random.default_rng(seed).integers(-200, 300, (8, 6, depth)).astype(np.int16)
    mask = np.zeros((8, 6, depth), np.uint8)
    for k in lesion_slices:
        mask[2:5, 1:3, k] = 2  # label value 2: any nonzero label is foreground
    return image, mask


def test_volumes_decathlon_layout(tmp_path):
    root = tmp_path / "Task09_Spleen"
    image_a, mask_a = _case(0, [3, 4])
    _nifti(root / "imagesTr" / "spleen_1.nii.gz", image_a)
    _nifti(root / "labelsTr" / "spleen_1.nii.gz", mask_a)
    image_b, mask_b = _case(1, [7])
    _nifti(root / "imagesTr" / "spleen_2_0000.nii.gz", image_b)  # nnU-Net channel suffix
    _nifti(root / "labelsTr" / "spleen_2.nii.gz", mask_b)
    (root / "imagesTr" / "._spleen_1.nii.gz").write_bytes(b"macOS resource fork from the tar")
    (root / "imagesTr" / "spleen_3.nii.gz").write_bytes(b"not gzip")
    (root / "labelsTr" / "spleen_3.nii.gz").write_bytes(b"not gzip")
    _nifti(root / "imagesTr" / "spleen_4.nii.gz", image_b)  # no label
    (root / "dataset.json").write_text(json.dumps({"name": "Spleen", "modality": {"0": "CT"}}))
    out = tmp_path / "out"
    result = convert("volumes", root, out, options=ConvertOptions(empty_fraction=0.25), progress=False)
    samples = read_back(out)
    # spleen_1: slices 3, 4 + round(0.25 * 8) = 2 evenly spaced empty ones (0 and 9).
    assert sorted(samples) == [
        *("vol-spleen_1-0000", "vol-spleen_1-0003", "vol-spleen_1-0004", "vol-spleen_1-0009"),
        *("vol-spleen_2-0000", "vol-spleen_2-0007", "vol-spleen_2-0009"),
    ]
    lesion = samples["vol-spleen_1-0003"]
    assert lesion.task == "segmentation" and lesion.fields == {"target": "lesion"} and lesion.modality == "CT"
    # LPS display orientation: (H, W) = (P, L) = data[:, :, k].T, so the lesion is rows 1..2, cols 2..4.
    expected = np.zeros((6, 8), bool)
    expected[1:3, 2:5] = True
    np.testing.assert_array_equal(lesion.mask, expected)
    assert (
        not samples["vol-spleen_1-0000"].mask.any()
        and samples["vol-spleen_1-0000"].extra["foreground"] is False
    )
    for volume in ("spleen_1", "spleen_2"):  # all slices of a volume in the split its name hashes to
        assert {s.split for k, s in samples.items() if volume in k} == {hash_split(volume, salt="volumes")}
    assert sorted((s.item, s.kind) for s in result.skipped) == [
        ("imagesTr/spleen_3.nii.gz", "unreadable volume"),
        ("imagesTr/spleen_4.nii.gz", "no mask"),
    ]
    assert_verifies(out)


def test_volumes_folder_pairs(tmp_path):
    root = tmp_path / "pairs"
    image, mask = _case(2, [1, 2], depth=4)
    _nifti(root / "a" / "case7.nii.gz", image)
    _nifti(root / "a" / "case7_mask.nii.gz", mask)
    root.joinpath("b").mkdir()
    nrrd.write(str(root / "b" / "lung1_image.nrrd"), image.astype(np.float32), index_order="F")
    nrrd.write(str(root / "b" / "lung1_label.nrrd"), mask, index_order="F")
    _nifti(root / "c" / "lonely.nii.gz", image)
    out = tmp_path / "out"
    result = convert(
        "volumes", root, out, options=ConvertOptions(target="tumour", empty_fraction=0.0), progress=False
    )
    samples = read_back(out)
    assert sorted(samples) == ["vol-a_case7-0001", "vol-a_case7-0002", "vol-b_lung1-0001", "vol-b_lung1-0002"]
    assert {s.fields["target"] for s in samples.values()} == {"tumour"}
    assert all(s.mask.any() for s in samples.values()) and {s.modality for s in samples.values()} == {None}
    assert [(s.item, s.kind) for s in result.skipped] == [("c/lonely.nii.gz", "no mask")]
    assert_verifies(out)


def test_kept_slices_are_evenly_spaced():
    mask = np.zeros((2, 2, 21), np.uint8)
    mask[0, 0, 10] = 1
    assert kept_slices(mask, 0.0) == [10]
    assert kept_slices(mask, 0.1) == [0, 10, 20]  # 20 empty slices, 2 kept: the two ends
    assert len(kept_slices(mask, 1.0)) == 21


def test_volumes_empty_folder_names_both_layouts(tmp_path):
    with pytest.raises(LayoutError, match=r"imagesTr.*labelsTr.*_mask"):
        convert("volumes", tmp_path, tmp_path / "out", progress=False)
