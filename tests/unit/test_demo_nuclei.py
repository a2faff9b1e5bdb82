"""Demo stardist source: count bins, the counting and largest-nucleus rules on a toy mask, and on the real
instance mask: the count, the detection boxes, the report and the answer all agree with the instances in the
tile, boxes lie inside the image, and no val/test window overlaps a train window."""

from __future__ import annotations

import numpy as np
import pytest

from biomedgpt.ingest.demo import nuclei
from biomedgpt.ingest.demo.common import DemoOptions, SourceReport, Tile, archive_member, cached_archive


def test_count_bins():
    answers = {n: nuclei.count_bin(n) for n in (0, 1, 5, 6, 10, 11, 20, 21, 50, 51, 400)}
    assert answers == {0: "none", 1: "1 to 5", 5: "1 to 5", 6: "6 to 10", 10: "6 to 10", 11: "11 to 20",
                       20: "11 to 20", 21: "21 to 50", 50: "21 to 50", 51: "more than 50",
                       400: "more than 50"}  # fmt: skip


def test_a_nucleus_counts_where_most_of_it_lies():
    labels = np.zeros((8, 16), dtype=np.uint16)
    labels[2:4, 2:5] = 1  # wholly in the left tile
    labels[5:7, 6:10] = 2  # half in each tile: counts in both (>= 50 %)
    labels[0:2, 7:12] = 3  # 1 column of 5 in the left tile: counts only on the right
    left, right = Tile(0, 0, 8, "train"), Tile(8, 0, 8, "test")
    assert nuclei.visible_instances(labels, left) == [(1, [2, 2, 5, 4]), (2, [6, 5, 8, 7])]
    assert nuclei.visible_instances(labels, right) == [(2, [0, 5, 2, 7]), (3, [0, 0, 4, 2])]


def test_largest_nucleus_only_when_clearly_largest():
    labels = np.zeros((8, 16), dtype=np.uint16)
    labels[0:3, 0:4] = 1  # 12 px
    labels[5:7, 3:8] = 2
    labels[7, 3] = 2  # 11 px: 12 < 1.2 * 11, too close to call
    tile = Tile(0, 0, 8, "train")
    visible = nuclei.visible_instances(labels, tile)
    assert nuclei.largest_instance(labels, tile, visible) is None
    labels[5:7, 6:8] = 0  # now 7 px: 12 >= 1.2 * 7
    visible = nuclei.visible_instances(labels, tile)
    assert nuclei.largest_instance(labels, tile, visible) == [0, 0, 4, 3]
    assert nuclei.largest_instance(labels, Tile(8, 0, 8, "test"), []) is None


def test_report_template():
    assert nuclei.nuclei_report(14, 0.234) == (
        "findings: fluorescence microscopy of cell nuclei. 14 nuclei are in view; nucleus pixels cover 23 % "
        "of the field. impression: 11 to 20 nuclei."
    )
    assert "1 nucleus is in view" in nuclei.nuclei_report(1, 0.05)
    assert nuclei.nuclei_report(0, 0.05).endswith("impression: no nuclei.")


@pytest.fixture(scope="module")
def built(registry_cache):
    assert cached_archive("stardist") is not None, f"stardist 0.9.2 is not in {registry_cache}"
    report = SourceReport(name="stardist")
    labels = nuclei.read_tiff_or_jpeg(archive_member("stardist", nuclei.NUCLEI_MASK))
    return list(nuclei.samples(DemoOptions(), report)), labels


def _independent_count(labels: np.ndarray, x0: int, y0: int, size: int) -> int:
    crop = labels[y0 : y0 + size, x0 : x0 + size]
    count = 0
    for label in np.unique(crop[crop != 0]):
        if (crop == label).sum() * 2 >= (labels == label).sum():
            count += 1
    return count


def test_counts_equal_the_instances_in_the_tile(built):
    samples, labels = built
    assert len(np.unique(labels[labels != 0])) == 125  # the real mask: 125 nuclei (labels up to 183)
    tiles = {}
    for sample in samples:
        if sample.key.startswith("stardist-nuclei"):
            tiles.setdefault(tuple(sample.extra["tile"]), {})[sample.task] = sample
    # 128 px: 21 train (stride 64), 4 val, 4 test; 256 px: 3 train; 64/80/96/160/192 px: 339 more
    assert len(tiles) == 371
    for (x0, y0, size), group in tiles.items():
        count = _independent_count(labels, x0, y0, size)
        assert group["detection"].extra["nuclei_count"] == count
        assert len(group["detection"].fields["boxes"]) == count
        if size in nuclei.ALL_TASK_TILES:
            assert group["vqa"].fields["answer"] == nuclei.count_bin(count)
        else:
            assert set(group) <= {"segmentation", "detection", "report", "grounding"}
        crop = labels[y0 : y0 + size, x0 : x0 + size]
        assert np.array_equal(group["segmentation"].mask, crop != 0)
        assert group["segmentation"].image.shape == (size, size)
        for entry in group["detection"].fields["boxes"]:
            bx0, by0, bx1, by1 = entry["box"]
            assert 0 <= bx0 < bx1 <= size and 0 <= by0 < by1 <= size  # inside the image
            inside = crop[by0:by1, bx0:bx1]
            ids = np.unique(inside[inside != 0])
            # the box is the tight box of one instance's visible pixels
            assert any(nuclei.mask_box(crop == i) == [bx0, by0, bx1, by1] for i in ids.tolist()), (
                x0,
                y0,
                size,
                entry,
            )
        text = group["report"].fields["text"]
        assert (
            text.startswith("findings: fluorescence microscopy of cell nuclei.") and " impression: " in text
        )
        assert (
            (f"{count} nuclei are in view" in text)
            or (count == 1 and "1 nucleus is in view" in text)
            or (count == 0 and "impression: no nuclei." in text)
        )
        assert f"cover {round(100 * float((crop != 0).mean()))} %" in text
        if "grounding" in group:
            (entry,) = group["grounding"].fields["boxes"]
            assert entry["label"] == "the largest nucleus"
            assert entry in [
                {**b, "label": "the largest nucleus"} for b in group["detection"].fields["boxes"]
            ]


def test_segmentation_and_detection_have_hundreds_of_training_tiles(built):
    samples, _ = built
    train = [s for s in samples if s.split == "train"]
    assert sum(s.task == "segmentation" for s in train) >= 250
    assert sum(s.task == "detection" for s in train) >= 250
    assert sum(s.task == "grounding" for s in train) >= 100


def test_tiles_are_split_by_position(built):
    samples, _ = built
    for sample in samples:
        x0, _, size = sample.extra["tile"]
        width = 512 if sample.key.startswith("stardist-nuclei") else 500
        if sample.split == "test":
            assert x0 >= width - 128
        elif sample.split == "val":
            assert width - 256 <= x0 and x0 + size <= width - 128
        else:
            assert x0 + size <= width - 256  # no train window reaches into val or test
    he = [s for s in samples if s.key.startswith("stardist-he")]
    assert {s.split for s in he} == {"train", "val", "test"} and he[0].image.shape == (128, 128, 3)


def test_synthetic_3d_nuclei_are_left_out(built, registry_cache):
    report = SourceReport(name="stardist")
    next(nuclei.samples(DemoOptions(), report))
    assert report.skip_reasons == {"synthetic": 2}
    assert all("synthetic" in line for line in report.skipped)
