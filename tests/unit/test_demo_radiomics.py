"""Demo pyradiomics source: side and size rules, and on the real volumes: lesion slices really hold mask
pixels, boxes enclose the mask, held-out volumes never reach train, the side convention matches anatomy."""

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


def _by_slice(samples):
    groups = defaultdict(dict)
    for sample in samples:
        groups[(sample.extra["volume"], sample.extra["slice"])][sample.key.rsplit("-", 1)[1]] = sample
    return groups


def test_lesion_slices_have_mask_pixels_and_tight_boxes(built):
    samples, _ = built
    groups = _by_slice(samples)
    lesions = 0
    for (volume, k), group in groups.items():
        presence = group["presence"].fields["answer"]
        if presence == "yes":
            lesions += 1
            assert group["seg"].mask.any(), (volume, k)
            assert group["box"].fields["boxes"][0]["box"] == mask_box(group["seg"].mask)
            assert group["size"].fields["answer"] in {"small", "large"}
            assert "showing a lesion" in group["caption"].fields["text"]
        else:
            assert "box" not in group and "size" not in group and "side" not in group
            if "seg" in group:  # slices next to the lesion: an empty mask to segment
                assert not group["seg"].mask.any()
    assert lesions == 27  # 7 + 3 + 3 + 3 + 11 annotated slices in the five volumes


def test_held_out_volumes_never_appear_in_train(built):
    samples, _ = built
    splits = defaultdict(set)
    for sample in samples:
        splits[sample.extra["volume"]].add(sample.split)
    assert splits == {"lung1": {"test"}, "lung2": {"train"}, "brain1": {"train"}, "brain2": {"val"},
                      "breast1": {"train"}}  # fmt: skip


def test_side_answers_follow_the_anatomy(built):
    samples, _ = built
    sides = defaultdict(set)
    for sample in samples:
        if sample.key.endswith("-side"):
            sides[sample.extra["volume"]].add(sample.fields["answer"])
    # lung2's lesion lies beside the heart (patient's left, image right); lung1's in the right lung
    assert sides["lung2"] == {"left"} and sides["lung1"] == {"right"}
    assert "breast1" not in sides  # a crop around the lesion: no midline, no side question
    ct = next(s for s in samples if s.modality == "CT")
    assert ct.image.dtype == np.uint8 and ct.image.shape == (512, 512)
