"""Demo pyradiomics source: side, size, region and report rules, and on the real volumes: lesion slices (axial
and the coronal/sagittal reformats) really hold mask pixels, boxes enclose the mask, held-out volumes never
reach train in any plane, segmentation targets are mostly non-empty, reports agree with the mask, and the
side convention matches anatomy."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from biomedgpt.ingest.demo import radiomics
from biomedgpt.ingest.demo.common import DemoOptions, SourceReport, cached_archive, mask_box


def test_patient_side_is_radiological():
    body = np.zeros((20, 40), dtype=bool)
    body[:, 5:35] = True  # midline at column 19.5
    lesion = np.zeros_like(body)
    lesion[8:10, 8:11] = True  # image left
    assert radiomics.patient_side(lesion, body) == "right"
    assert radiomics.patient_side(lesion[:, ::-1], body[:, ::-1]) == "left"
    # the body midline, not the image centre, decides: a body shifted right moves the midline
    shifted = np.zeros_like(body)
    shifted[:, 15:40] = True
    lesion_mid = np.zeros_like(body)
    lesion_mid[5, 22] = True
    assert radiomics.patient_side(lesion_mid, body) == "left"
    assert radiomics.patient_side(lesion_mid, shifted) == "right"


def test_lesion_size_threshold_in_square_millimetres():
    assert radiomics.lesion_size(314, (1.0, 1.0)) == ("large", 314.0)
    assert radiomics.lesion_size(313, (1.0, 1.0))[0] == "small"
    assert radiomics.lesion_size(1000, (0.5, 0.5)) == ("small", 250.0)


def test_cases_hold_out_whole_volumes():
    splits = {case.name: case.split for case in radiomics.CASES}
    assert sorted(splits.values()) == ["test", "train", "train", "train", "val"]
    assert {case.name for case in radiomics.CASES} == {"lung1", "lung2", "brain1", "brain2", "breast1"}


@pytest.fixture(scope="module")
def built(registry_cache):
    assert cached_archive("pyradiomics") is not None, f"pyradiomics 3.1.0 is not in {registry_cache}"
    report = SourceReport(name="pyradiomics")
    return list(radiomics.samples(DemoOptions(), report)), report


def test_square_rows_interpolates_between_slices():
    plane = np.array([[0.0, 10.0], [20.0, 30.0]])
    out = radiomics.square_rows(plane, (2.0, 1.0))  # rows twice as tall as columns are wide
    assert out.shape == (4, 2)
    assert out[0].tolist() == [0.0, 10.0] and out[-1].tolist() == [20.0, 30.0]  # edges clamp
    assert out[1].tolist() == [5.0, 15.0] and out[2].tolist() == [15.0, 25.0]  # linear in between
    assert radiomics.square_rows(plane, (1.0, 1.0)) is plane


def test_regions_extent_and_report_templates():
    mask = np.zeros((10, 12), dtype=bool)
    mask[1:4, 1:5] = True  # 12 px
    mask[6:8, 8:11] = True  # 6 px: half the largest, a second region
    mask[9, 0] = True  # 1 px: a speck, not a region
    assert radiomics.region_sizes(mask) == [12, 6, 1] and radiomics.count_regions(mask) == 2
    # tight box: 11 columns x 2 mm wide, 9 rows x 0.6 mm high
    assert radiomics.lesion_extent(mask, (0.6, 2.0)) == [22, 5]
    lung = next(c for c in radiomics.CASES if c.name == "lung2")
    view = radiomics.SliceView(3, mask.astype(np.uint8), mask, True, False, "left", "small", 40.4, "coronal",
                               [22, 5], 2)  # fmt: skip
    assert radiomics.slice_report(lung, view) == (
        "findings: coronal ct slice of the chest in lung window. a lesion is seen in the left lung, "
        "measuring 22 x 5 mm on this slice, area 40 square mm. the lesion forms two separate regions. "
        "impression: small lesion in the left lung."
    )
    empty = radiomics.SliceView(
        4, mask.astype(np.uint8), mask & False, False, True, None, None, 0.0, "sagittal"
    )
    breast = next(c for c in radiomics.CASES if c.name == "breast1")
    assert radiomics.slice_report(breast, empty) == (
        "findings: sagittal mri slice of the breast. no lesion is seen on this slice. "
        "impression: no lesion on this slice."
    )


def _by_slice(samples):
    groups = defaultdict(dict)
    for sample in samples:
        where = (sample.extra["volume"], sample.extra["plane"], sample.extra["slice"])
        groups[where][sample.key.rsplit("-", 1)[1]] = sample
    return groups


def test_lesion_slices_have_mask_pixels_and_tight_boxes(built):
    samples, _ = built
    groups = _by_slice(samples)
    lesions = defaultdict(int)
    for (volume, plane, k), group in groups.items():
        if plane == "axial":
            assert (group["presence"].fields["answer"] == "yes") == (
                group["report"].extra["lesion_area_mm2"] > 0
            )
        if group["report"].extra["lesion_area_mm2"] > 0:
            lesions[plane] += 1
            assert group["seg"].mask.any(), (volume, plane, k)
            assert group["box"].fields["boxes"][0]["box"] == mask_box(group["seg"].mask)
            assert group["box"].image.shape == group["seg"].mask.shape
            if plane == "axial":
                assert group["size"].fields["answer"] in {"small", "large"}
                assert "showing a lesion" in group["caption"].fields["text"]
        else:
            assert "box" not in group and "size" not in group and "side" not in group
            if "seg" in group:  # slices next to the lesion: an empty mask to segment
                assert not group["seg"].mask.any()
            if plane != "axial":  # reformats: only slices at or near the lesion
                assert "seg" in group
    assert lesions["axial"] == 27  # 7 + 3 + 3 + 3 + 11 annotated slices in the five volumes
    # every coronal / sagittal slice through the annotation: its extent along P and L in the five masks
    assert lesions["coronal"] == 26 + 66 + 63 + 15 + 12 and lesions["sagittal"] == 24 + 87 + 47 + 20 + 9


def test_reformats_have_square_pixels_and_superior_up(built):
    samples, _ = built
    by_key = {s.key: s for s in samples}
    lung1 = by_key["pyradiomics-lung1-cor357-seg"]  # 512 x 48 CT slices of 0.57 x 5 mm
    assert lung1.image.shape == (421, 512) and lung1.extra["pixel_spacing_mm"] == [0.5703, 0.5703]
    rows = np.flatnonzero(lung1.mask.any(axis=1))
    # axial lesion slices 32..34 of 48 (S grows upwards): rows counted from the top, 5 mm -> 8.77 px each
    assert rows[0] == pytest.approx((48 - 35) * 5.0 / 0.5703125, abs=1) and rows[-1] + 1 == pytest.approx(
        (48 - 32) * 5.0 / 0.5703125, abs=1
    )


def test_segmentation_targets_are_mostly_non_empty(built):
    samples, _ = built
    for split in ("train", "val", "test"):
        seg = [s for s in samples if s.task == "segmentation" and s.split == split]
        full = sum(bool(s.mask.any()) for s in seg)
        assert full >= 0.75 * len(seg), (split, full, len(seg))
        assert full < len(seg)  # the empty slices next to the lesion are kept


def test_reports_agree_with_the_mask(built):
    from biomedgpt.eval.metrics.findings import label_report

    samples, _ = built
    reports = [s for s in samples if s.task == "report"]
    masks = {
        (s.extra["volume"], s.extra["plane"], s.extra["slice"]): s.mask for s in samples if s.mask is not None
    }
    texts = set()
    for sample in reports:
        text, extra = sample.fields["text"], sample.extra
        texts.add(text)
        assert text.startswith(f"findings: {extra['plane']} ") and " impression: " in text
        assert extra["templated_text"] is True
        where = (extra["volume"], extra["plane"], extra["slice"])
        if "no lesion is seen" in text:
            assert extra["lesion_area_mm2"] == 0.0
            assert where not in masks or not masks[where].any()  # "no lesion" only on an empty slice
            assert label_report(text)["Lung Lesion"] == 0
            continue
        assert masks[where].any() and extra["lesion_area_mm2"] > 0
        assert label_report(text)["Lung Lesion"] == 1
        width, height = extra["lesion_extent_mm"]
        assert f"measuring {width} x {height} mm" in text
        assert f"area {round(extra['lesion_area_mm2'])} square mm" in text
        assert f"impression: {extra['lesion_size']} lesion" in text
        if extra["lesion_side"] is not None:
            assert f"in the {extra['lesion_side']} " in text
        assert ("separate regions" in text) == (extra["lesion_regions"] > 1)
    assert len(texts) > len(reports) // 2  # sizes and presence vary from slice to slice


def test_held_out_volumes_never_appear_in_train(built):
    samples, _ = built
    splits = defaultdict(set)
    for sample in samples:
        splits[sample.extra["volume"]].add(sample.split)
        assert sample.key.startswith(f"pyradiomics-{sample.extra['volume']}-")
    assert splits == {"lung1": {"test"}, "lung2": {"train"}, "brain1": {"train"}, "brain2": {"val"},
                      "breast1": {"train"}}  # fmt: skip
    test_planes = {s.extra["plane"] for s in samples if s.split == "test"}
    assert test_planes == {
        "axial",
        "coronal",
        "sagittal",
    }  # the test volume's slices, in every plane, stay test


def test_side_answers_follow_the_anatomy(built):
    samples, _ = built
    sides = defaultdict(set)
    planes = defaultdict(set)
    for sample in samples:
        if sample.key.endswith("-side"):
            sides[sample.extra["volume"]].add(sample.fields["answer"])
        if sample.extra["lesion_side"] is not None:
            planes[sample.extra["volume"]].add(sample.extra["lesion_side"])
    # lung2's lesion lies beside the heart (patient's left, image right); lung1's in the right lung
    assert sides["lung2"] == {"left"} and sides["lung1"] == {"right"}
    assert "breast1" not in sides  # a crop around the lesion: no midline, no side question
    assert planes == {
        k: v for k, v in sides.items()
    }  # coronal and sagittal reformats agree with the axial side
    ct = next(s for s in samples if s.modality == "CT")
    assert ct.image.dtype == np.uint8 and ct.image.shape == (512, 512)
