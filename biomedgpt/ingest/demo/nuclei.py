"""Demo samples from the stardist 0.9.2 wheel: nuclei fluorescence with an instance mask, and an H&E tile.

``stardist/data/images/img2d.tif`` is a 512x512 fluorescence microscopy image from the 2018 Data
Science Bowl (uint16 holding values 0..235, stored here as uint8 unchanged) and ``mask2d.tif`` its
real instance mask: 125 labelled nuclei (labels up to 183; not every number is used).
``histo.jpg`` is a 500x300 H&E tile from The Cancer Imaging Archive. Both are read with Pillow.

Both images are cut into square tiles split BY POSITION (`common.position_tiles`): the right-most
128 px band (`BAND`) is test, the band left of it val, the rest train; tiles never cross a band, so
no test window overlaps a train window, and train tiles overlap (stride half a tile). Nuclei tiles
come in several sizes (`NUCLEI_TILES`, 64 to 256 px; a size wider than a band only in train): every
window is a distinct crop of the one real image, so the windows add positions and scales, not new
nuclei (no flips or other synthetic views). H&E tiles are 128 px. Only 128 and 256 px tiles give the
caption, classification and counting question (as before); every size gives the rest.

Nuclei tiles give: binary segmentation of all nucleus pixels (target "nuclei"), detection boxes
(label "nucleus"), a counting question, a report and, where one nucleus is clearly the largest,
grounding of "the largest nucleus". A nucleus COUNTS in a tile when at least half of its pixels lie
inside it (`MIN_VISIBLE`): the count, the detection boxes (each the tight box of the visible part)
and ``extra.nuclei_count`` all use that rule, so they always agree. The answer to "how many nuclei
are there?" is a coarse bin (`count_bin`: "none", "1 to 5", "6 to 10", "11 to 20", "21 to 50",
"more than 50"), a closed set a trie can decode; the exact count is kept in ``extra.nuclei_count``.
The largest nucleus is the counted one with the most pixels in the tile, grounded only when it has
at least `LARGEST_MARGIN` times the pixels of the next one (or is the only one). The report is
templated from the measurements: the exact count, the share of the tile covered by nucleus pixels
(`nuclei_report`). H&E tiles give a caption, the classification "h&e histology" and the question
"what stain is used?".

``img3d.tif``/``mask3d.tif`` are left out (reported): stardist's own docstring calls them synthetic.
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
    mask_box,
    pick,
    position_tiles,
    to_uint8,
)

REGISTRY_NAME = "stardist"
NUCLEI_IMAGE = "stardist/data/images/img2d.tif"
NUCLEI_MASK = "stardist/data/images/mask2d.tif"
HE_IMAGE = "stardist/data/images/histo.jpg"
NUCLEI_3D = ("stardist/data/images/img3d.tif", "stardist/data/images/mask3d.tif")
NUCLEI_TILES = (128, 256, 64, 80, 96, 160, 192)
"""Tile sides in px: 128 and 256 as before, then the smaller and in-between scales."""
ALL_TASK_TILES = frozenset({128, 256})
"""Tile sides that also give the caption, classification and counting question; the other sizes give
only the mask, box and report tasks, so they do not tilt the class balance of the image-level tasks."""
BAND = 128
"""Width of the val and test bands (the right-most two)."""
HE_TILE = 128
MIN_VISIBLE = 0.5
LARGEST_MARGIN = 1.2
LARGEST_PHRASE = "the largest nucleus"
COUNT_QUESTION = "how many nuclei are there?"
COUNT_BINS = ((0, "none"), (5, "1 to 5"), (10, "6 to 10"), (20, "11 to 20"), (50, "21 to 50"))
NUCLEI_CAPTIONS = (
    "a fluorescence microscopy image of cell nuclei",
    "fluorescence microscopy of stained cell nuclei",
)
HE_CAPTIONS = (
    "a hematoxylin and eosin stained histology image",
    "an h&e stained tissue section at high magnification",
)
STAIN_QUESTION = "what stain is used?"


def read_tiff_or_jpeg(data: bytes) -> np.ndarray:
    """Pixels of a TIFF/JPEG/PNG held in memory (Pillow; 16-bit gray stays uint16)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        img.load()
        pixels = np.asarray(img)
    return pixels.astype(np.uint16) if pixels.dtype == np.int32 else pixels


def count_bin(count: int) -> str:
    """The coarse answer for ``count`` nuclei (see `COUNT_BINS`)."""
    for upper, label in COUNT_BINS:
        if count <= upper:
            return label
    return "more than 50"


def visible_instances(labels: np.ndarray, tile: Tile) -> list[tuple[int, list[int]]]:
    """(label, box in tile pixels) of every instance with at least `MIN_VISIBLE` of its pixels in the tile."""
    crop = tile.crop(labels)
    ids, inside = np.unique(crop[crop != 0], return_counts=True)
    totals = dict(zip(*np.unique(labels[labels != 0], return_counts=True)))
    out = []
    for label, n in zip(ids.tolist(), inside.tolist()):
        if n >= MIN_VISIBLE * totals[label]:
            box = mask_box(crop == label)
            assert box is not None  # the label occurs in the crop
            out.append((int(label), box))
    return out


def _nuclei_image(data: bytes) -> np.ndarray:
    raw = read_tiff_or_jpeg(data)
    if raw.max() <= 255:
        return raw.astype(np.uint8)  # 8-bit values in a 16-bit file: kept as they are
    return to_uint8(raw)


def largest_instance(
    labels: np.ndarray, tile: Tile, visible: list[tuple[int, list[int]]]
) -> list[int] | None:
    """Box of the counted nucleus with the most pixels in the tile, if it is clearly the largest.

    ``None`` without nuclei, or when the runner-up has more than ``1 / LARGEST_MARGIN`` of its pixels
    (too close to tell apart by eye). Ties cannot pass the margin, so the choice is unique.
    """
    crop = tile.crop(labels)
    sized = sorted(((int((crop == label).sum()), box) for label, box in visible), key=lambda t: -t[0])
    if not sized or (len(sized) > 1 and sized[0][0] < LARGEST_MARGIN * sized[1][0]):
        return None
    return sized[0][1]


def nuclei_report(count: int, coverage: float) -> str:
    """The tile's report from its measurements: exact count (the counting rule) and nucleus coverage."""
    share = f"{round(100 * coverage)} %"
    if count == 0:
        findings = f"no nucleus lies mostly inside the field; nucleus pixels cover {share} of it."
        impression = "no nuclei."
    else:
        noun, verb = ("nucleus", "is") if count == 1 else ("nuclei", "are")
        findings = f"{count} {noun} {verb} in view; nucleus pixels cover {share} of the field."
        impression = f"{count_bin(count)} nuclei."
    return f"findings: fluorescence microscopy of cell nuclei. {findings} impression: {impression}"


def nuclei_tile_tasks(
    tile: Tile, labels: np.ndarray, key: str
) -> list[tuple[str, str, dict, np.ndarray | None]]:
    """(task, variant, fields, mask) of one nuclei tile; count and boxes follow `visible_instances`.

    Tiles whose size is not in `ALL_TASK_TILES` give segmentation, detection, report and grounding only.
    """
    visible = visible_instances(labels, tile)
    union = tile.crop(labels) != 0
    boxes = [{"box": box, "label": "nucleus"} for _, box in visible]
    count = {"question": COUNT_QUESTION, "answer": count_bin(len(visible)), "answer_type": "closed"}
    out: list[tuple[str, str, dict, np.ndarray | None]] = [
        ("segmentation", "seg", {"target": "nuclei"}, union),
        ("detection", "det", {"boxes": boxes}, None),
        ("vqa", "count", count, None),
        ("caption", "caption", {"text": pick(NUCLEI_CAPTIONS, key)}, None),
        ("classification", "type", {"label": "fluorescence microscopy"}, None),
        ("report", "report", {"text": nuclei_report(len(visible), float(union.mean()))}, None),
    ]
    if tile.size not in ALL_TASK_TILES:
        out = [entry for entry in out if entry[0] in {"segmentation", "detection", "report"}]
    largest = largest_instance(labels, tile, visible)
    if largest is not None:
        out.append(("grounding", "largest", {"boxes": [{"box": largest, "label": LARGEST_PHRASE}]}, None))
    return out


def nuclei_samples(report: SourceReport) -> Iterator[Sample]:
    """Segmentation, detection, report, grounding, counting, caption and classification samples per tile."""
    prov = Provenance.of(REGISTRY_NAME)
    image_bytes = archive_member(REGISTRY_NAME, NUCLEI_IMAGE)
    mask_bytes = archive_member(REGISTRY_NAME, NUCLEI_MASK)
    image, labels = _nuclei_image(image_bytes), read_tiff_or_jpeg(mask_bytes)
    record = prov.record(NUCLEI_IMAGE, image_bytes)
    record["mask_member"] = NUCLEI_MASK
    record["mask_member_sha256"] = prov.record(NUCLEI_MASK, mask_bytes)["member_sha256"]
    tiles = [
        tile
        for size in NUCLEI_TILES
        for tile in position_tiles(*image.shape[:2], size=size, train_stride=size // 2, band=BAND)
    ]
    for tile in tiles:
        base = make_key("stardist-nuclei", f"t{tile.size}", f"x{tile.x0}", f"y{tile.y0}")
        tasks = nuclei_tile_tasks(tile, labels, base)
        extra = {
            "source": record,
            "tile": [tile.x0, tile.y0, tile.size],
            "nuclei_count": next(len(f["boxes"]) for task, _, f, _ in tasks if task == "detection"),
            "nuclei_coverage": round(float((tile.crop(labels) != 0).mean()), 4),
            "count_rule": f"instances with >= {MIN_VISIBLE:.0%} of their pixels in the tile",
            "templated_text": True,
        }
        for task, variant, fields, mask in tasks:
            report.count(task, tile.split)
            yield Sample(
                key=f"{base}-{variant}",
                task=task,
                split=tile.split,
                image=np.ascontiguousarray(tile.crop(image)),
                fields=fields,
                mask=mask,
                modality="fluorescence microscopy",
                source=prov.tag,
                extra=extra,
            )


def he_samples(report: SourceReport) -> Iterator[Sample]:
    """Caption, classification and stain-question samples per H&E tile."""
    prov = Provenance.of(REGISTRY_NAME)
    data = archive_member(REGISTRY_NAME, HE_IMAGE)
    image = read_tiff_or_jpeg(data)
    record = prov.record(HE_IMAGE, data)
    for tile in position_tiles(*image.shape[:2], size=HE_TILE, train_stride=HE_TILE // 2):
        base = make_key("stardist-he", f"x{tile.x0}", f"y{tile.y0}")
        stain = {"question": STAIN_QUESTION, "answer": "hematoxylin and eosin", "answer_type": "open"}
        tasks = [
            ("caption", "caption", {"text": pick(HE_CAPTIONS, base)}),
            ("classification", "type", {"label": "h&e histology"}),
            ("vqa", "stain", stain),
        ]
        for task, variant, fields in tasks:
            report.count(task, tile.split)
            yield Sample(
                key=f"{base}-{variant}",
                task=task,
                split=tile.split,
                image=np.ascontiguousarray(tile.crop(image)),
                fields=fields,
                modality="histology",
                source=prov.tag,
                extra={"source": record, "tile": [tile.x0, tile.y0, HE_TILE], "templated_text": True},
            )


def samples(options: DemoOptions, report: SourceReport) -> Iterator[Sample]:
    """Nuclei tiles, then H&E tiles (tiles are small: ``options.max_side`` never applies)."""
    for member in NUCLEI_3D:
        reason = "synthetic nuclei (stardist's test_image_nuclei_3d docstring), not real data"
        report.skip(member, reason, kind="synthetic")
    yield from nuclei_samples(report)
    yield from he_samples(report)
