"""Location tokens: OFA quantization of boxes, points and polygons; token ids; text; input validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from biomedgpt.tokenization.layout import DEFAULT_LAYOUT, OFA_LAYOUT
from biomedgpt.tokenization.locations import (
    bin_to_coord,
    bins_to_box,
    bins_to_point,
    bins_to_polygon,
    bins_to_text,
    bins_to_token_ids,
    box_to_bins,
    box_to_text,
    coord_to_bin,
    point_to_bins,
    point_to_text,
    polygon_to_bins,
    polygon_to_text,
    text_to_bins,
    text_to_box,
    token_ids_to_bins,
)

sizes = st.floats(min_value=1.0, max_value=5000.0, allow_nan=False)
fractions = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
num_bins_st = st.sampled_from([2, 10, 100, 1000, 1024])


def _half_bin(size: float, num_bins: int) -> float:
    # round-to-nearest quantization errs by at most half a bin (floor would err by a whole bin)
    return size / (num_bins - 1) / 2 * (1 + 1e-9) + 1e-9


def test_ofa_formula_examples() -> None:
    assert box_to_bins([0, 0, 640, 480], width=640, height=480) == [0, 0, 999, 999]
    # 320/640*999 = 499.5 -> 500 (round half to even, as torch.round in OFA); 120/480*999 = 249.75 -> 250
    assert box_to_bins([320, 120, 640, 240], width=640, height=480) == [500, 250, 999, 500]
    assert coord_to_bin(1.0, 2.0, num_bins=4) == 2  # 1.5 -> 2 (even)
    assert coord_to_bin(0.5, 3.0, num_bins=4) == 0  # 0.5 -> 0 (even)
    assert bin_to_coord(999, 640) == 640.0
    assert bins_to_box([0, 0, 999, 999], width=640, height=480) == [0.0, 0.0, 640.0, 480.0]


@settings(max_examples=200, deadline=None)
@given(
    w=sizes, h=sizes, xs=st.tuples(fractions, fractions), ys=st.tuples(fractions, fractions), nb=num_bins_st
)
def test_box_round_trip_within_half_a_bin(w, h, xs, ys, nb) -> None:
    x0, x1 = sorted(x * w for x in xs)
    y0, y1 = sorted(y * h for y in ys)
    bins = box_to_bins([x0, y0, x1, y1], width=w, height=h, num_bins=nb)
    assert all(0 <= b < nb for b in bins)
    assert bins[0] <= bins[2] and bins[1] <= bins[3]  # monotone quantization keeps the order
    bx0, by0, bx1, by1 = bins_to_box(bins, width=w, height=h, num_bins=nb)
    assert abs(bx0 - x0) <= _half_bin(w, nb) and abs(bx1 - x1) <= _half_bin(w, nb)
    assert abs(by0 - y0) <= _half_bin(h, nb) and abs(by1 - y1) <= _half_bin(h, nb)
    # a decoded box quantizes back to the same bins
    assert box_to_bins([bx0, by0, bx1, by1], width=w, height=h, num_bins=nb) == bins


@settings(max_examples=100, deadline=None)
@given(w=sizes, h=sizes, pts=st.lists(st.tuples(fractions, fractions), min_size=3, max_size=20))
def test_polygon_round_trip(w, h, pts) -> None:
    polygon = [(x * w, y * h) for x, y in pts]
    bins = polygon_to_bins(polygon, width=w, height=h)
    assert len(bins) == 2 * len(polygon)
    decoded = bins_to_polygon(bins, width=w, height=h)
    assert len(decoded) == len(polygon)
    for (x, y), (dx, dy) in zip(polygon, decoded):
        assert abs(x - dx) <= _half_bin(w, 1000) and abs(y - dy) <= _half_bin(h, 1000)


def test_points_and_numpy_inputs() -> None:
    assert point_to_bins(np.array([100.0, 50.0]), width=200, height=100) == [500, 500]
    assert bins_to_point(np.array([0, 999]), width=200, height=100) == [0.0, 100.0]
    assert box_to_bins(np.array([0, 0, 10, 10], dtype=np.float32), width=10, height=10) == [0, 0, 999, 999]
    assert bins_to_token_ids(np.array([0, 999]), DEFAULT_LAYOUT) == [31768, 32767]


def test_token_ids_round_trip_and_errors() -> None:
    bins = [0, 1, 500, 999]
    ids = bins_to_token_ids(bins, OFA_LAYOUT)
    assert ids == [58457, 58458, 58957, 59456]
    assert token_ids_to_bins(ids, OFA_LAYOUT) == bins
    assert token_ids_to_bins(bins_to_token_ids(bins, DEFAULT_LAYOUT), DEFAULT_LAYOUT) == bins
    with pytest.raises(ValueError, match=r"token id 23576 at position 1 is not a location-bin token"):
        token_ids_to_bins([31768, 23576], DEFAULT_LAYOUT)
    with pytest.raises(ValueError, match=r"bin index 1000 is out of range 0..999"):
        bins_to_token_ids([1000], DEFAULT_LAYOUT)
    with pytest.raises(TypeError, match=r"bin index must be an integer"):
        bins_to_token_ids([1.5], DEFAULT_LAYOUT)


def test_text_helpers() -> None:
    assert box_to_text([0, 0, 640, 480], width=640, height=480) == "<bin_0> <bin_0> <bin_999> <bin_999>"
    assert point_to_text([320, 240], width=640, height=480) == "<bin_500> <bin_500>"
    assert polygon_to_text([(0, 0), (640, 0), (0, 480)], width=640, height=480) == (
        "<bin_0> <bin_0> <bin_999> <bin_0> <bin_0> <bin_999>"
    )
    assert bins_to_text([3, 4]) == "<bin_3> <bin_4>"
    # decoded model output may have no spaces and other text around the bins
    assert text_to_bins("<s><bin_1><bin_2> lesion <bin_3></s>") == [1, 2, 3]
    assert text_to_box("<bin_0><bin_0><bin_999><bin_999>", width=10, height=20) == [0.0, 0.0, 10.0, 20.0]
    with pytest.raises(ValueError, match=r"bin index 1000 is out of range"):
        text_to_bins("<bin_1000>")
    with pytest.raises(ValueError, match=r"a box needs 4 bins \(x0, y0, x1, y1\), got 3"):
        text_to_box("<bin_1> <bin_2> <bin_3>", width=10, height=10)


@pytest.mark.parametrize(
    ("box", "width", "height", "message"),
    [
        ([10, 0, 5, 5], 20, 20, r"x1 < x0 \(5 < 10\)"),
        ([0, 10, 5, 5], 20, 20, r"y1 < y0 \(5 < 10\)"),
        ([0, 0, 25, 5], 20, 20, r"outside the 20x20 image: x=25 not in \[0, 20\]"),
        ([-1, 0, 5, 5], 20, 20, r"outside the 20x20 image: x=-1"),
        ([0, 0, 5, 30], 20, 20, r"y=30 not in \[0, 20\]"),
        ([0, 0, 5, 5], 0, 20, r"image width must be a positive finite number, got 0"),
        ([0, 0, 5, 5], 20, -3, r"image height must be a positive finite number"),
        ([0, 0, 5], 20, 20, r"a box needs 4 coordinates \(x0, y0, x1, y1\), got 3"),
        ([0, 0, float("nan"), 5], 20, 20, r"non-finite coordinate"),
    ],
)
def test_box_errors_name_the_problem(box, width, height, message) -> None:
    with pytest.raises(ValueError, match=message):
        box_to_bins(box, width=width, height=height)


def test_clip_option_and_other_errors() -> None:
    assert box_to_bins([-5, -5, 25, 10], width=20, height=20, clip=True) == [0, 0, 999, 500]
    with pytest.raises(ValueError, match=r"a polygon needs at least 3 vertices, got 2"):
        polygon_to_bins([(0, 0), (1, 1)], width=10, height=10)
    with pytest.raises(ValueError, match=r"polygon vertex 1 needs 2 coordinates"):
        polygon_to_bins([(0, 0), (1, 1, 1), (2, 2)], width=10, height=10)
    with pytest.raises(ValueError, match=r"odd count 7"):
        bins_to_polygon([1] * 7, width=10, height=10)
    with pytest.raises(ValueError, match=r"point \[11.0, 1.0\] lies outside the 10x10 image"):
        point_to_bins([11, 1], width=10, height=10)
    with pytest.raises(ValueError, match=r"num_bins must be an int >= 2"):
        box_to_bins([0, 0, 1, 1], width=10, height=10, num_bins=1)
