"""Volumes: NIfTI/NRRD round trips and reorientation, DICOM series, windowing, masks (tiny synthetic data)."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from biomedgpt.ingest import registry
from biomedgpt.ingest.volumes import (
    WINDOW_PRESETS,
    Volume,
    lesion_slices,
    load_mask_volume,
    load_volume,
    resample_mask,
    slice_volume,
    volume_shape,
    window,
)

SPACING = (0.5, 0.75, 2.0)


def _data(shape=(5, 6, 4)) -> np.ndarray:
    return np.arange(np.prod(shape), dtype=np.int16).reshape(shape) - 50


def _nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _lps_affine(spacing=SPACING) -> np.ndarray:
    """Voxel axes already L, P, S: in nibabel's RAS world x and y decrease along them."""
    return np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_round_trip(tmp_path: Path, suffix: str) -> None:
    data = _data()
    vol = load_volume(_nifti(tmp_path / f"v{suffix}", data, _lps_affine()), modality="CT")
    assert vol.axes == "LPS" and vol.modality == "CT"
    assert np.array_equal(vol.data, data) and vol.data.dtype == np.int16
    assert vol.spacing == pytest.approx(SPACING)


def test_nifti_in_ras_is_flipped_to_lps(tmp_path: Path) -> None:
    data = _data()
    vol = load_volume(_nifti(tmp_path / "ras.nii", data, np.diag([*SPACING, 1.0])))
    assert np.array_equal(vol.data, data[::-1, ::-1, :])


def test_nifti_with_swapped_axes_is_permuted(tmp_path: Path) -> None:
    data = _data()  # voxel axis 0 runs along P, axis 1 along L
    affine = np.zeros((4, 4))
    affine[1, 0], affine[0, 1], affine[2, 2], affine[3, 3] = -SPACING[0], -SPACING[1], SPACING[2], 1.0
    path = _nifti(tmp_path / "swapped.nii", data, affine)
    vol = load_volume(path)
    assert np.array_equal(vol.data, data.transpose(1, 0, 2))
    assert vol.spacing == pytest.approx((SPACING[1], SPACING[0], SPACING[2]))
    assert volume_shape(path) == vol.data.shape


def test_nrrd_round_trip_lps_and_ras(tmp_path: Path) -> None:
    data = _data()
    header = {"space": "left-posterior-superior", "space directions": np.diag(SPACING)}
    nrrd.write(str(tmp_path / "lps.nrrd"), data, header)
    vol = load_volume(tmp_path / "lps.nrrd")
    assert np.array_equal(vol.data, data) and vol.spacing == pytest.approx(SPACING) and vol.axes == "LPS"
    nrrd.write(str(tmp_path / "ras.nrrd"), data, {**header, "space": "right-anterior-superior"})
    assert np.array_equal(load_volume(tmp_path / "ras.nrrd").data, data[::-1, ::-1, :])


def test_nrrd_without_orientation_keeps_file_order(tmp_path: Path) -> None:
    data = _data()
    nrrd.write(str(tmp_path / "plain.nrrd"), data, {"spacings": list(SPACING)})
    vol = load_volume(tmp_path / "plain.nrrd")
    assert vol.axes == "XYZ" and np.array_equal(vol.data, data) and vol.spacing == pytest.approx(SPACING)


def test_slice_volume_is_display_oriented(tmp_path: Path) -> None:
    data = _data()
    vol = Volume(data=data, spacing=SPACING, axes="LPS")
    assert np.array_equal(slice_volume(vol, 2), data[:, :, 2].T)  # (H, W) = (P, L)
    assert slice_volume(vol, 2).shape == (6, 5)
    hwz = Volume(data=data, spacing=SPACING, axes="HWZ")
    assert np.array_equal(slice_volume(hwz, 0), data[:, :, 0])
    with pytest.raises(IndexError, match="4 slices"):
        slice_volume(vol, 4)


def test_volume_guards(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="3-D"):
        Volume(data=np.zeros((2, 2)), spacing=(1.0, 1.0, 1.0))
    path = _nifti(tmp_path / "big.nii", _data(), _lps_affine())
    with pytest.raises(ValueError, match="over the limit 10"):
        load_volume(path, max_voxels=10)
    with pytest.raises(ValueError, match="not a volume file"):
        load_volume(Path(get_testdata_file("CT_small.dcm")))


def test_ct_windows_at_known_hu_points() -> None:
    hu = np.array([-2000.0, -160.0, 40.0, 240.0, 3000.0])
    assert window(hu, modality="CT").tolist() == [0, 0, 128, 255, 255]  # soft tissue by default
    assert window(np.array([-1350.0, -600.0, 150.0]), modality="CT", window="lung").tolist() == [0, 128, 255]
    assert window(np.array([0.0, 40.0, 80.0]), modality="CT", window="brain").tolist() == [0, 128, 255]
    assert window(np.array([-450.0, 1050.0]), modality="CT", window="bone").tolist() == [0, 255]
    assert window(np.array([0.0, 10.0]), modality="MR", window=(5.0, 10.0)).tolist() == [0, 255]
    assert WINDOW_PRESETS["lung"] == (-600.0, 1500.0) and WINDOW_PRESETS["soft_tissue"] == (40.0, 400.0)


def test_window_errors() -> None:
    with pytest.raises(ValueError, match="only applies to CT"):
        window(np.zeros((2, 2)), modality="MR", window="lung")
    with pytest.raises(ValueError, match="presets"):
        window(np.zeros((2, 2)), modality="CT", window="liver")


def test_percentile_scaling_and_constant_images() -> None:
    ramp = np.arange(1000, dtype=np.float32).reshape(10, 100)
    out = window(ramp, modality="MR")
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    assert np.all(np.diff(out.ravel().astype(int)) >= 0)  # monotonic
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero or NaN warnings
        assert not window(np.full((4, 4), 7.0), modality="MR").any()
        assert not window(np.full((4, 4), 7.0), modality="CT", window=(7.0, 0.0)).any()
        assert not window(np.full((2, 2), np.nan), modality=None).any()
    sparse = np.zeros((10, 10))
    sparse[0, 0] = 5.0  # 1st and 99th percentiles coincide: fall back to min..max
    assert window(sparse, modality="MR")[0, 0] == 255


def test_mask_geometry_must_match(tmp_path: Path) -> None:
    image = load_volume(_nifti(tmp_path / "img.nii", _data(), _lps_affine()))
    good = _nifti(tmp_path / "mask.nii", (_data() > 0).astype(np.uint8), _lps_affine())
    mask = load_mask_volume(good, like=image)
    assert mask.data.dtype == np.uint8 and set(np.unique(mask.data)) == {0, 1}
    bad = _nifti(tmp_path / "small.nii", np.zeros((5, 6, 3), np.uint8), _lps_affine())
    with pytest.raises(ValueError, match=r"mask shape \(5, 6, 3\) does not match image shape \(5, 6, 4\)"):
        load_mask_volume(bad, like=image)
    other = _nifti(tmp_path / "spacing.nii", np.zeros((5, 6, 4), np.uint8), _lps_affine((1.0, 1.0, 1.0)))
    with pytest.raises(ValueError, match="spacing"):
        load_mask_volume(other, like=image)


def test_resample_mask_nearest_keeps_labels() -> None:
    mask = np.array([[0, 1], [1, 0]], dtype=np.uint8)
    up = resample_mask(mask, (4, 4))
    assert np.array_equal(up, np.kron(mask, np.ones((2, 2), np.uint8)))
    rng = np.random.default_rng(0)
    big = (rng.random((37, 53)) > 0.7).astype(np.uint8)
    for size in [(10, 10), (100, 71), (37, 53)]:
        out = resample_mask(big, size)
        assert out.shape == size and set(np.unique(out)) <= {0, 1}
    labels = np.array([[0, 2], [7, 2]], dtype=np.uint8)
    assert set(np.unique(resample_mask(labels, (9, 5)))) == {0, 2, 7}


def test_lesion_slices() -> None:
    mask = np.zeros((3, 3, 6), np.uint8)
    mask[1, 1, 2] = mask[0, 2, 4] = 1
    assert lesion_slices(mask) == [2, 4]
    assert lesion_slices(Volume(data=mask, spacing=(1.0, 1.0, 1.0))) == [2, 4]


def _series(folder: Path, positions: list[float], *, series_uid: str | None = None) -> None:
    """Slices of CT_small at z positions, written in shuffled file order, pixel [0, 0] = slice z."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, z in enumerate(positions):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.ImagePositionPatient = [-158.1, -179.0, z]
        ds.InstanceNumber = i + 1
        ds.SOPInstanceUID = f"1.2.3.{i + 1}"
        if series_uid:
            ds.SeriesInstanceUID = series_uid
        arr = ds.pixel_array.copy()
        arr[0, 0] = int(z) + 1024  # stored value; HU = z after the -1024 intercept
        ds.PixelData = arr.tobytes()
        ds.save_as(folder / f"{(i * 7) % len(positions):03d}.dcm")


def test_dicom_series_sorted_by_position(tmp_path: Path) -> None:
    _series(tmp_path / "series", [10.0, -5.0, 5.0, 0.0])
    vol = load_volume(tmp_path / "series")
    assert vol.axes == "HWZ" and vol.data.shape == (128, 128, 4) and vol.modality == "CT"
    assert vol.data[0, 0, :].tolist() == [-5.0, 0.0, 5.0, 10.0]
    assert vol.spacing == pytest.approx((0.661468, 0.661468, 5.0))
    _series(tmp_path / "series", [20.0], series_uid="1.2.3.999")
    with pytest.raises(ValueError, match="2 DICOM series"):
        load_volume(tmp_path / "series")


def test_real_pyradiomics_lesion_mask_when_cached(registry_cache) -> None:
    """Real lung CT and its lesion mask (pyradiomics sdist, fetched by the `registry_cache` fixture)."""
    image_path, label_path = registry.extract("pyradiomics", "*/data/lung1_*.nrrd")
    image = load_volume(image_path, modality="CT")
    mask = load_mask_volume(label_path, like=image)
    slices = lesion_slices(mask)
    assert image.data.shape == (512, 512, 48) and slices
    lesion = slice_volume(image, slices[0])[slice_volume(mask, slices[0]) > 0]
    assert lesion.mean() > -500  # a solid nodule, not air
