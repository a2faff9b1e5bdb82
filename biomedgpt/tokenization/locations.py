"""Location tokens: boxes, points and polygons <-> `<bin_i>` indices, token ids and text.

Follows OFA's quantization (Wang et al., 2022; `data/mm_data/refcoco_dataset.py` and
`tasks/mm_tasks/refcoco.py`): a coordinate becomes `bin = round(coord / size * (num_bins - 1))` and a
bin goes back as `coord = bin / (num_bins - 1) * size`. Here x is normalized by the image width and y by
the height, bins are clamped to [0, num_bins - 1], boxes are written x0 y0 x1 y1, and Python's `round`
(half to even) matches `torch.round` used by OFA. The round trip is exact to half a bin:
|coord - decoded| <= size / (num_bins - 1) / 2.

Pure Python (inputs may be numpy scalars or arrays); no torch.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Iterable, Sequence

from biomedgpt.tokenization.layout import OFA_NUM_BINS, VocabLayout, bin_token

_BIN_RE = re.compile(r"<bin_(\d+)>")


# --- scalars ----------------------------------------------------------------------------------------
def _check_size(width: float, height: float) -> None:
    for name, value in (("width", width), ("height", height)):
        if not math.isfinite(float(value)) or float(value) <= 0:
            raise ValueError(f"image {name} must be a positive finite number, got {value!r}")


def _check_num_bins(num_bins: int) -> None:
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 2:
        raise ValueError(f"num_bins must be an int >= 2, got {num_bins!r}")


def _check_bin(index: object, num_bins: int) -> int:
    try:
        value = operator.index(index)  # accepts numpy integers, rejects floats
    except TypeError:
        raise TypeError(f"bin index must be an integer, got {type(index).__name__} ({index!r})") from None
    if not 0 <= value < num_bins:
        raise ValueError(f"bin index {value} is out of range 0..{num_bins - 1}")
    return value


def coord_to_bin(value: float, size: float, *, num_bins: int = OFA_NUM_BINS) -> int:
    """Quantize one coordinate in [0, size] to a bin index in [0, num_bins - 1]."""
    _check_num_bins(num_bins)
    index = round(float(value) / float(size) * (num_bins - 1))
    return min(max(index, 0), num_bins - 1)


def bin_to_coord(index: int, size: float, *, num_bins: int = OFA_NUM_BINS) -> float:
    """The coordinate at the centre of bin `index` (inverse of `coord_to_bin` up to half a bin)."""
    _check_num_bins(num_bins)
    return _check_bin(index, num_bins) / (num_bins - 1) * float(size)


def _as_floats(values: Iterable[float], what: str) -> list[float]:
    out = [float(v) for v in values]
    for v in out:
        if not math.isfinite(v):
            raise ValueError(f"{what} has a non-finite coordinate: {out}")
    return out


def _check_inside(x: float, y: float, *, width: float, height: float, what: str) -> None:
    if not 0 <= x <= width:
        raise ValueError(f"{what} lies outside the {width:g}x{height:g} image: x={x:g} not in [0, {width:g}]")
    if not 0 <= y <= height:
        raise ValueError(
            f"{what} lies outside the {width:g}x{height:g} image: y={y:g} not in [0, {height:g}]"
        )


# --- boxes ------------------------------------------------------------------------------------------
def box_to_bins(
    box: Sequence[float], *, width: float, height: float, num_bins: int = OFA_NUM_BINS, clip: bool = False
) -> list[int]:
    """Box `(x0, y0, x1, y1)` in pixels -> 4 bin indices. `clip=True` clips it to the image first."""
    _check_size(width, height)
    coords = _as_floats(box, "box")
    if len(coords) != 4:
        raise ValueError(f"a box needs 4 coordinates (x0, y0, x1, y1), got {len(coords)}: {coords}")
    x0, y0, x1, y1 = coords
    if x1 < x0:
        raise ValueError(f"box {coords} has x1 < x0 ({x1:g} < {x0:g}); boxes are written x0 y0 x1 y1")
    if y1 < y0:
        raise ValueError(f"box {coords} has y1 < y0 ({y1:g} < {y0:g}); boxes are written x0 y0 x1 y1")
    if clip:
        x0, x1 = (min(max(v, 0.0), float(width)) for v in (x0, x1))
        y0, y1 = (min(max(v, 0.0), float(height)) for v in (y0, y1))
    _check_inside(x0, y0, width=width, height=height, what=f"box {coords}")
    _check_inside(x1, y1, width=width, height=height, what=f"box {coords}")
    return [
        coord_to_bin(x0, width, num_bins=num_bins),
        coord_to_bin(y0, height, num_bins=num_bins),
        coord_to_bin(x1, width, num_bins=num_bins),
        coord_to_bin(y1, height, num_bins=num_bins),
    ]


def bins_to_box(
    bins: Sequence[int], *, width: float, height: float, num_bins: int = OFA_NUM_BINS
) -> list[float]:
    """4 bin indices -> box `[x0, y0, x1, y1]` in pixels (order kept as generated, not sorted)."""
    _check_size(width, height)
    values = list(bins)
    if len(values) != 4:
        raise ValueError(f"a box needs 4 bins (x0, y0, x1, y1), got {len(values)}: {values}")
    sizes = (width, height, width, height)
    return [bin_to_coord(b, s, num_bins=num_bins) for b, s in zip(values, sizes)]


# --- points and polygons ----------------------------------------------------------------------------
def point_to_bins(
    point: Sequence[float], *, width: float, height: float, num_bins: int = OFA_NUM_BINS
) -> list[int]:
    """Point `(x, y)` in pixels -> 2 bin indices."""
    _check_size(width, height)
    coords = _as_floats(point, "point")
    if len(coords) != 2:
        raise ValueError(f"a point needs 2 coordinates (x, y), got {len(coords)}: {coords}")
    x, y = coords
    _check_inside(x, y, width=width, height=height, what=f"point {coords}")
    return [coord_to_bin(x, width, num_bins=num_bins), coord_to_bin(y, height, num_bins=num_bins)]


def bins_to_point(
    bins: Sequence[int], *, width: float, height: float, num_bins: int = OFA_NUM_BINS
) -> list[float]:
    """2 bin indices -> point `[x, y]` in pixels."""
    _check_size(width, height)
    values = list(bins)
    if len(values) != 2:
        raise ValueError(f"a point needs 2 bins (x, y), got {len(values)}: {values}")
    return [
        bin_to_coord(values[0], width, num_bins=num_bins),
        bin_to_coord(values[1], height, num_bins=num_bins),
    ]


def polygon_to_bins(
    points: Iterable[Sequence[float]], *, width: float, height: float, num_bins: int = OFA_NUM_BINS
) -> list[int]:
    """Polygon `[(x, y), ...]` (>= 3 vertices) -> flat bins `[x0, y0, x1, y1, ...]` (Florence-2 style)."""
    vertices = [list(p) for p in points]
    if len(vertices) < 3:
        raise ValueError(f"a polygon needs at least 3 vertices, got {len(vertices)}")
    out: list[int] = []
    for i, vertex in enumerate(vertices):
        if len(vertex) != 2:
            raise ValueError(f"polygon vertex {i} needs 2 coordinates (x, y), got {vertex}")
        out.extend(point_to_bins(vertex, width=width, height=height, num_bins=num_bins))
    return out


def bins_to_polygon(
    bins: Sequence[int], *, width: float, height: float, num_bins: int = OFA_NUM_BINS
) -> list[tuple[float, float]]:
    """Flat bins `[x0, y0, x1, y1, ...]` -> polygon `[(x, y), ...]` in pixels."""
    values = list(bins)
    if len(values) % 2:
        raise ValueError(f"polygon bins come in (x, y) pairs, got an odd count {len(values)}")
    if len(values) < 6:
        raise ValueError(f"a polygon needs at least 3 vertices (6 bins), got {len(values)} bins")
    pairs = zip(values[0::2], values[1::2])
    return [tuple(bins_to_point(pair, width=width, height=height, num_bins=num_bins)) for pair in pairs]


# --- token ids and text -----------------------------------------------------------------------------
def bins_to_token_ids(bins: Iterable[int], layout: VocabLayout) -> list[int]:
    """Bin indices -> ids of `<bin_i>` in `layout`."""
    return [layout.bin_id(_check_bin(b, layout.num_bins)) for b in bins]


def token_ids_to_bins(token_ids: Iterable[int], layout: VocabLayout) -> list[int]:
    """Ids of `<bin_i>` tokens -> bin indices; ValueError naming the first id that is not a bin."""
    out: list[int] = []
    first, last = layout.bin_range
    for position, token_id in enumerate(token_ids):
        value = operator.index(token_id)
        if not layout.is_bin(value):
            raise ValueError(
                f"token id {value} at position {position} is not a location-bin token (bins are {first}..{last})"
            )
        out.append(value - first)
    return out


def bins_to_text(bins: Iterable[int], *, num_bins: int = OFA_NUM_BINS) -> str:
    """Bin indices -> `"<bin_a> <bin_b> ..."` (the tokenizer maps each `<bin_i>` to one id)."""
    return " ".join(bin_token(_check_bin(b, num_bins)) for b in bins)


def text_to_bins(text: str, *, num_bins: int = OFA_NUM_BINS) -> list[int]:
    """All `<bin_i>` in `text`, in order, as indices (anything else in the text is ignored)."""
    return [_check_bin(int(m.group(1)), num_bins) for m in _BIN_RE.finditer(text)]


def box_to_text(
    box: Sequence[float], *, width: float, height: float, num_bins: int = OFA_NUM_BINS, clip: bool = False
) -> str:
    """Box in pixels -> `"<bin_x0> <bin_y0> <bin_x1> <bin_y1>"`."""
    bins = box_to_bins(box, width=width, height=height, num_bins=num_bins, clip=clip)
    return bins_to_text(bins, num_bins=num_bins)


def point_to_text(
    point: Sequence[float], *, width: float, height: float, num_bins: int = OFA_NUM_BINS
) -> str:
    """Point in pixels -> `"<bin_x> <bin_y>"`."""
    return bins_to_text(
        point_to_bins(point, width=width, height=height, num_bins=num_bins), num_bins=num_bins
    )


def polygon_to_text(
    points: Iterable[Sequence[float]], *, width: float, height: float, num_bins: int = OFA_NUM_BINS
) -> str:
    """Polygon in pixels -> `"<bin_x0> <bin_y0> <bin_x1> <bin_y1> ..."`."""
    bins = polygon_to_bins(points, width=width, height=height, num_bins=num_bins)
    return bins_to_text(bins, num_bins=num_bins)


def text_to_box(text: str, *, width: float, height: float, num_bins: int = OFA_NUM_BINS) -> list[float]:
    """`"<bin_a> <bin_b> <bin_c> <bin_d>"` -> box in pixels; ValueError unless exactly 4 bins are found."""
    return bins_to_box(text_to_bins(text, num_bins=num_bins), width=width, height=height, num_bins=num_bins)
