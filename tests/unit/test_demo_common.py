"""Shared helpers of the demo corpus: position tiling never mixes splits, boxes, keys, splits, resizing."""

from __future__ import annotations

import numpy as np
import pytest

from biomedgpt.ingest.demo.common import (
    DemoOptions,
    Provenance,
    SourceReport,
    hash_split,
    make_key,
    mask_box,
    position_tiles,
    resize_max_side,
    split_bands,
)


def _pixels_of(tiles, split, shape):
    used = np.zeros(shape, dtype=bool)
    for tile in tiles:
        if tile.split == split:
            used[tile.y0 : tile.y0 + tile.size, tile.x0 : tile.x0 + tile.size] = True
    return used


@pytest.mark.parametrize("along", ["columns", "rows"])
@pytest.mark.parametrize(("height", "width", "size"), [(512, 512, 128), (300, 500, 128), (1483, 1110, 256)])
def test_position_tiles_never_share_pixels_between_splits(height, width, size, along):
    tiles = position_tiles(height, width, size=size, train_stride=size // 2, along=along)
    shape = (height, width)
    masks = {split: _pixels_of(tiles, split, shape) for split in ("train", "val", "test")}
    assert masks["train"].any() and masks["test"].any()
    assert not (masks["train"] & masks["test"]).any()
    assert not (masks["train"] & masks["val"]).any()
    assert not (masks["val"] & masks["test"]).any()
    for tile in tiles:
        assert tile.x0 >= 0 and tile.x0 + size <= width and tile.y0 >= 0 and tile.y0 + size <= height
    # the held-out band is the right-most columns (or bottom rows)
    test_cols = np.flatnonzero(masks["test"].any(axis=0 if along == "columns" else 1))
    assert test_cols.max() == (width if along == "columns" else height) - 1


def test_tiles_of_two_sizes_share_bands():
    tiles = [t for size in (128, 256) for t in position_tiles(512, 512, size=size, train_stride=64, band=128)]
    big = [t for t in tiles if t.size == 256]
    assert big and all(t.split == "train" and t.x0 + 256 <= 256 for t in big)
    masks = {s: _pixels_of(tiles, s, (512, 512)) for s in ("train", "val", "test")}
    assert not (masks["train"] & (masks["val"] | masks["test"])).any()


def test_split_bands_degrade_for_narrow_images():
    assert split_bands(512, 128) == {"train": (0, 256), "val": (256, 384), "test": (384, 512)}
    assert split_bands(300, 128) == {"train": (0, 172), "test": (172, 300)}
    assert split_bands(100, 128) == {"train": (0, 100)}
    with pytest.raises(ValueError, match="along"):
        position_tiles(10, 10, size=4, train_stride=2, along="diagonal")


def test_mask_box_is_tight_in_pixel_edges():
    mask = np.zeros((10, 12), dtype=bool)
    mask[3:6, 4:9] = True
    assert mask_box(mask) == [4, 3, 9, 6]
    assert mask_box(np.zeros((4, 4), dtype=bool)) is None


def test_make_key_and_hash_split():
    assert make_key("dicom", "SC_rgb_dcmtk_+eb+cr", 3) == "dicom-SC_rgb_dcmtk__eb_cr-3"
    with pytest.raises(ValueError, match="128"):
        make_key("x" * 130)
    splits = [hash_split(f"item-{i}") for i in range(2000)]
    assert splits == [hash_split(f"item-{i}") for i in range(2000)]
    assert 0.05 < splits.count("test") / 2000 < 0.15 and 0.05 < splits.count("val") / 2000 < 0.15


def test_resize_keeps_aspect_and_small_images():
    image = np.zeros((1955, 1841), dtype=np.uint8)
    assert resize_max_side(image, 512).shape == (512, 482)
    small = np.zeros((100, 60, 3), dtype=np.uint8)
    assert resize_max_side(small, 512) is small


def test_options_and_provenance():
    with pytest.raises(ValueError, match="limit"):
        DemoOptions(limit=0)
    prov = Provenance.of("pyradiomics")
    assert prov.tag == "pyradiomics==3.1.0" and prov.licence.startswith("BSD")
    record = prov.record("pyradiomics-3.1.0/data/x.nrrd", b"abc")
    assert record["sha256"] == prov.sha256 and len(record["member_sha256"]) == 64
    report = SourceReport(name="x")
    report.count("vqa", "train")
    report.skip("a.dcm", "needs a decoder", kind="needs a decoder")
    assert report.to_dict()["counts"] == {"vqa": {"train": 1}}
    assert report.to_dict()["skip_reasons"] == {"needs a decoder": 1}
