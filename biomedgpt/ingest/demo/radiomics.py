"""Demo samples from the real lesion volumes of the pyradiomics 3.1.0 sdist (``data/*.nrrd``).

Five volumes, each ``NAME_image.nrrd`` with a lesion mask ``NAME_label.nrrd``: lung CT x2, brain MR
x2 and a breast MR crop. The masks are real annotations; pyradiomics does not say what the lesions
are, so the target is always "lesion". Volumes are reoriented to LPS and sliced axially by
``biomedgpt.ingest.volumes``; every slice is shown in the radiological view (rows anterior ->
posterior, columns patient-right -> patient-left). CT is shown in the lung window, MR is scaled
between the 1st and 99th percentile of the whole volume (one scale for all its slices).

Per slice (image and mask downsampled together when over ``max_side``):

- every slice: VQA "is there a lesion in this slice?" (yes/no: any mask pixel), a templated caption
  and the classification "ct"/"mri";
- slices with mask pixels: segmentation (target "lesion"), grounding (the tight box of the mask,
  phrase "the lesion"), VQA on size and, for full field-of-view volumes, on side;
- slices without mask pixels within `EMPTY_MARGIN` slices of the lesion: segmentation with an empty
  mask, so the model also sees "nothing to segment".

Side is the PATIENT's side: the lesion's centroid column against the body's centroid column (body =
CT above -500 HU, MR above 10 % of the volume's 99th percentile). In the radiological view the
patient's right is on the image's left, so a lesion left of the body midline in the image is
"right". The breast volume is a crop around the lesion, so it gets no side question. Size is
"large" when the lesion's area on the slice is at least `LARGE_AREA_MM2` (314 mm², a disc of
20 mm diameter; spacing from the volume header), else "small".

Split BY VOLUME (`CASES`): brain2 is val and lung1 test, so no slice of a held-out volume is in train.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from biomedgpt.data.schema import Sample
from biomedgpt.ingest import registry
from biomedgpt.ingest.demo.common import DemoOptions, Provenance, SourceReport, make_key, mask_box
from biomedgpt.ingest.volumes import (
    Volume,
    load_mask_volume,
    load_volume,
    resample_mask,
    slice_volume,
    window,
)

REGISTRY_NAME = "pyradiomics"
MEMBER_DIR = "pyradiomics-3.1.0/data"
LARGE_AREA_MM2 = 314.0
EMPTY_MARGIN = 2
PRESENCE_QUESTION = "is there a lesion in this slice?"
SIDE_QUESTION = "on which side of the patient is the lesion?"
SIDE_CONVENTION = "patient side, radiological view (image left = patient right)"


@dataclass(frozen=True)
class Case:
    """One image/mask volume pair and how it is shown and split."""

    name: str
    modality: str
    """"CT" or "MR"."""
    region: str
    """Caption noun: "chest", "brain", "breast"."""
    split: str
    side_questions: bool
    """False for volumes cropped around the lesion (no body midline in view)."""

    @property
    def ct_window(self) -> str | None:
        return "lung" if self.modality == "CT" else None


CASES = (
    Case("lung1", "CT", "chest", "test", True),
    Case("lung2", "CT", "chest", "train", True),
    Case("brain1", "MR", "brain", "train", True),
    Case("brain2", "MR", "brain", "val", True),
    Case("breast1", "MR", "breast", "train", False),
)
SIDE_PLACES = {"chest": "lung", "brain": "hemisphere"}


def case_files(case: Case) -> tuple[Path, Path]:
    """(image, label) paths of ``case`` in the registry cache (extracted on first use)."""
    image = registry.extract(REGISTRY_NAME, f"{MEMBER_DIR}/{case.name}_image.nrrd")[0]
    label = registry.extract(REGISTRY_NAME, f"{MEMBER_DIR}/{case.name}_label.nrrd")[0]
    return image, label


def display_window(volume: Volume, case: Case) -> str | tuple[float, float]:
    """The CT preset, or the MR (center, width) spanning the volume's 1st..99th percentile."""
    if case.ct_window is not None:
        return case.ct_window
    lo, hi = (float(v) for v in np.percentile(volume.data, [1.0, 99.0]))
    return ((lo + hi) / 2.0, max(hi - lo, 1.0))


def body_threshold(volume: Volume, case: Case) -> float:
    """Raw value above which a pixel is body: CT -500 HU, MR 10 % of the volume's 99th percentile."""
    if case.modality == "CT":
        return -500.0
    return 0.1 * float(np.percentile(volume.data, 99.0))


def patient_side(lesion: np.ndarray, body: np.ndarray) -> str:
    """ "right" or "left" (patient) for a lesion mask on a radiological-view slice.

    The image's left half holds the patient's right: a lesion whose centroid column lies left of
    the body's centroid column is on the patient's right.
    """
    lesion_col = float(np.nonzero(lesion)[1].mean())
    body_col = float(np.nonzero(body)[1].mean()) if body.any() else (body.shape[1] - 1) / 2.0
    return "right" if lesion_col < body_col else "left"


def lesion_size(area_px: int, spacing_rc: tuple[float, float]) -> tuple[str, float]:
    """("small" | "large", area in mm²) of a lesion of ``area_px`` pixels with (row, col) spacing."""
    area = float(area_px) * spacing_rc[0] * spacing_rc[1]
    return ("large" if area >= LARGE_AREA_MM2 else "small"), round(area, 1)


def _slice_spacing(volume: Volume) -> tuple[float, float]:
    """(row, column) spacing of a displayed slice: LPS slices are transposed, so rows run along P."""
    return (volume.spacing[1], volume.spacing[0]) if volume.axes == "LPS" else volume.spacing[:2]


def _caption(case: Case, side: str | None, lesion: bool) -> str:
    modality = "ct" if case.modality == "CT" else "mri"
    head = f"an axial {modality} slice of the {case.region}"
    if case.modality == "CT":
        head += " in lung window"
    if not lesion:
        return f"{head} with no annotated lesion"
    where = f" in the {side} {SIDE_PLACES[case.region]}" if side and case.region in SIDE_PLACES else ""
    return f"{head} showing a lesion{where}"


def _resize(image: np.ndarray, mask: np.ndarray, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    from biomedgpt.ingest.demo.common import resize_max_side

    small = resize_max_side(image, max_side)
    if small.shape == image.shape:
        return image, mask
    return small, resample_mask(mask.astype(np.uint8), small.shape[:2]).astype(bool)


@dataclass
class SliceView:
    """One displayed slice with what its mask says."""

    index: int
    image: np.ndarray
    """uint8 (H, W), windowed and downsampled to ``max_side``."""
    mask: np.ndarray
    """bool (H, W), the same size as ``image``."""
    lesion: bool
    near_lesion: bool
    """No lesion here, but within `EMPTY_MARGIN` slices of one."""
    side: str | None
    size: str | None
    area_mm2: float


@dataclass(frozen=True)
class Display:
    """Per-volume display settings: the window and the body threshold."""

    window: str | tuple[float, float]
    body_level: float
    max_side: int


def view_slice(case: Case, volume: Volume, mask_volume: Volume, k: int, display: Display) -> SliceView:
    """Slice ``k`` of a case: display image, mask, and the side/size facts of its lesion (if any)."""
    plane = slice_volume(volume, k)
    mask = slice_volume(mask_volume, k) != 0
    lesion = bool(mask.any())
    near = not lesion and bool(
        np.any(mask_volume.data[:, :, max(0, k - EMPTY_MARGIN) : k + EMPTY_MARGIN + 1])
    )
    side = patient_side(mask, plane > display.body_level) if lesion and case.side_questions else None
    size, area = lesion_size(int(mask.sum()), _slice_spacing(volume)) if lesion else (None, 0.0)
    shown = window(plane, modality=case.modality, window=display.window)
    image, mask = _resize(shown, mask, display.max_side)
    return SliceView(k, image, mask, lesion, near, side, size, area)


def slice_tasks(case: Case, view: SliceView) -> list[tuple[str, str, dict]]:
    """(task, variant, fields) for one slice (see the module docstring)."""
    answer = "yes" if view.lesion else "no"
    out = [
        ("vqa", "presence", {"question": PRESENCE_QUESTION, "answer": answer, "answer_type": "closed"}),
        ("caption", "caption", {"text": _caption(case, view.side, view.lesion)}),
        ("classification", "type", {"label": "ct" if case.modality == "CT" else "mri"}),
    ]
    if view.lesion or view.near_lesion:
        out.append(("segmentation", "seg", {"target": "lesion"}))
    if view.lesion:
        if view.side is not None:
            q = {"question": SIDE_QUESTION, "answer": view.side, "answer_type": "open"}
            out.append(("vqa", "side", q))
        q = {"question": "is the lesion small or large?", "answer": view.size, "answer_type": "closed"}
        out.append(("vqa", "size", q))
        out.append(("grounding", "box", {"boxes": [{"box": mask_box(view.mask), "label": "the lesion"}]}))
    return out


def _source_record(case: Case, image_path: Path, label_path: Path) -> dict:
    record = Provenance.of(REGISTRY_NAME).record(
        f"{MEMBER_DIR}/{case.name}_image.nrrd", image_path.read_bytes()
    )
    record["mask_member"] = f"{MEMBER_DIR}/{case.name}_label.nrrd"
    record["mask_member_sha256"] = hashlib.sha256(label_path.read_bytes()).hexdigest()
    return record


def case_samples(case: Case, options: DemoOptions, report: SourceReport) -> Iterator[Sample]:
    """Every sample of one volume, slice by slice."""
    image_path, label_path = case_files(case)
    volume = load_volume(image_path, modality=case.modality)
    mask_volume = load_mask_volume(label_path, like=volume)
    record = _source_record(case, image_path, label_path)
    display = Display(display_window(volume, case), body_threshold(volume, case), options.max_side)
    for k in range(volume.num_slices):
        view = view_slice(case, volume, mask_volume, k, display)
        if view.lesion and not view.mask.any():
            report.skip(f"{case.name} slice {k}", "lesion vanished when downsampled", kind="lesion too small")
            continue
        extra = {"source": record, "volume": case.name, "slice": k, "lesion_area_mm2": view.area_mm2,
                 "lesion_side": view.side, "lesion_size": view.size, "side_convention": SIDE_CONVENTION,
                 "templated_text": True}  # fmt: skip
        for task, variant, fields in slice_tasks(case, view):
            report.count(task, case.split)
            yield Sample(
                key=make_key("pyradiomics", case.name, f"s{k:03d}", variant),
                task=task,
                split=case.split,
                image=view.image,
                fields=fields,
                mask=view.mask if task in ("segmentation", "grounding") else None,
                modality=case.modality,
                source=Provenance.of(REGISTRY_NAME).tag,
                extra=extra,
            )


def samples(options: DemoOptions, report: SourceReport) -> Iterator[Sample]:
    """Samples of every case in `CASES`, volume by volume."""
    for case in CASES:
        yield from case_samples(case, options, report)
