"""Demo samples from three real biomedical images in the scikit-image 0.25.2 wheel (``skimage/data``).

What each image is comes from scikit-image's own data documentation (``skimage/data/_fetchers.py``):

- ``retina.jpg``: "Fundus photograph of normal left eye" (Wikimedia, CC0), 1411x1411 RGB. The whole
  image (downsampled to ``max_side``) gives a caption, the classification "fundus photograph" and
  "which eye is shown?" -> "left"; 256 px crops of the half-size image that are at least 75 %
  fundus give captions and classifications. There is only one fundus photograph, so all of it is
  train: crops split by position would share pixels with the whole image.
- ``microaneurysms.png``: a 102x102 green-channel detail of a retina with microaneurysms (HRF
  database image 07_dr, CC0 by its owner): caption, classification and "are there
  microaneurysms?" -> "yes". A different eye from ``retina.jpg``, so it is the held-out (test)
  fundus sample.
- ``ihc.png``: colonic glands, immunohistochemistry for FHL2 revealed with DAB, hematoxylin
  counterstain ("no known copyright restrictions"), 512x512 RGB: 128 and 256 px tiles split by
  position (right-most 128 px band test, the one left of it val), each with a caption, the
  classification "immunohistochemistry" and "what stain is used?".
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np

from biomedgpt.data.schema import Sample
from biomedgpt.ingest.demo.common import (
    DemoOptions,
    Provenance,
    SourceReport,
    Tile,
    archive_member,
    make_key,
    pick,
    position_tiles,
    resize_max_side,
)

REGISTRY_NAME = "scikit-image"
RETINA = "skimage/data/retina.jpg"
MICROANEURYSMS = "skimage/data/microaneurysms.png"
IHC = "skimage/data/ihc.png"
RETINA_CROP = 256
MIN_FUNDUS_FRACTION = 0.75
IHC_TILES = (128, 256)
IHC_CAPTIONS = (
    "an immunohistochemistry image of colonic glands stained with dab and a hematoxylin counterstain",
    "immunohistochemistry of colonic glands: dab staining with hematoxylin counterstain",
)
RETINA_CROP_CAPTIONS = (
    "part of a color fundus photograph of the retina",
    "a crop of a color fundus photograph",
)


def _read(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB") if img.mode not in {"L", "RGB"} else img)


def _sample(key: str, task: str, split: str, image: np.ndarray, fields: dict, extra: dict) -> Sample:
    """One sample; ``extra["modality"]`` names the modality ("fundus photography", "immunohistochemistry")."""
    return Sample(
        key=key,
        task=task,
        split=split,
        image=np.ascontiguousarray(image),
        fields=fields,
        modality=extra["modality"],
        source=Provenance.of(REGISTRY_NAME).tag,
        extra=extra,
    )


def retina_samples(options: DemoOptions, report: SourceReport) -> Iterator[Sample]:
    """Whole fundus photograph plus crops, all train (see the module docstring)."""
    data = archive_member(REGISTRY_NAME, RETINA)
    full = _read(data)
    extra = {
        "source": Provenance.of(REGISTRY_NAME).record(RETINA, data),
        "modality": "fundus photography",
        "templated_text": True,
    }
    whole = resize_max_side(full, options.max_side)
    eye = {"question": "which eye is shown?", "answer": "left", "answer_type": "closed"}
    for task, variant, fields in [
        ("caption", "caption", {"text": "a color fundus photograph of a normal left eye"}),
        ("classification", "type", {"label": "fundus photograph"}),
        ("vqa", "eye", eye),
    ]:
        report.count(task, "train")
        yield _sample(make_key("skimage-retina-whole", variant), task, "train", whole, fields, extra)
    half = resize_max_side(full, max(full.shape[:2]) // 2)
    fundus = half.max(axis=2) > 20  # the black surround is below 20 in every channel
    for tile in position_tiles(
        *half.shape[:2], size=RETINA_CROP, train_stride=RETINA_CROP // 2, band=half.shape[1]
    ):
        if tile.crop(fundus).mean() < MIN_FUNDUS_FRACTION:
            report.skip(f"retina crop x{tile.x0} y{tile.y0}", "mostly background", kind="background tile")
            continue
        base = make_key("skimage-retina-crop", f"x{tile.x0}", f"y{tile.y0}")
        crop_extra = {**extra, "tile": [tile.x0, tile.y0, RETINA_CROP], "tile_scale": 0.5}
        for task, variant, fields in [
            ("caption", "caption", {"text": pick(RETINA_CROP_CAPTIONS, base)}),
            ("classification", "type", {"label": "fundus photograph"}),
        ]:
            report.count(task, "train")
            yield _sample(f"{base}-{variant}", task, "train", tile.crop(half), fields, crop_extra)


def microaneurysm_samples(report: SourceReport) -> Iterator[Sample]:
    """The held-out fundus detail (test)."""
    data = archive_member(REGISTRY_NAME, MICROANEURYSMS)
    image = _read(data)
    extra = {
        "source": Provenance.of(REGISTRY_NAME).record(MICROANEURYSMS, data),
        "modality": "fundus photography",
        "channel": "green",
        "templated_text": True,
    }
    found = {"question": "are there microaneurysms?", "answer": "yes", "answer_type": "closed"}
    text = "a grayscale detail of a retinal fundus image with microaneurysms"
    for task, variant, fields in [
        ("caption", "caption", {"text": text}),
        ("classification", "type", {"label": "fundus photograph"}),
        ("vqa", "finding", found),
    ]:
        report.count(task, "test")
        yield _sample(make_key("skimage-microaneurysms", variant), task, "test", image, fields, extra)


def ihc_samples(report: SourceReport) -> Iterator[Sample]:
    """Tiles of the immunohistochemistry image, split by position."""
    data = archive_member(REGISTRY_NAME, IHC)
    image = _read(data)
    extra = {
        "source": Provenance.of(REGISTRY_NAME).record(IHC, data),
        "modality": "immunohistochemistry",
        "templated_text": True,
    }
    stain = {
        "question": "what stain is used?",
        "answer": "dab with hematoxylin counterstain",
        "answer_type": "open",
    }
    tiles: list[Tile] = []
    for size in IHC_TILES:
        tiles += position_tiles(*image.shape[:2], size=size, train_stride=size // 2, band=min(IHC_TILES))
    for tile in tiles:
        base = make_key("skimage-ihc", f"t{tile.size}", f"x{tile.x0}", f"y{tile.y0}")
        for task, variant, fields in [
            ("caption", "caption", {"text": pick(IHC_CAPTIONS, base)}),
            ("classification", "type", {"label": "immunohistochemistry"}),
            ("vqa", "stain", stain),
        ]:
            report.count(task, tile.split)
            tile_extra = {**extra, "tile": [tile.x0, tile.y0, tile.size]}
            yield _sample(f"{base}-{variant}", task, tile.split, tile.crop(image), fields, tile_extra)


def samples(options: DemoOptions, report: SourceReport) -> Iterator[Sample]:
    """Retina (train), microaneurysms (test), then the IHC tiles."""
    yield from retina_samples(options, report)
    yield from microaneurysm_samples(report)
    yield from ihc_samples(report)
