"""Read one DICOM file into de-identified pixels and a small allow-list of attributes.

Order of work in ``read_dicom`` (nothing identifying leaves this module):
read the file (pydicom) -> refuse ``BurnedInAnnotation == YES`` unless allowed -> de-identify the
whole dataset in place (``deid.deidentify``, PS3.15 Annex E basic profile) -> decode the pixels ->
apply the Modality LUT (PS3.3 C.11.1: rescale slope/intercept, or the Modality LUT Sequence) ->
copy an allow-list of non-identifying attributes (values taken after de-identification).

Pixels: the stored values after the Modality LUT. CT is always float32 Hounsfield units; other
modalities keep their decoded dtype unless a non-identity rescale is present (then float32).
Multi-frame images come back as (frames, H, W) or (frames, H, W, 3). YBR colour is converted to RGB
by the decoder and ``photometric`` says what the returned pixels are. MONOCHROME1 (inverted) and
PALETTE COLOR values are returned as stored; windowing for display lives in ``imageio``. Enhanced
multi-frame files use the rescale of their shared functional groups; per-frame rescale values are not
applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import IO, Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, get_decoder

from biomedgpt.ingest.deid import BurnedInAnnotationError, DeidReport, deidentify, refuse_burned_in

__all__ = [
    "META_ALLOW_LIST",
    "BurnedInAnnotationError",
    "DicomDecoderError",
    "DicomImage",
    "DicomReadError",
    "load_deidentified",
    "read_dicom",
]

# Attributes the basic profile keeps and that carry no identity; values are read after de-identification
# (so the UIDs here are the salted-hash replacements). StudyDescription is not here: the profile removes it.
META_ALLOW_LIST = (
    "Modality", "BodyPartExamined", "Manufacturer", "ManufacturerModelName", "SOPClassUID",
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns",
    "NumberOfFrames", "SamplesPerPixel", "BitsStored", "PixelRepresentation", "PhotometricInterpretation",
    "PixelSpacing", "ImagerPixelSpacing", "SliceThickness", "SpacingBetweenSlices", "ImagePositionPatient",
    "ImageOrientationPatient", "WindowCenter", "WindowWidth", "RescaleSlope", "RescaleIntercept",
    "RescaleType", "ViewPosition", "ImageLaterality", "PatientPosition", "BurnedInAnnotation",
    "PatientIdentityRemoved", "DeidentificationMethod",
)  # fmt: skip


class DicomReadError(ValueError):
    """The file is not readable DICOM image data; the message names the path and the reason."""


class DicomDecoderError(DicomReadError):
    """The pixel data's transfer syntax has no working decoder here; the message names what to install."""


@dataclass
class DicomImage:
    """One de-identified DICOM image."""

    pixels: np.ndarray
    """(H, W), (H, W, 3), (frames, H, W) or (frames, H, W, 3); stored values after the Modality LUT."""
    modality: str
    """DICOM Modality (CT, MR, CR, US, ...); "OT" when absent."""
    body_part: str | None
    """BodyPartExamined, if present and non-empty."""
    photometric: str
    """Photometric interpretation of ``pixels`` (YBR input decodes to "RGB")."""
    spacing: tuple[float, float] | None
    """(row spacing, column spacing) in mm from PixelSpacing (or ImagerPixelSpacing)."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Allow-listed, JSON-ready attributes (see ``META_ALLOW_LIST``)."""
    deid: DeidReport | None = None
    """What de-identification removed or replaced."""


DicomSource = str | PathLike[str] | IO[bytes]
"""A file path, or an open binary file (an upload in memory: ``imageio.NamedBytes``, which prints as its name)."""


def _rewound(source: DicomSource) -> DicomSource:
    """Paths as `Path`s; an open file rewound to its start (it may have been read for the header already)."""
    if hasattr(source, "read"):
        source.seek(0)  # type: ignore[union-attr]
        return source
    return Path(source)  # type: ignore[arg-type]


def load_deidentified(
    path: DicomSource, *, allow_burned_in: bool = False, salt: str = "biomedgpt"
) -> tuple[Dataset, DeidReport]:
    """Read ``path`` and de-identify it in place; the dataset returned is already de-identified."""
    try:
        ds = pydicom.dcmread(_rewound(path))
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as err:
        raise DicomReadError(f"{path}: not readable as DICOM ({type(err).__name__}: {err})") from err
    refuse_burned_in(ds, source=path, allow=allow_burned_in)
    return ds, deidentify(ds, salt=salt)


def _transfer_syntax(ds: Dataset, path: DicomSource) -> pydicom.uid.UID:
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is None:
        raise DicomReadError(f"{path}: file meta has no TransferSyntaxUID")
    return pydicom.uid.UID(ts)


def _decode(ds: Dataset, path: DicomSource) -> tuple[np.ndarray, str]:
    """Decoded pixels (native byte order) and the photometric interpretation they are in."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DicomReadError(f"{path}: no pixel data (Modality {ds.get('Modality', '?')})")
    ts = _transfer_syntax(ds, path)
    try:
        decoder = get_decoder(ts)
    except NotImplementedError as err:
        raise DicomDecoderError(
            f"{path}: no pixel decoder exists for transfer syntax {ts.name} ({ts})"
        ) from err
    hint = "; ".join(decoder.missing_dependencies) or "pylibjpeg with its plugins, or python-gdcm"
    if not decoder.available_plugins and decoder.is_encapsulated:
        raise DicomDecoderError(
            f"{path}: pixel data is compressed as {ts.name} ({ts}) and no decoder is installed; "
            f"install one of: {hint}"
        )
    try:
        arr, info = decoder.as_array(ds)
    except Exception as err:  # pydicom raises RuntimeError/ValueError/AttributeError for bad pixel data
        if decoder.is_encapsulated and isinstance(err, RuntimeError):
            raise DicomDecoderError(
                f"{path}: could not decode {ts.name} ({ts}) pixel data with the installed decoders "
                f"({err}); install one of: {hint}"
            ) from err
        raise DicomReadError(
            f"{path}: pixel data could not be decoded ({type(err).__name__}: {err})"
        ) from err
    arr = arr.astype(arr.dtype.newbyteorder("="), copy=False)
    photometric = str(info.get("photometric_interpretation") or ds.get("PhotometricInterpretation", ""))
    return arr, photometric


def _rescale(ds: Dataset) -> tuple[float, float] | None:
    """(slope, intercept) from the top level or the shared functional groups (enhanced multi-frame)."""
    source: Dataset | None = ds if "RescaleSlope" in ds or "RescaleIntercept" in ds else None
    if source is None and "SharedFunctionalGroupsSequence" in ds:
        shared = ds.SharedFunctionalGroupsSequence[0]
        if "PixelValueTransformationSequence" in shared:
            source = shared.PixelValueTransformationSequence[0]
    if source is None:
        return None
    return float(source.get("RescaleSlope", 1.0) or 1.0), float(source.get("RescaleIntercept", 0.0) or 0.0)


def _modality_lut(arr: np.ndarray, ds: Dataset, modality: str, photometric: str) -> np.ndarray:
    if not photometric.startswith("MONOCHROME"):
        return arr
    if "ModalityLUTSequence" in ds:
        return apply_modality_lut(arr, ds)
    params = _rescale(ds)
    if modality == "CT" or (params is not None and params != (1.0, 0.0)):
        slope, intercept = params or (1.0, 0.0)
        return (arr.astype(np.float32) * np.float32(slope) + np.float32(intercept)).astype(np.float32)
    return arr


def _spacing(ds: Dataset) -> tuple[float, float] | None:
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    if not spacing and "SharedFunctionalGroupsSequence" in ds:
        shared = ds.SharedFunctionalGroupsSequence[0]
        if "PixelMeasuresSequence" in shared:
            spacing = shared.PixelMeasuresSequence[0].get("PixelSpacing")
    if not spacing or len(spacing) != 2:
        return None
    return float(spacing[0]), float(spacing[1])


def _plain(value: Any) -> Any:
    """JSON-ready copy of a pydicom value (MultiValue -> list, DS/IS -> float/int, UID -> str)."""
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return [_plain(v) for v in value]
    if isinstance(value, pydicom.valuerep.IS):
        return int(value)
    if isinstance(value, (pydicom.valuerep.DSfloat, pydicom.valuerep.DSdecimal, float)):
        return float(value)
    if isinstance(value, int):
        return value
    return str(value)


def allowed_meta(ds: Dataset) -> dict[str, Any]:
    """The allow-listed attributes of a de-identified dataset, JSON-ready."""
    meta = {k: _plain(ds.get(k)) for k in META_ALLOW_LIST if k in ds and not ds[k].is_empty}
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    meta["TransferSyntaxUID"] = str(ts) if ts else None
    return meta


def read_dicom(path: DicomSource, *, allow_burned_in: bool = False, salt: str = "biomedgpt") -> DicomImage:
    """Read, de-identify and decode one DICOM image (see the module docstring for the pixel contract).

    ``path`` may be an open binary file (an upload held in memory). Raises ``DicomReadError`` (path and
    reason) for unreadable or corrupt files and files without pixels, ``DicomDecoderError`` for compressed pixel data without a working decoder, and
    ``BurnedInAnnotationError`` for ``BurnedInAnnotation == YES`` unless ``allow_burned_in``.
    """
    ds, report = load_deidentified(path, allow_burned_in=allow_burned_in, salt=salt)
    arr, photometric = _decode(ds, path)
    modality = str(ds.get("Modality", "") or "OT").upper()
    pixels = _modality_lut(arr, ds, modality, photometric)
    body_part = str(ds.get("BodyPartExamined", "") or "").strip() or None
    return DicomImage(
        pixels=pixels,
        modality=modality,
        body_part=body_part,
        photometric=photometric,
        spacing=_spacing(ds),
        meta=allowed_meta(ds),
        deid=report,
    )
