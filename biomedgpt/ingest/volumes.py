"""3-D volumes (NIfTI, NRRD, DICOM series) to 2-D slices, CT/MR windowing and mask helpers.

Axis convention (one for every reader, so an image and its mask always line up):

- NIfTI (nibabel) and NRRD (pynrrd) volumes are reoriented on load, by axis permutations and flips
  only (no resampling), to LPS+: axis 0 runs to the patient's Left, axis 1 to Posterior, axis 2 to
  Superior (``Volume.axes == "LPS"``). This is the DICOM patient coordinate system. A file without
  orientation keeps its index order (``axes == "XYZ"``).
- A DICOM series (a folder of .dcm files, each read and de-identified by ``dicom.read_dicom``) is
  stacked as (H, W, Z): rows and columns as stored, slices sorted by ``ImagePositionPatient``
  projected on the slice normal, else by ``InstanceNumber`` (``axes == "HWZ"``).
- Slices are always taken along the last axis. ``slice_volume`` returns a display-oriented (H, W)
  image: for LPS volumes that is ``data[:, :, k].T``, so rows run anterior -> posterior and columns
  patient-right -> patient-left (the radiological view of an axial slice); for HWZ it is
  ``data[:, :, k]``.

Windowing (``window``): CT in Hounsfield units with the usual presets (center, width); other
modalities are scaled between their 1st and 99th percentiles. Output is uint8; constant input gives
zeros, never NaN. Masks are resized with nearest neighbour so label values survive.
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "soft_tissue": (40.0, 400.0),
    "bone": (300.0, 1500.0),
    "brain": (40.0, 80.0),
}
"""CT windows as (center, width) in HU."""
DEFAULT_CT_WINDOW = "soft_tissue"
DEFAULT_MAX_VOXELS = 512 * 512 * 1024
"""Refuse volumes larger than this before reading their voxels (decompression-bomb guard)."""
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd")


@dataclass
class Volume:
    """A 3-D image or mask with its voxel spacing (see the module docstring for the axes)."""

    data: np.ndarray
    """3-D array, (L, P, S) for ``axes == "LPS"``, (H, W, Z) for ``"HWZ"``; slices along the last axis."""
    spacing: tuple[float, float, float]
    """Voxel size in mm along each axis of ``data``."""
    modality: str | None = None
    """CT, MR, ... when known (DICOM) or given by the caller; ``None`` otherwise."""
    axes: str = "LPS"
    """"LPS", "HWZ" or "XYZ" (file order, orientation unknown)."""

    def __post_init__(self) -> None:
        if self.data.ndim != 3:
            raise ValueError(f"Volume data must be 3-D, got shape {self.data.shape}")
        if len(self.spacing) != 3:
            raise ValueError(f"Volume spacing must have 3 values, got {self.spacing}")
        if self.axes not in {"LPS", "HWZ", "XYZ"}:
            raise ValueError(f"Volume axes must be LPS, HWZ or XYZ, got {self.axes!r}")

    @property
    def num_slices(self) -> int:
        """Number of 2-D slices (size of the last axis)."""
        return int(self.data.shape[-1])


def volume_suffix(path: str | PathLike[str]) -> str | None:
    """ ".nii", ".nii.gz" or ".nrrd" if ``path`` names a volume file, else ``None``."""
    name = Path(path).name.lower()
    return next((s for s in sorted(VOLUME_SUFFIXES, key=len, reverse=True) if name.endswith(s)), None)


def _shape_3d(shape: tuple[int, ...], path: str | PathLike[str]) -> tuple[int, int, int]:
    """Drop trailing singleton axes beyond the third and add one to 2-D; anything else is an error."""
    dims = list(shape)
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()
    if len(dims) == 2:
        dims.append(1)
    if len(dims) != 3:
        raise ValueError(f"{path}: expected a 3-D volume, got shape {tuple(shape)}")
    return dims[0], dims[1], dims[2]


def _as_3d(data: np.ndarray, path: str | PathLike[str]) -> np.ndarray:
    return data.reshape(_shape_3d(data.shape, path))


def _lps_transform(ras_affine: np.ndarray) -> np.ndarray:
    """nibabel orientation transform from the affine's voxel axes to LPS+ (permutation and flips)."""
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    return ornt_transform(io_orientation(ras_affine), axcodes2ornt(("L", "P", "S")))


def _reorient(data: np.ndarray, ras_affine: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float]]:
    from nibabel.orientations import apply_orientation

    transform = _lps_transform(ras_affine)
    zooms = np.linalg.norm(ras_affine[:3, :3], axis=0)
    spacing = [0.0, 0.0, 0.0]
    for old_axis, (new_axis, _flip) in enumerate(transform):
        spacing[int(new_axis)] = float(zooms[old_axis])
    return np.ascontiguousarray(apply_orientation(data, transform)), (spacing[0], spacing[1], spacing[2])


def _check_voxels(shape: tuple[int, ...], path: str | PathLike[str], max_voxels: int) -> None:
    voxels = int(np.prod(shape, dtype=np.int64))
    if voxels > max_voxels:
        raise ValueError(
            f"{path}: volume of shape {tuple(shape)} has {voxels} voxels, over the limit {max_voxels}"
        )


def _nifti_header(path: str | PathLike[str]) -> tuple[object, tuple[int, ...], np.ndarray]:
    import nibabel as nib

    img = nib.load(str(path))
    return img, tuple(int(s) for s in img.shape), np.asarray(img.affine, dtype=np.float64)


def _nrrd_ras_affine(header: dict) -> np.ndarray | None:
    """RAS affine from an NRRD header's space directions, or ``None`` without orientation."""
    directions = header.get("space directions")
    space = str(header.get("space", "")).lower()
    if directions is None or space not in {"left-posterior-superior", "right-anterior-superior"}:
        return None
    dirs = np.asarray([d for d in directions if d is not None and not np.any(np.isnan(d))], dtype=np.float64)
    if dirs.shape != (3, 3):
        return None
    affine = np.eye(4)
    affine[:3, :3] = dirs.T
    if space == "left-posterior-superior":
        affine[:2] *= -1.0  # LPS world -> RAS world, as nibabel expects
    return affine


def _nrrd_spacing(header: dict, ndim: int) -> tuple[float, ...]:
    if header.get("spacings") is not None:
        return tuple(float(s) for s in header["spacings"])[:3]
    return (1.0,) * min(ndim, 3)


def _load_file(path: Path, max_voxels: int) -> tuple[np.ndarray, tuple[float, float, float], str]:
    suffix = volume_suffix(path)
    if suffix in {".nii", ".nii.gz"}:
        img, shape, affine = _nifti_header(path)
        _check_voxels(shape, path, max_voxels)
        data = _as_3d(np.asanyarray(img.dataobj), path)  # type: ignore[attr-defined]
        return (*_reorient(data, affine), "LPS")
    if suffix == ".nrrd":
        import nrrd

        header = nrrd.read_header(str(path))
        _check_voxels(tuple(header["sizes"]), path, max_voxels)
        data, header = nrrd.read(str(path), index_order="F")
        data = _as_3d(data, path)
        affine = _nrrd_ras_affine(header)
        if affine is not None:
            return (*_reorient(data, affine), "LPS")
        sp = (*_nrrd_spacing(header, data.ndim), 1.0, 1.0)
        return data, (sp[0], sp[1], sp[2]), "XYZ"
    raise ValueError(f"{path}: not a volume file; supported: {', '.join(VOLUME_SUFFIXES)} or a DICOM folder")


def _slice_key(meta: dict, index: int) -> tuple[float, float]:
    position, orientation = meta.get("ImagePositionPatient"), meta.get("ImageOrientationPatient")
    if position and orientation and len(orientation) == 6:
        normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
        return float(np.dot(normal, np.asarray(position, float))), float(index)
    return float(meta.get("InstanceNumber", index)), float(index)


def _load_dicom_series(folder: Path, modality: str | None, max_voxels: int) -> Volume:
    from biomedgpt.ingest.dicom import read_dicom

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".dcm")
    if not files:
        raise ValueError(f"{folder}: no .dcm files in this folder")
    images = [read_dicom(p) for p in files]
    series = {im.meta.get("SeriesInstanceUID") for im in images}
    if len(series) > 1:
        raise ValueError(f"{folder}: holds {len(series)} DICOM series; give a folder with exactly one")
    if len(images) == 1 and images[0].pixels.ndim == 3 and images[0].photometric.startswith("MONO"):
        data = np.moveaxis(images[0].pixels, 0, -1)  # one multi-frame file: (frames, H, W) -> (H, W, frames)
        keys = [0.0]
    else:
        shapes = {im.pixels.shape for im in images}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(
                f"{folder}: slices must be 2-D grayscale of one size, got shapes {sorted(shapes)}"
            )
        order = sorted(range(len(images)), key=lambda i: _slice_key(images[i].meta, i))
        keys = [_slice_key(images[i].meta, i)[0] for i in order]
        data = np.stack([images[i].pixels for i in order], axis=-1)
    _check_voxels(data.shape, folder, max_voxels)
    first = images[0]
    thickness = float(first.meta.get("SliceThickness") or 1.0)
    step = float(np.median(np.abs(np.diff(keys)))) if len(keys) > 1 else thickness
    row, col = first.spacing or (1.0, 1.0)
    return Volume(
        data=data, spacing=(row, col, step or thickness), modality=modality or first.modality, axes="HWZ"
    )


def load_volume(
    path: str | PathLike[str], *, modality: str | None = None, max_voxels: int = DEFAULT_MAX_VOXELS
) -> Volume:
    """Load a .nii/.nii.gz/.nrrd file or a folder of one DICOM series (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        return _load_dicom_series(path, modality, max_voxels)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such volume file or folder")
    data, spacing, axes = _load_file(path, max_voxels)
    return Volume(data=data, spacing=spacing, modality=modality, axes=axes)


def volume_shape(path: str | PathLike[str]) -> tuple[int, int, int]:
    """Shape ``load_volume`` would give a .nii/.nii.gz/.nrrd file, from its header only."""
    suffix = volume_suffix(path)
    if suffix == ".nrrd":
        import nrrd

        header = nrrd.read_header(str(path))
        shape = tuple(int(s) for s in header["sizes"])
        affine = _nrrd_ras_affine(header)
    elif suffix in {".nii", ".nii.gz"}:
        _img, shape, affine = _nifti_header(path)
    else:
        raise ValueError(f"{path}: not a volume file; supported: {', '.join(VOLUME_SUFFIXES)}")
    dims = _shape_3d(shape, path)
    if affine is None:
        return dims[0], dims[1], dims[2]
    new = [0, 0, 0]
    for old_axis, (new_axis, _flip) in enumerate(_lps_transform(affine)):
        new[int(new_axis)] = dims[old_axis]
    return new[0], new[1], new[2]


def slice_volume(vol: Volume, index: int) -> np.ndarray:
    """The 2-D (H, W) slice ``index`` along the last axis, display-oriented (see the module docstring)."""
    if not 0 <= index < vol.num_slices:
        raise IndexError(
            f"slice index {index} out of range: volume has {vol.num_slices} slices (0..{vol.num_slices - 1})"
        )
    plane = vol.data[:, :, index]
    return plane if vol.axes == "HWZ" else plane.T


def _scale(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if not hi > lo:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = np.clip((values - lo) / (hi - lo), 0.0, 1.0) * 255.0
    return np.rint(np.nan_to_num(scaled, nan=0.0)).astype(np.uint8)


def window(
    image: np.ndarray, *, modality: str | None, window: str | tuple[float, float] | None = None
) -> np.ndarray:
    """Map intensities to uint8 for display and training.

    ``window`` is a preset name (CT only: lung, soft_tissue, bone, brain) or (center, width) for
    any modality; CT without one uses ``soft_tissue``. Otherwise the 1st..99th percentile range
    (min..max when those coincide) maps to 0..255. Constant or all-NaN images give zeros.
    """
    values = np.asarray(image, dtype=np.float32)
    is_ct = (modality or "").upper() == "CT"
    if isinstance(window, str):
        if window not in WINDOW_PRESETS:
            raise ValueError(f"unknown window {window!r}; presets: {sorted(WINDOW_PRESETS)}")
        if not is_ct:
            raise ValueError(f"window preset {window!r} is in HU and only applies to CT, not {modality!r}")
    if window is None and is_ct:
        window = DEFAULT_CT_WINDOW
    if window is not None:
        center, width = WINDOW_PRESETS[window] if isinstance(window, str) else window
        return _scale(values, center - width / 2.0, center + width / 2.0)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(values.shape, dtype=np.uint8)
    lo, hi = (float(v) for v in np.percentile(finite, [1.0, 99.0]))
    if not hi > lo:
        lo, hi = float(finite.min()), float(finite.max())
    return _scale(values, lo, hi)


def _as_labels(data: np.ndarray, path: str | PathLike[str]) -> np.ndarray:
    if data.dtype.kind == "f" and not (np.all(np.isfinite(data)) and np.array_equal(data, np.rint(data))):
        raise ValueError(f"{path}: mask has non-integer values; expected labels")
    if data.dtype == np.bool_ or (data.min(initial=0) >= 0 and data.max(initial=0) <= 255):
        return data.astype(np.uint8)
    return data.astype(np.int32)


def load_mask_volume(path: str | PathLike[str], *, like: Volume) -> Volume:
    """Load a label volume and check that its geometry matches ``like`` (shape, spacing, axes)."""
    mask = load_volume(path, modality=None)
    if mask.data.shape != like.data.shape:
        raise ValueError(
            f"{path}: mask shape {mask.data.shape} does not match image shape {like.data.shape} "
            f"(both after reorientation to {like.axes})"
        )
    if not np.allclose(mask.spacing, like.spacing, rtol=1e-3, atol=1e-4):
        raise ValueError(f"{path}: mask spacing {mask.spacing} does not match image spacing {like.spacing}")
    if mask.axes != like.axes:
        raise ValueError(f"{path}: mask axes {mask.axes} do not match image axes {like.axes}")
    return Volume(data=_as_labels(mask.data, path), spacing=mask.spacing, modality=None, axes=mask.axes)


def resample_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a 2-D label mask to ``size`` = (height, width); labels are preserved."""
    if mask.ndim != 2:
        raise ValueError(f"resample_mask expects a 2-D mask, got shape {mask.shape}")
    height, width = size
    if height <= 0 or width <= 0:
        raise ValueError(f"resample_mask size must be positive (height, width), got {size}")
    rows = np.minimum((np.arange(height) + 0.5) * mask.shape[0] / height, mask.shape[0] - 1).astype(np.intp)
    cols = np.minimum((np.arange(width) + 0.5) * mask.shape[1] / width, mask.shape[1] - 1).astype(np.intp)
    return mask[rows[:, None], cols[None, :]]


def lesion_slices(mask_vol: Volume | np.ndarray) -> list[int]:
    """Indices along the last axis whose slice has any foreground (non-zero) voxel."""
    data = mask_vol.data if isinstance(mask_vol, Volume) else np.asarray(mask_vol)
    if data.ndim != 3:
        raise ValueError(f"lesion_slices expects a 3-D mask, got shape {data.shape}")
    return [int(i) for i in np.flatnonzero(np.any(data != 0, axis=(0, 1)))]
