"""SYNTHETIC data: procedurally generated grayscale "scans" with known lesions, for tests and smoke runs.

Nothing here is real patient data or derived from it. Each scan is a noisy, textured body ellipse
on a dark background (CT-like or MR-like intensities) with 0-3 lesions: round (ellipses) or
rectangular, bright or dark, small or large. Because the generator places the lesions, every
target is exact: the union mask, one tight box per lesion (pixel-edge coordinates, so the box
encloses exactly that lesion's mask), templated captions, reports, VQA pairs, classification
labels, grounding phrases and detection boxes. "left"/"right" and "upper"/"lower" mean the image's
own left/right/top/bottom, not the patient's (radiological) sides.

Samples cycle through every task in `TASKS` (text-only tasks get the scan's report or caption as
text, without the image). Sample i depends only on (seed, i), so any prefix is reproducible, and
its split (80/10/10 train/val/test) comes from a hash of its key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from biomedgpt.data.schema import TASKS, TEXT_ONLY_TASKS, Sample

SOURCE = "biomedgpt-synthetic"
LICENCE = "CC0-1.0"
"""The generator's output is procedural and carries no third-party rights."""
SHAPES = ("round", "rectangular")
CLASS_LABELS = ("no lesion", "one lesion", "multiple lesions")
_NUMBERS = ("no", "one", "two", "three")
# Modality -> (background, body tissue, lesion delta) intensities in 0..255.
_INTENSITIES = {"CT": (10, 110, 80), "MR": (5, 90, 70)}


@dataclass(kw_only=True)
class Lesion:
    """One placed lesion and its exact geometry."""

    shape: str
    size: str
    brightness: str
    box: list[int]
    """[x0, y0, x1, y1], pixel edges: the tight box of this lesion's mask."""
    mask: np.ndarray
    """(H, W) bool, this lesion alone."""

    @property
    def side(self) -> str:
        return "left" if (self.box[0] + self.box[2]) / 2 < self.mask.shape[1] / 2 else "right"

    @property
    def level(self) -> str:
        return "upper" if (self.box[1] + self.box[3]) / 2 < self.mask.shape[0] / 2 else "lower"

    def phrase(self, *, with_size: bool = True) -> str:
        size = f"{self.size} " if with_size else ""
        return f"{size}{self.brightness} {self.shape} lesion in the {self.side} {self.level} region"


@dataclass(kw_only=True)
class Scan:
    """One synthetic image with its lesions."""

    image: np.ndarray
    """(H, W) uint8."""
    modality: str
    lesions: list[Lesion]

    @property
    def mask(self) -> np.ndarray:
        union = np.zeros(self.image.shape, dtype=bool)
        for lesion in self.lesions:
            union |= lesion.mask
        return union


def split_for_key(key: str) -> str:
    """80/10/10 train/val/test from a stable hash of the key."""
    bucket = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:4], "big") % 10
    return "train" if bucket < 8 else ("val" if bucket == 8 else "test")


def make_scan(rng: np.random.Generator, *, image_size: int = 128, min_lesions: int = 0) -> Scan:
    """Draw one scan: body ellipse, smooth texture, noise and `min_lesions`..3 lesions."""
    modality = str(rng.choice(list(_INTENSITIES)))
    background, tissue, delta = _INTENSITIES[modality]
    yy, xx = np.mgrid[0:image_size, 0:image_size].astype(np.float32)
    c = (image_size - 1) / 2
    body = ((xx - c) / (0.46 * image_size)) ** 2 + ((yy - c) / (0.40 * image_size)) ** 2 <= 1.0
    pixels = np.where(body, tissue + 25 * _smooth_noise(rng, image_size), background).astype(np.float32)
    count = int(rng.integers(min_lesions, 4))
    lesions = _place_lesions(rng, body, count)
    for lesion in lesions:
        sign = 1.0 if lesion.brightness == "bright" else -1.0
        pixels[lesion.mask] += sign * delta + rng.normal(0.0, 6.0, int(lesion.mask.sum()))
    pixels += rng.normal(0.0, 4.0, pixels.shape)
    return Scan(image=np.clip(pixels, 0, 255).astype(np.uint8), modality=modality, lesions=lesions)


def _smooth_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """Low-frequency texture in [-1, 1]: a coarse random grid upsampled bicubically."""
    from PIL import Image

    coarse = rng.uniform(0.0, 255.0, (8, 8)).astype(np.uint8)
    fine = np.asarray(
        Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32
    )
    return fine / 127.5 - 1.0


def _place_lesions(rng: np.random.Generator, body: np.ndarray, count: int) -> list[Lesion]:
    size = body.shape[0]
    yy, xx = np.mgrid[0:size, 0:size]
    lesions: list[Lesion] = []
    for _ in range(200):  # rejection sampling: inside the body, apart from each other
        if len(lesions) == count:
            break
        shape, big = str(rng.choice(SHAPES)), bool(rng.random() < 0.5)
        radius = size * (rng.uniform(0.11, 0.16) if big else rng.uniform(0.035, 0.06))
        ry, rx = radius, radius * (rng.uniform(0.9, 1.1) if shape == "round" else rng.uniform(0.8, 1.25))
        cy, cx = rng.uniform(0.15, 0.85, 2) * size
        if shape == "round":
            mask = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
        else:
            mask = (np.abs(xx - cx) <= rx) & (np.abs(yy - cy) <= ry)
        grown = _dilate(mask, 3)
        if not mask.any() or (grown & ~body).any() or any((grown & other.mask).any() for other in lesions):
            continue
        rows, cols = np.nonzero(mask)
        box = [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1]
        brightness = str(rng.choice(["bright", "dark"]))
        lesions.append(
            Lesion(shape=shape, size="large" if big else "small", brightness=brightness, box=box, mask=mask)
        )
    return sorted(lesions, key=lambda lesion: (lesion.box[1], lesion.box[0]))


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    grown = mask.copy()
    for _ in range(steps):
        grown[1:, :] |= grown[:-1, :]
        grown[:-1, :] |= grown[1:, :]
        grown[:, 1:] |= grown[:, :-1]
        grown[:, :-1] |= grown[:, 1:]
    return grown


def caption(scan: Scan) -> str:
    """ "an axial ct-like image with one bright round lesion in the left upper region"."""
    head = f"an axial {scan.modality.lower()}-like image with"
    if not scan.lesions:
        return f"{head} no focal lesion"
    if len(scan.lesions) == 1:
        return f"{head} one {scan.lesions[0].phrase(with_size=False)}"
    parts = ", ".join(f"a {lesion.phrase()}" for lesion in scan.lesions)
    return f"{head} {_NUMBERS[len(scan.lesions)]} lesions: {parts}"


def report(scan: Scan) -> tuple[str, str]:
    """(full report, impression) in a templated findings/impression style."""
    if scan.lesions:
        findings = " ".join(
            f"There is a {lesion.phrase()}, measuring {lesion.box[2] - lesion.box[0]} by "
            f"{lesion.box[3] - lesion.box[1]} pixels."
            for lesion in scan.lesions
        )
        noun = "lesion" if len(scan.lesions) == 1 else "lesions"
        impression = f"{_NUMBERS[len(scan.lesions)].capitalize()} focal {noun}."
    else:
        findings, impression = "The body outline is intact. No focal lesion is seen.", "No focal lesion."
    return f"Findings: {findings} Impression: {impression}", impression


def vqa_pair(scan: Scan, rng: np.random.Generator) -> dict[str, str]:
    """One question about presence, count, side, size, shape or brightness, with its answer."""
    pairs = [
        ("is there a lesion in the image?", _yes(bool(scan.lesions)), "closed"),
        ("how many lesions are there?", _NUMBERS[len(scan.lesions)] if scan.lesions else "none", "open"),
    ]
    if len(scan.lesions) == 1:
        lesion = scan.lesions[0]
        pairs += [
            ("on which side is the lesion?", lesion.side, "open"),
            ("is the lesion small or large?", lesion.size, "open"),
            ("what is the shape of the lesion?", lesion.shape, "open"),
            (
                "is the lesion brighter than the surrounding tissue?",
                _yes(lesion.brightness == "bright"),
                "closed",
            ),
        ]
    question, answer, answer_type = pairs[int(rng.integers(len(pairs)))]
    return {"question": question, "answer": answer, "answer_type": answer_type}


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _grounding_fields(scan: Scan, rng: np.random.Generator) -> dict:
    lesion = scan.lesions[int(rng.integers(len(scan.lesions)))]
    return {"boxes": [{"box": lesion.box, "label": f"the {lesion.phrase()}"}]}


def _summarization_fields(scan: Scan, rng: np.random.Generator) -> dict:
    full, impression = report(scan)
    return {"text": full, "summary": impression}


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """How to make one task's synthetic sample from a scan."""

    fields: Callable[[Scan, np.random.Generator], dict]
    """The sample's `fields`, from the scan (and the sample's rng, drawn after the scan)."""
    lesion: bool = False
    """The scan has at least one lesion, and the sample carries the union mask (its targets are about lesions)."""


RECIPES: dict[str, Recipe] = {
    "caption": Recipe(fields=lambda scan, rng: {"text": caption(scan)}),
    "report": Recipe(fields=lambda scan, rng: {"text": report(scan)[0]}),
    "vqa": Recipe(fields=vqa_pair),
    "classification": Recipe(fields=lambda scan, rng: {"label": CLASS_LABELS[min(len(scan.lesions), 2)]}),
    "segmentation": Recipe(fields=lambda scan, rng: {"target": "lesion"}, lesion=True),
    "grounding": Recipe(fields=_grounding_fields, lesion=True),
    "detection": Recipe(
        fields=lambda scan, rng: {
            "boxes": [{"box": lesion.box, "label": f"{lesion.shape} lesion"} for lesion in scan.lesions]
        },
        lesion=True,
    ),
    "image_infilling": Recipe(fields=lambda scan, rng: {}),  # the image is the target
    "text_infilling": Recipe(fields=lambda scan, rng: {"text": caption(scan)}),
    "summarization": Recipe(fields=_summarization_fields),
}
"""One recipe per task of the schema's `TASKS`, under its name: the only place this module names a task.
Text-only tasks (the schema's `TEXT_ONLY_TASKS`) get their fields from a scan but carry no image."""


def recipe(task: str) -> Recipe:
    """The task's recipe; a task of the schema with none is an error, never a sample without fields."""
    try:
        return RECIPES[task]
    except KeyError:
        raise ValueError(
            f"synthetic data has no recipe for task {task!r}: add one to RECIPES in {__name__}"
        ) from None


def _task_fields(task: str, scan: Scan, rng: np.random.Generator) -> dict:
    return recipe(task).fields(scan, rng)


def synthetic_samples(n: int, *, seed: int = 0, image_size: int = 128) -> Iterator[Sample]:
    """Yield `n` SYNTHETIC samples, cycling through every task; deterministic in (seed, index).

    Each task's `RECIPES` entry makes its fields; the tasks whose recipe asks for a lesion
    (segmentation, grounding, detection) come with at least one and carry the union mask; every image
    sample records its lesions (box, shape, size, brightness, side) in `extra["lesions"]`. Text-only
    tasks (the schema's `TEXT_ONLY_TASKS`) carry no image.
    """
    if n < 0 or seed < 0 or image_size < 32:
        raise ValueError(f"need n >= 0, seed >= 0 and image_size >= 32; got {n}, {seed}, {image_size}")
    for index in range(n):
        rng = np.random.default_rng([seed, index])
        task = TASKS[index % len(TASKS)]
        needs_lesion = recipe(task).lesion
        scan = make_scan(rng, image_size=image_size, min_lesions=1 if needs_lesion else 0)
        while needs_lesion and not scan.lesions:  # placement can fail on a crowded draw
            scan = make_scan(rng, image_size=image_size, min_lesions=1)
        key = f"synth-s{seed}-{index:07d}"
        text_only = task in TEXT_ONLY_TASKS
        yield Sample(
            key=key,
            task=task,
            split=split_for_key(key),
            image=None if text_only else scan.image,
            fields=_task_fields(task, scan, rng),
            mask=scan.mask if needs_lesion else None,
            modality=None if text_only else scan.modality,
            source=SOURCE,
            extra={"synthetic": True, "lesions": [] if text_only else _lesion_records(scan)},
        )


def _lesion_records(scan: Scan) -> list[dict]:
    return [
        {
            "box": lesion.box,
            "shape": lesion.shape,
            "size": lesion.size,
            "brightness": lesion.brightness,
            "side": lesion.side,
            "level": lesion.level,
        }
        for lesion in scan.lesions
    ]
