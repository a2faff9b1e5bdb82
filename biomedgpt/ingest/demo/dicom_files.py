"""Demo samples from the real DICOM files of pydicom (installed) and pydicom-data 1.0.0 (wheel).

Every file goes through ``imageio.load_image``, which reads it with ``dicom.read_dicom``: the whole
dataset is de-identified (PS3.15 basic profile) before the pixels are decoded, and only allow-listed,
non-identifying attributes come back. The text of every sample is templated from those attributes
(Modality, BodyPartExamined, ViewPosition): captions such as "a computed radiography image of the
chest, posteroanterior view", and the questions "what modality is this?", "which part of the body is
shown?", "which projection is this radiograph?". Each image also gets a short report
(`report_text`): its technique from the same attributes plus the image plane measured from
ImageOrientationPatient (axial, coronal, sagittal or oblique), and an impression that says no
findings are annotated: the files carry no diagnosis, so none is made up. Nothing else from the
header is used.

Left out, each with its reason in the build report: files without pixel data or not a clinical image
modality (SR, RT plans/doses, secondary-capture test patterns "OT"/"SC"; the four SEG objects, liver
masks drawn on one CT series, because the CT slices they reference are in neither package), files
whose transfer syntax needs a decoder that is not installed (JPEG lossless/extended, JPEG-LS without
pylibjpeg or gdcm), unreadable files, images without content (a side under 32 px or nearly
constant), and ultrasound screen captures unless ``BurnedInAnnotation`` is ``NO``: the pydicom US
test images carry burned-in institution names, dates and IDs in their pixels, which de-identifying
the header cannot remove. Duplicates: the test files hold one image in several encodings
(``RG1_UNCR``, ``RG1_J2KR``, ``RG1_UNCI`` ...). Files are read lossless first
(``LossyImageCompression`` not ``01``), then uncompressed first; a frame is a duplicate when its
32x32 gray thumbnail differs from a kept one of the same modality by less than `DUPLICATE_TOLERANCE`
(mean absolute difference, 0..255), or when another file already gave an image of the same modality,
size and ``ImagePositionPatient``. Multi-frame files give at most `MAX_FRAMES` evenly spaced frames.

Display: CT is windowed in HU (brain window for HEAD, soft tissue otherwise), other grayscale images
are percentile-scaled, MONOCHROME1 is inverted, palette and YBR colour become RGB; images over
``max_side`` are downsampled (aspect kept). Splits are by file: every 7th kept file (in name order)
is val, the one after it test, so all frames of a file share one split.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from biomedgpt.data.schema import Sample
from biomedgpt.ingest import registry
from biomedgpt.ingest.demo.common import (
    DemoOptions,
    Provenance,
    SourceReport,
    make_key,
    resize_max_side,
    to_uint8,
)

REGISTRY_NAMES = ("pydicom", "pydicom-data")
MEMBER_GLOBS = {"pydicom": "pydicom/data/test_files/*.dcm", "pydicom-data": "data_store/data/*.dcm"}
MAX_FRAMES = 4
DUPLICATE_TOLERANCE = 4.0
MIN_SIDE = 32
MIN_STD = 5.0
"""Images with a side under MIN_SIDE px or a gray standard deviation under MIN_STD hold no content."""
BURNED_IN_RISK = frozenset({"US"})
"""Modalities kept only when ``BurnedInAnnotation`` is ``NO`` (screen captures with burned-in text)."""
UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}

# DICOM Modality -> (answer to "what modality is this?", caption noun phrase).
MODALITIES: dict[str, tuple[str, str]] = {
    "CR": ("x-ray", "a computed radiography image"),
    "DX": ("x-ray", "a digital radiograph"),
    "CT": ("ct", "a ct image"),
    "MR": ("mri", "an mri image"),
    "US": ("ultrasound", "an ultrasound image"),
    "NM": ("nuclear medicine", "a nuclear medicine image"),
}
BODY_PARTS = {"WHOLE BODY": "the whole body", "EXTREMITY": "an extremity"}
VIEWS = {"PA": "posteroanterior", "AP": "anteroposterior", "LL": "left lateral", "RL": "right lateral"}
CROSS_SECTIONAL = frozenset({"CT", "MR"})
PLANE_AXES = ("sagittal", "coronal", "axial")
"""Plane whose normal runs along the patient's x (left), y (posterior) or z (superior) axis."""
MIN_PLANE_COSINE = 0.9
"""A slice normal at least this close to one patient axis names that plane; otherwise "oblique"."""
NO_FINDINGS = "findings are not annotated for this image."


@dataclass(frozen=True)
class DicomFile:
    """One candidate file: which registry source it comes from and its path."""

    registry_name: str
    member: str
    path: Path


@dataclass
class KeptImage:
    """One de-identified, display-ready frame that passed the filters."""

    file: DicomFile
    frame: int | None
    pixels: np.ndarray
    modality: str
    meta: dict
    thumb: np.ndarray

    @property
    def position(self) -> tuple | None:
        """(modality, shape, ImagePositionPatient) when the file records a position, else ``None``."""
        ipp = self.meta.get("ImagePositionPatient")
        if not ipp or self.frame is not None:
            return None
        return (self.modality, self.pixels.shape, tuple(round(float(v), 3) for v in ipp))

    def duplicates(self, other: KeptImage) -> bool:
        if self.modality != other.modality:
            return False
        if self.position is not None and self.position == other.position and self.file != other.file:
            return True
        return float(np.mean(np.abs(self.thumb - other.thumb))) < DUPLICATE_TOLERANCE


@contextmanager
def _quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's warnings and error logs about the broken test files (each is reported instead)."""
    import pydicom  # noqa: F401  (importing it sets its logger's level: do that before changing it)

    log = logging.getLogger("pydicom")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def candidate_files() -> list[DicomFile]:
    """Every .dcm of both sources: lossless first, uncompressed first, then by source and member."""
    files = []
    for name in REGISTRY_NAMES:
        root = registry.cache_dir() / name / "extracted"
        for path in registry.extract(name, MEMBER_GLOBS[name]):
            files.append(DicomFile(name, path.relative_to(root).as_posix(), path))
    with _quiet_pydicom():
        return sorted(files, key=lambda f: (*_preference(f.path), f.registry_name, f.member))


def _preference(path: Path) -> tuple[bool, bool]:
    """(was lossy-compressed, is compressed): False sorts first."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # unreadable files are reported later, when they are loaded
        return True, True
    ts = str(getattr(ds.file_meta, "TransferSyntaxUID", ""))
    return str(ds.get("LossyImageCompression", "")) == "01", ts not in UNCOMPRESSED


@dataclass(frozen=True)
class Header:
    """The few non-identifying attributes read before the pixels (never stored)."""

    modality: str | None
    num_frames: int
    ct_window: str | None
    burned_in: str
    referenced_series: tuple[str, ...] = ()
    """SEG only: the series whose images the segmentation is drawn on."""


def _referenced_series(ds: object) -> tuple[str, ...]:
    """SeriesInstanceUIDs a SEG object references (ReferencedSeriesSequence)."""
    refs = getattr(ds, "ReferencedSeriesSequence", None) or []
    return tuple(sorted({str(item.get("SeriesInstanceUID", "")) for item in refs} - {""}))


def image_series(files: list[DicomFile]) -> frozenset[str]:
    """SeriesInstanceUIDs of every candidate file that is not itself a SEG (read header-only)."""
    import pydicom

    found = set()
    for file in files:
        try:
            ds = pydicom.dcmread(
                file.path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID", "Modality"]
            )
        except Exception:  # unreadable files are reported when they are loaded
            continue
        if str(ds.get("Modality", "")).upper() != "SEG" and ds.get("SeriesInstanceUID"):
            found.add(str(ds.SeriesInstanceUID))
    return frozenset(found)


def _header(path: Path) -> Header:
    """Modality, frames, CT window and the burned-in flag; raises on unreadable files.

    The pixels are read (and the dataset de-identified) by ``load_image``.
    """
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    modality = str(ds.get("Modality", "") or "").upper() or None
    if modality == "SEG":
        return Header(modality, 0, None, "", referenced_series=_referenced_series(ds))
    head = str(ds.get("BodyPartExamined", "") or "").strip().upper() == "HEAD"
    return Header(
        modality=modality,
        num_frames=int(ds.get("NumberOfFrames") or 1),
        ct_window="brain" if modality == "CT" and head else None,
        burned_in=str(ds.get("BurnedInAnnotation", "") or "").strip().upper(),
    )


def frames_to_read(num_frames: int) -> list[int | None]:
    """``[None]`` for one frame, else at most `MAX_FRAMES` evenly spaced frame indices."""
    if num_frames <= 1:
        return [None]
    count = min(MAX_FRAMES, num_frames)
    return sorted({round(i * (num_frames - 1) / max(count - 1, 1)) for i in range(count)})


def _thumb(pixels: np.ndarray) -> np.ndarray:
    from PIL import Image

    gray = Image.fromarray(pixels).convert("L").resize((32, 32), Image.Resampling.BOX)
    return np.asarray(gray, dtype=np.float32)


def _load_frames(
    file: DicomFile, report: SourceReport, max_side: int, series: Callable[[], frozenset[str]]
) -> Iterator[KeptImage]:
    """The kept frames of one file; ``series()`` gives the image series present (for SEG objects)."""
    from biomedgpt.ingest.dicom import BurnedInAnnotationError, DicomDecoderError
    from biomedgpt.ingest.imageio import load_image

    item = f"{file.registry_name}:{file.member}"
    try:
        header = _header(file.path)
    except Exception as err:  # pydicom raises many types on broken files; all mean "unreadable"
        report.skip(item, f"unreadable header ({type(err).__name__})", kind="unreadable")
        return
    modality = header.modality
    if modality == "SEG":
        found = bool(set(header.referenced_series) & series())
        why = (
            "its referenced images are here, but pairing SEG frames with them is not implemented"
            if found
            else "the images it references are in neither package: no image to pair its mask with"
        )
        report.skip(item, f"segmentation object (SEG): {why}", kind="not an image")
        return
    if modality not in MODALITIES:
        report.skip(item, f"modality {modality} is not a clinical image type", kind="not an image")
        return
    if modality in BURNED_IN_RISK and header.burned_in != "NO":
        reason = f"{modality} screen capture may hold burned-in text (BurnedInAnnotation not NO)"
        report.skip(item, reason, kind="burned-in text risk")
        return
    for frame in frames_to_read(header.num_frames):
        try:
            loaded = load_image(file.path, slice_index=frame, window=header.ct_window)
        except DicomDecoderError as err:
            reason = str(err).split(": ", 1)[-1]
            report.skip(item, f"needs a decoder that is not installed: {reason}", kind="needs a decoder")
            return
        except BurnedInAnnotationError:
            report.skip(item, "flagged BurnedInAnnotation=YES", kind="burned-in annotation")
            return
        except (ValueError, OSError) as err:
            report.skip(item, f"unreadable ({type(err).__name__}: {str(err)[-120:]})", kind="unreadable")
            return
        pixels = to_uint8(loaded.pixels)
        if min(pixels.shape[:2]) < MIN_SIDE or float(pixels.std()) < MIN_STD:
            report.skip(
                item, f"no image content (shape {pixels.shape}, std {pixels.std():.1f})", kind="no content"
            )
            return
        pixels = resize_max_side(pixels, max_side)
        yield KeptImage(file, frame, pixels, modality, loaded.meta["dicom"], _thumb(pixels))


def kept_images(report: SourceReport, *, max_side: int) -> Iterator[KeptImage]:
    """Every de-identified, non-duplicate frame, in a deterministic order."""
    kept: list[KeptImage] = []
    files = candidate_files()

    @functools.cache
    def series() -> frozenset[str]:
        return image_series(files)

    for file in files:
        with _quiet_pydicom():
            frames = list(_load_frames(file, report, max_side, series))
        for image in frames:
            twin = next((k for k in kept if image.duplicates(k)), None)
            where = f"{file.registry_name}:{file.member}" + (f"#frame{image.frame}" if image.frame else "")
            if twin is not None:
                report.skip(where, f"duplicate of {twin.file.member}", kind="duplicate")
                continue
            kept.append(image)
            yield image


def body_part(meta: dict) -> str | None:
    """Caption phrase for BodyPartExamined ("the chest", "an extremity"), or ``None``."""
    part = str(meta.get("BodyPartExamined") or "").strip().upper()
    if not part:
        return None
    return BODY_PARTS.get(part, f"the {part.lower()}")


def caption(modality: str, meta: dict) -> str:
    """ "a computed radiography image of the chest, posteroanterior view"."""
    text = MODALITIES[modality][1]
    part = body_part(meta)
    if part:
        text += f" of {part}"
    view = VIEWS.get(str(meta.get("ViewPosition") or "").strip().upper())
    if view and modality in {"CR", "DX"}:
        text += f", {view} view"
    return text


def task_fields(modality: str, meta: dict) -> list[tuple[str, str, dict]]:
    """(task, variant, fields) for one image: caption, classification and the VQA pairs its tags allow."""
    answer = MODALITIES[modality][0]
    out = [
        ("caption", "caption", {"text": caption(modality, meta)}),
        ("classification", "type", {"label": answer}),
        ("vqa", "modality", {"question": "what modality is this?", "answer": answer, "answer_type": "open"}),
    ]
    part = body_part(meta)
    if part:
        bare = part.removeprefix("the ").removeprefix("an ")
        q = {"question": "which part of the body is shown?", "answer": bare, "answer_type": "open"}
        out.append(("vqa", "bodypart", q))
    view = VIEWS.get(str(meta.get("ViewPosition") or "").strip().upper())
    if view and modality in {"CR", "DX"}:
        q = {"question": "which projection is this radiograph?", "answer": view, "answer_type": "open"}
        out.append(("vqa", "view", q))
    out.append(("report", "report", {"text": report_text(modality, meta)}))
    return out


def image_plane(meta: dict) -> str | None:
    """ "axial", "coronal", "sagittal" or "oblique" from ImageOrientationPatient, or ``None`` without it."""
    iop = meta.get("ImageOrientationPatient")
    if not iop or len(iop) != 6:
        return None
    normal = np.cross(np.asarray(iop[:3], dtype=float), np.asarray(iop[3:], dtype=float))
    length = float(np.linalg.norm(normal))
    if length == 0.0:
        return None
    axis = int(np.argmax(np.abs(normal)))
    return PLANE_AXES[axis] if abs(normal[axis]) / length >= MIN_PLANE_COSINE else "oblique"


def report_text(modality: str, meta: dict) -> str:
    """A findings/impression report of the technique only: modality, plane or view, body part."""
    technique = caption(modality, meta)
    plane = image_plane(meta) if modality in CROSS_SECTIONAL else None
    if plane:
        noun = MODALITIES[modality][1].split(" ", 1)[1]  # "ct image", "mri image"
        technique = technique.replace(
            MODALITIES[modality][1], f"{'an' if plane[0] in 'aeiou' else 'a'} {plane} {noun}", 1
        )
    part = body_part(meta)
    impression = f"{MODALITIES[modality][0]} study" + (f" of {part}" if part else "")
    return f"findings: {technique}. impression: {impression}; {NO_FINDINGS}"


def file_split(index: int) -> str:
    """Split of the ``index``-th kept file: 5 of every 7 train, then one val, one test."""
    return {5: "val", 6: "test"}.get(index % 7, "train")


def samples(options: DemoOptions, report: SourceReport) -> Iterator[Sample]:
    """Caption, classification and VQA samples from every kept DICOM frame."""
    provenance = {name: Provenance.of(name) for name in REGISTRY_NAMES}
    file_index: dict[str, int] = {}
    for image in kept_images(report, max_side=options.max_side):
        prov = provenance[image.file.registry_name]
        split = file_split(file_index.setdefault(image.file.member, len(file_index)))
        stem = Path(image.file.member).stem
        frame = "f0" if image.frame is None else f"f{image.frame}"
        extra = {
            "source": prov.record(image.file.member, image.file.path.read_bytes()),
            "frame": image.frame,
            "dicom": {k: image.meta.get(k) for k in ("Modality", "BodyPartExamined", "ViewPosition")},
            "image_plane": image_plane(image.meta),
            "deidentified": image.meta.get("PatientIdentityRemoved") == "YES",
            "templated_text": True,
        }
        for task, variant, fields in task_fields(image.modality, image.meta):
            report.count(task, split)
            yield Sample(
                key=make_key("dicom", image.file.registry_name, stem, frame, variant),
                task=task,
                split=split,
                image=image.pixels,
                fields=fields,
                modality=image.modality,
                source=prov.tag,
                extra=extra,
            )
