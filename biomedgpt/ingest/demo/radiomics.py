"""Demo samples from the real lesion volumes of the pyradiomics 3.1.0 sdist (``data/*.nrrd``).

Five volumes, each ``NAME_image.nrrd`` with a lesion mask ``NAME_label.nrrd``: lung CT x2, brain MR
x2 and a breast MR crop. The masks are real annotations; pyradiomics does not say what the lesions
are, so the target is always "lesion". Volumes are reoriented to LPS by ``biomedgpt.ingest.volumes``
and cut in three planes (`PLANES`), each shown in the radiological view:

- axial (every slice at or near the lesion, one in `AXIAL_STRIDE` elsewhere): rows anterior -> posterior,
  columns patient-right -> patient-left;
- coronal and sagittal reformats (only slices that hold lesion or lie within `EMPTY_MARGIN` slices of
  one): rows superior -> inferior; columns patient-right -> patient-left (coronal) or anterior ->
  posterior (sagittal). Their rows are resampled linearly between the axial slices (the mask by
  nearest neighbour) so that pixels are square (`square_rows`): a CT with 5 mm slices and 0.57 mm
  pixels gives a 421 x 512 coronal image. Each reformatted slice that holds lesion is another real
  mask of the same annotation.

CT is shown in the lung window, MR scaled between the 1st and 99th percentile of the whole volume
(one scale for all its slices and planes).

Per axial slice kept (image and mask downsampled together when over ``max_side``):

- every slice: VQA "is there a lesion in this slice?" (yes/no: any mask pixel), a templated caption,
  the classification "ct"/"mri" and a report;
- slices with mask pixels: segmentation (target "lesion"), grounding (the tight box of the mask,
  phrase "the lesion"), VQA on size and, for full field-of-view volumes, on side;
- slices without mask pixels within `EMPTY_MARGIN` slices of the lesion: segmentation with an empty
  mask, so the model also sees "nothing to segment".

Per coronal or sagittal slice with mask pixels: segmentation, grounding and a report; without mask
pixels but within `EMPTY_MARGIN` slices of one: segmentation with an empty mask and a report.

Side is the PATIENT's side. Axial and coronal: the lesion's centroid column against the body's
centroid column on the same slice (body = CT above -500 HU, MR above 10 % of the volume's 99th
percentile); the patient's right is on the image's left, so a lesion left of the body midline in
the image is "right". Sagittal: the slice's left-right position against the body's centroid over
the axial slices that hold lesion. The breast volume is a crop around the lesion, so it gets no
side. Size is "large" when the lesion's area on the slice is at least `LARGE_AREA_MM2` (314 mm², a
disc of 20 mm diameter; spacing from the volume header), else "small".

Reports (`slice_report`) are templated from measurements of the mask on the slice only: plane,
modality, body region, presence, side, the extent of the mask's tight box in mm (width x height on
the image, native pixels times spacing), its area in square mm, small/large, and the number of
separate regions (8-connected parts of at least `REGION_FRACTION` of the largest part).

Split BY VOLUME (`CASES`): brain2 is val and lung1 test, so no slice of a held-out volume, in any
plane, is in train.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
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
AXIAL_STRIDE = 4
"""Axial slices further than `EMPTY_MARGIN` from the lesion: one in this many (slice index a multiple of it).
Neighbouring slices are near-duplicates; kept all, "a slice with no lesion" of the test volume was 45 of the 64
test captions and three quarters of the classification labels, so the most frequent answer scored like a model."""
REGION_FRACTION = 0.25
"""A part of the mask counts as a separate region when its area is at least this share of the largest."""
PLANES = ("axial", "coronal", "sagittal")
PRESENCE_QUESTION = "is there a lesion in this slice?"
SIDE_QUESTION = "on which side of the patient is the lesion?"
SIDE_CONVENTION = "patient side, radiological view (image left = patient right)"
NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}


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


def num_plane_slices(volume: Volume, plane: str) -> int:
    """Number of slices of ``volume`` in ``plane`` (axial along S, coronal along P, sagittal along L)."""
    return int(volume.data.shape[{"axial": 2, "coronal": 1, "sagittal": 0}[plane]])


def plane_slice(volume: Volume, plane: str, k: int) -> np.ndarray:
    """Slice ``k`` of an LPS volume in ``plane``, display-oriented, native pixels (see the module docstring)."""
    if plane == "axial":
        return slice_volume(volume, k)
    if volume.axes != "LPS":
        raise ValueError(f"{plane} slices need an LPS volume, got axes {volume.axes}")
    if plane == "coronal":
        return volume.data[:, k, ::-1].T  # (S from superior down, L from patient right)
    if plane == "sagittal":
        return volume.data[k, :, ::-1].T  # (S from superior down, P from anterior)
    raise ValueError(f"unknown plane {plane!r}; expected one of {', '.join(PLANES)}")


def plane_spacing(volume: Volume, plane: str) -> tuple[float, float]:
    """(row, column) spacing in mm of a native `plane_slice`."""
    if volume.axes != "LPS":
        return (volume.spacing[0], volume.spacing[1])
    left, posterior, superior = volume.spacing
    return {"axial": (posterior, left), "coronal": (superior, left), "sagittal": (superior, posterior)}[plane]


def square_rows(plane: np.ndarray, spacing_rc: tuple[float, float]) -> np.ndarray:
    """Rows resampled (linear, cell centres aligned) so that a row is as tall as a column is wide.

    Unchanged when the spacings already agree; `resample_mask` maps a mask onto the same rows.
    """
    rows = plane.shape[0]
    height = max(1, round(rows * spacing_rc[0] / spacing_rc[1]))
    if height == rows:
        return plane
    pos = np.clip((np.arange(height) + 0.5) * rows / height - 0.5, 0.0, rows - 1.0)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, rows - 1)
    weight = (pos - lo)[:, None]
    values = plane.astype(np.float64)
    return values[lo] * (1.0 - weight) + values[hi] * weight


def lesion_extent(mask: np.ndarray, spacing_rc: tuple[float, float]) -> list[int]:
    """[width, height] in whole mm (at least 1) of the mask's tight box on a native slice."""
    box = mask_box(mask)
    if box is None:
        raise ValueError("lesion_extent of an empty mask")
    x0, y0, x1, y1 = box
    return [max(1, round((x1 - x0) * spacing_rc[1])), max(1, round((y1 - y0) * spacing_rc[0]))]


def region_sizes(mask: np.ndarray) -> list[int]:
    """Pixel counts of the 8-connected parts of a 2-D mask, largest first."""
    todo = mask.astype(bool).copy()
    height, width = todo.shape
    sizes = []
    for y, x in zip(*np.nonzero(todo)):
        if not todo[y, x]:
            continue
        todo[y, x] = False
        stack, size = [(int(y), int(x))], 0
        while stack:
            r, c = stack.pop()
            size += 1
            for rr in (r - 1, r, r + 1):
                for cc in (c - 1, c, c + 1):
                    if 0 <= rr < height and 0 <= cc < width and todo[rr, cc]:
                        todo[rr, cc] = False
                        stack.append((rr, cc))
        sizes.append(size)
    return sorted(sizes, reverse=True)


def count_regions(mask: np.ndarray) -> int:
    """Separate regions of a lesion mask: parts of at least `REGION_FRACTION` of the largest part."""
    sizes = region_sizes(mask)
    return sum(1 for n in sizes if n >= REGION_FRACTION * sizes[0]) if sizes else 0


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
    """uint8 (H, W), windowed, rows made square (reformats) and downsampled to ``max_side``."""
    mask: np.ndarray
    """bool (H, W), the same size as ``image``."""
    lesion: bool
    near_lesion: bool
    """No lesion here, but within `EMPTY_MARGIN` slices of one (in the same plane)."""
    side: str | None
    size: str | None
    area_mm2: float
    plane: str = "axial"
    extent_mm: list[int] | None = None
    """[width, height] of the lesion's tight box in mm, measured on the native slice."""
    regions: int = 0
    """Separate regions of the lesion on this slice (`count_regions`)."""
    spacing_mm: tuple[float, float] = (1.0, 1.0)
    """(row, column) size in mm of a pixel of ``image``."""


@dataclass(frozen=True)
class Display:
    """Per-volume display settings: the window, the body threshold and the lesion's slices per plane."""

    window: str | tuple[float, float]
    body_level: float
    max_side: int
    lesion_slices: dict[str, frozenset[int]] = field(default_factory=dict)
    """Per plane, the slice indices that hold mask pixels."""
    body_center_l: float | None = None
    """Mean left-right index of the body over the axial slices that hold lesion (sagittal side)."""

    def near(self, plane: str, k: int) -> bool:
        return any(abs(k - j) <= EMPTY_MARGIN for j in self.lesion_slices.get(plane, ()))


def make_display(case: Case, volume: Volume, mask_volume: Volume, max_side: int) -> Display:
    """The display settings of a case, with the lesion's slices in every plane."""
    level = body_threshold(volume, case)
    present = mask_volume.data != 0
    axes = {"axial": (0, 1), "coronal": (0, 2), "sagittal": (1, 2)}
    lesion_slices = {
        plane: frozenset(int(i) for i in np.flatnonzero(present.any(axis=axes[plane]))) for plane in PLANES
    }
    center = None
    axial = sorted(lesion_slices["axial"])
    if axial and volume.axes == "LPS":
        body = volume.data[:, :, axial[0] : axial[-1] + 1] > level
        center = float(np.nonzero(body)[0].mean()) if body.any() else (volume.data.shape[0] - 1) / 2.0
    return Display(display_window(volume, case), level, max_side, lesion_slices, center)


def _side(case: Case, plane: str, k: int, raw: np.ndarray, mask: np.ndarray, display: Display) -> str | None:
    if not case.side_questions:
        return None
    if plane == "sagittal":
        assert display.body_center_l is not None
        return "right" if k < display.body_center_l else "left"  # L grows towards the patient's left
    return patient_side(mask, raw > display.body_level)


def view_plane(
    case: Case, volume: Volume, mask_volume: Volume, plane: str, k: int, display: Display
) -> SliceView:
    """Slice ``k`` in ``plane``: display image, mask, and the measurements of its lesion (if any)."""
    raw = plane_slice(volume, plane, k)
    mask = plane_slice(mask_volume, plane, k) != 0
    spacing = plane_spacing(volume, plane)
    lesion = bool(mask.any())
    near = not lesion and display.near(plane, k)
    side = _side(case, plane, k, raw, mask, display) if lesion else None
    size, area = lesion_size(int(mask.sum()), spacing) if lesion else (None, 0.0)
    extent = lesion_extent(mask, spacing) if lesion else None
    regions = count_regions(mask) if lesion else 0
    if plane != "axial":
        square = square_rows(raw, spacing)
        if square.shape != raw.shape:
            mask = resample_mask(mask.astype(np.uint8), square.shape).astype(bool)
        raw, shown_spacing = square, (spacing[1], spacing[1])
    else:
        shown_spacing = spacing
    shown = window(raw, modality=case.modality, window=display.window)
    image, shown_mask = _resize(shown, mask, display.max_side)
    scale = shown.shape[1] / image.shape[1]
    pixel = (round(shown_spacing[0] * scale, 4), round(shown_spacing[1] * scale, 4))
    return SliceView(k, image, shown_mask, lesion, near, side, size, area, plane, extent, regions, pixel)


def _place(case: Case, side: str | None) -> str:
    """ " in the right lung", " in the left hemisphere", " in the breast" (no side)."""
    if side and case.region in SIDE_PLACES:
        return f" in the {side} {SIDE_PLACES[case.region]}"
    return f" in the {case.region}" if case.region not in SIDE_PLACES else ""


def slice_report(case: Case, view: SliceView) -> str:
    """A findings/impression report templated from the measurements of one slice (module docstring)."""
    modality = "ct" if case.modality == "CT" else "mri"
    technique = f"{view.plane} {modality} slice of the {case.region}"
    if case.modality == "CT":
        technique += " in lung window"
    if not view.lesion:
        return f"findings: {technique}. no lesion is seen on this slice. impression: no lesion on this slice."
    assert view.extent_mm is not None and view.size is not None
    where = _place(case, view.side)
    width, height = view.extent_mm
    findings = (
        f"a lesion is seen{where}, measuring {width} x {height} mm on this slice, "
        f"area {round(view.area_mm2)} square mm."
    )
    if view.regions > 1:
        findings += f" the lesion forms {NUMBER_WORDS.get(view.regions, str(view.regions))} separate regions."
    return f"findings: {technique}. {findings} impression: {view.size} lesion{where}."


def slice_tasks(case: Case, view: SliceView) -> list[tuple[str, str, dict]]:
    """(task, variant, fields) for one slice (see the module docstring)."""
    out = []
    if view.plane == "axial":
        answer = "yes" if view.lesion else "no"
        out += [
            ("vqa", "presence", {"question": PRESENCE_QUESTION, "answer": answer, "answer_type": "closed"}),
            ("caption", "caption", {"text": _caption(case, view.side, view.lesion)}),
            ("classification", "type", {"label": "ct" if case.modality == "CT" else "mri"}),
        ]
    if view.lesion or view.near_lesion:
        out.append(("segmentation", "seg", {"target": "lesion"}))
    if view.lesion:
        if view.plane == "axial":
            if view.side is not None:
                q = {"question": SIDE_QUESTION, "answer": view.side, "answer_type": "open"}
                out.append(("vqa", "side", q))
            q = {"question": "is the lesion small or large?", "answer": view.size, "answer_type": "closed"}
            out.append(("vqa", "size", q))
        out.append(("grounding", "box", {"boxes": [{"box": mask_box(view.mask), "label": "the lesion"}]}))
    if view.plane == "axial" or view.lesion or view.near_lesion:
        out.append(("report", "report", {"text": slice_report(case, view)}))
    return out


def _source_record(case: Case, image_path: Path, label_path: Path) -> dict:
    record = Provenance.of(REGISTRY_NAME).record(
        f"{MEMBER_DIR}/{case.name}_image.nrrd", image_path.read_bytes()
    )
    record["mask_member"] = f"{MEMBER_DIR}/{case.name}_label.nrrd"
    record["mask_member_sha256"] = hashlib.sha256(label_path.read_bytes()).hexdigest()
    return record


def plane_indices(volume: Volume, plane: str, display: Display) -> list[int]:
    """The slices of ``plane`` that give samples: axial slices at or near the lesion and one in `AXIAL_STRIDE`
    elsewhere; reformats only at or near the lesion."""
    count = num_plane_slices(volume, plane)
    if plane == "axial":
        keep = display.lesion_slices[plane]
        return [k for k in range(count) if k in keep or display.near(plane, k) or k % AXIAL_STRIDE == 0]
    if volume.axes != "LPS":
        return []
    return [k for k in range(count) if k in display.lesion_slices[plane] or display.near(plane, k)]


SLICE_PREFIX = {"axial": "s", "coronal": "cor", "sagittal": "sag"}


def case_samples(case: Case, options: DemoOptions, report: SourceReport) -> Iterator[Sample]:
    """Every sample of one volume: axial slice by slice, then the coronal and sagittal reformats."""
    image_path, label_path = case_files(case)
    volume = load_volume(image_path, modality=case.modality)
    mask_volume = load_mask_volume(label_path, like=volume)
    record = _source_record(case, image_path, label_path)
    display = make_display(case, volume, mask_volume, options.max_side)
    tag = Provenance.of(REGISTRY_NAME).tag
    for plane in PLANES:
        for k in plane_indices(volume, plane, display):
            view = view_plane(case, volume, mask_volume, plane, k, display)
            if view.lesion and not view.mask.any():
                where = f"{case.name} slice {k}" if plane == "axial" else f"{case.name} {plane} slice {k}"
                report.skip(where, "lesion vanished when downsampled", kind="lesion too small")
                continue
            extra = {"source": record, "volume": case.name, "plane": plane, "slice": k,
                     "lesion_area_mm2": view.area_mm2, "lesion_side": view.side, "lesion_size": view.size,
                     "lesion_extent_mm": view.extent_mm, "lesion_regions": view.regions,
                     "pixel_spacing_mm": list(view.spacing_mm), "side_convention": SIDE_CONVENTION,
                     "templated_text": True}  # fmt: skip
            for task, variant, fields in slice_tasks(case, view):
                report.count(task, case.split)
                yield Sample(
                    key=make_key("pyradiomics", case.name, f"{SLICE_PREFIX[plane]}{k:03d}", variant),
                    task=task,
                    split=case.split,
                    image=view.image,
                    fields=fields,
                    mask=view.mask if task in ("segmentation", "grounding") else None,
                    modality=case.modality,
                    source=tag,
                    extra=extra,
                )


def samples(options: DemoOptions, report: SourceReport) -> Iterator[Sample]:
    """Samples of every case in `CASES`, volume by volume."""
    for case in CASES:
        yield from case_samples(case, options, report)
