"""Binary masks <-> `<bin>` tokens: one polygon per connected component, Florence-2 style.

Follows Florence-2 (Xiao et al., 2024, "Florence-2: Advancing a Unified Representation for a Variety of
Vision Tasks", section 3: regions as quantized polygon vertices) with OFA's location quantization
(`biomedgpt.tokenization.locations`: `bin = round(coord / size * (num_bins - 1))`, x by the width, y by
the height). docs/segmentation.md records why this representation won over Unified-IO 2's image codes,
and the measured Dice and token counts.

Sequence (eos not included):

    x0 y0 x1 y1 ... xn yn  <mask>  x0 y0 ...  <mask>  ...

- one polygon per 4-connected foreground component, traced along pixel edges (so the unsimplified
  polygon rasterizes back to the exact component) through the midpoints of the boundary pixel edges,
  simplified with Douglas-Peucker at a tolerance of `TOLERANCE` pixels (of the model's `image_size`
  input or of the mask, whichever is coarser), written clockwise on screen from its top-left vertex;
  polygons in reading order (top, then left);
- polygons are separated by `<mask>` (`layout.mask_id`): it is an encoder-side token that no task ever
  generates, so it cannot otherwise appear in an output. A segmentation decoding constraint therefore
  allows the bins, `<mask>` and `</s>`;
- holes are filled (lesions and nuclei have none worth the tokens), and an empty mask is the empty
  sequence;
- at most `max_tokens(image_size)` tokens: past that the tolerance is raised, then the smallest
  components are dropped.

`decode_mask` never raises on malformed input: tokens other than bins and the separator are skipped,
`</s>` ends the sequence, a dangling odd coordinate is dropped and polygons of fewer than 3 vertices are
ignored. The mask is rasterized by pixel centre (a pixel is foreground when its centre lies inside a
polygon, even-odd rule per polygon, union over polygons).

numpy only; no torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from biomedgpt.tokenization.layout import VocabLayout

CONSTRAINT = "bins"
"""Decoding constraint kind for `biomedgpt.tasks.segmentation` (bins; the task adds `<mask>` and `</s>`)."""
TOLERANCE = 0.5
"""Douglas-Peucker tolerance in pixels of the model's square `image_size` input or of the mask, whichever
grid is coarser (docs/segmentation.md)."""
_RELAX = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
"""Tolerance multipliers tried in turn when a mask does not fit `max_tokens`."""
_MIN_SIMPLIFY = 8
"""Polygons of at most this many vertices are kept as traced (tiny components stay recognizable)."""


def max_tokens(image_size: int) -> int:
    """Token budget of one mask at model input side `image_size` (eos not included).

    Four tokens per input pixel of side (two vertices per pixel of perimeter would trace any shape
    exactly), capped at 1000 so that a target always fits OFA's 1024 decoder positions.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    return min(4 * image_size, 1000)


# --- mask -> polygons ----------------------------------------------------------------------------------
# Directions on the pixel-corner lattice, screen coordinates (x right, y down): right, down, left, up.
_STEPS = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], dtype=np.int64)


def _boundary_edges(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Directed pixel-edge segments with the foreground on their right: (starts (E, 2) as (x, y), dirs (E,))."""
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1]
    starts, dirs = [], []
    # (neighbour that must be background, start corner offset (dx, dy), direction)
    sides = (
        (padded[:-2, 1:-1], (0, 0), 0),  # top edge, left -> right
        (padded[1:-1, 2:], (1, 0), 1),  # right edge, top -> bottom
        (padded[2:, 1:-1], (1, 1), 2),  # bottom edge, right -> left
        (padded[1:-1, :-2], (0, 1), 3),  # left edge, bottom -> top
    )
    for neighbour, (dx, dy), direction in sides:
        rows, cols = np.nonzero(inner & ~neighbour)
        starts.append(np.stack([cols + dx, rows + dy], axis=1))
        dirs.append(np.full(rows.shape, direction))
    return np.concatenate(starts), np.concatenate(dirs)


def _trace_loops(mask: np.ndarray) -> list[np.ndarray]:
    """Closed boundary loops (corner vertices only, (N, 2) float (x, y)) of the 4-connected components.

    Outer boundaries run clockwise on screen (positive shoelace area), holes the other way. At a corner
    shared by two diagonal pixels the walk turns right, which keeps diagonal neighbours apart.
    """
    starts, dirs = _boundary_edges(mask)
    if len(starts) == 0:
        return []
    width = mask.shape[1] + 1
    vertex_ids = starts[:, 1] * width + starts[:, 0]
    out_edges: dict[int, list[int]] = {}
    for edge, vertex in enumerate(vertex_ids.tolist()):
        out_edges.setdefault(vertex, []).append(edge)
    ends = starts + _STEPS[dirs]
    end_ids = (ends[:, 1] * width + ends[:, 0]).tolist()
    dir_list = dirs.tolist()
    used = np.zeros(len(starts), dtype=bool)
    loops = []
    for first in range(len(starts)):
        if used[first]:
            continue
        loop, edge = [], first
        while not used[edge]:
            used[edge] = True
            loop.append(edge)
            candidates = out_edges[end_ids[edge]]
            if len(candidates) == 1:
                edge = candidates[0]
            else:  # prefer the right turn, then straight, then left
                rank = {(dir_list[edge] + turn) % 4: turn for turn in (1, 0, 3)}
                edge = min(candidates, key=lambda e: rank.get(dir_list[e], 9))
        midpoints = starts[loop] + 0.5 * _STEPS[dirs[loop]]
        loops.append(_drop_collinear(midpoints.astype(np.float64)))
    return loops


def _drop_collinear(points: np.ndarray) -> np.ndarray:
    """Remove vertices that lie on the straight line through their neighbours (closed polygon)."""
    before, after = np.roll(points, 1, axis=0), np.roll(points, -1, axis=0)
    u, v = points - before, after - points
    turning = np.abs(u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]) > 1e-9
    return points[turning] if turning.sum() >= 3 else points


def _signed_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)) / 2.0


def _douglas_peucker(points: np.ndarray, tolerance: float) -> np.ndarray:
    """Simplify an open chain, keeping both ends (iterative, so long chains cannot overflow the stack)."""
    keep = np.zeros(len(points), dtype=bool)
    keep[0] = keep[-1] = True
    stack = [(0, len(points) - 1)]
    while stack:
        lo, hi = stack.pop()
        if hi - lo < 2:
            continue
        a, b = points[lo], points[hi]
        seg = b - a
        rel = points[lo + 1 : hi] - a
        norm = float(np.hypot(*seg))
        if norm > 0:
            dist = np.abs(seg[0] * rel[:, 1] - seg[1] * rel[:, 0]) / norm
        else:
            dist = np.hypot(rel[:, 0], rel[:, 1])
        k = int(np.argmax(dist))
        if dist[k] > tolerance:
            keep[lo + 1 + k] = True
            stack += [(lo, lo + 1 + k), (lo + 1 + k, hi)]
    return points[keep]


def _simplify_closed(points: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas-Peucker on a closed polygon: split at vertex 0 and the vertex farthest from it."""
    if len(points) <= _MIN_SIMPLIFY or tolerance <= 0:
        return points
    far = int(np.argmax(np.hypot(*(points - points[0]).T)))
    first = _douglas_peucker(points[: far + 1], tolerance)
    second = _douglas_peucker(np.concatenate([points[far:], points[:1]]), tolerance)
    simplified = np.concatenate([first, second[1:-1]])
    return simplified if len(simplified) >= 3 else points


def mask_to_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """Outer boundaries of the 4-connected components of `mask`, in pixel-corner coordinates (x, y).

    Each polygon is (N, 2) float, clockwise on screen, starting at its top-left vertex; the list is in
    reading order. Holes are not returned (filling them is part of the codec, see the module docstring).
    """
    mask = np.asarray(mask).astype(bool)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be 2-D (H, W), got shape {mask.shape}")
    polygons = []
    for loop in _trace_loops(mask):
        if _signed_area(loop) <= 0:  # a hole
            continue
        start = int(np.lexsort((loop[:, 0], loop[:, 1]))[0])  # smallest y, then smallest x
        polygons.append(np.roll(loop, -start, axis=0))
    return sorted(polygons, key=lambda p: (p[0, 1], p[0, 0]))


# --- polygons -> mask ----------------------------------------------------------------------------------
def polygons_to_mask(polygons: Sequence[np.ndarray], out_shape: tuple[int, int]) -> np.ndarray:
    """Rasterize polygons ((N, 2) (x, y) in pixels of `out_shape`) by pixel centre; union over polygons."""
    height, width = out_shape
    out = np.zeros((height, width), dtype=bool)
    centres = np.arange(height) + 0.5
    for polygon in polygons:
        if len(polygon) < 3:
            continue
        x0, y0 = polygon[:, 0], polygon[:, 1]
        x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
        lo, hi = np.minimum(y0, y1), np.maximum(y0, y1)
        # (E, H): edge e crosses the centre line of row r (half-open, so a vertex counts once)
        crosses = (lo[:, None] <= centres[None, :]) & (centres[None, :] < hi[:, None])
        edge_idx, rows = np.nonzero(crosses)
        if len(rows) == 0:
            continue
        t = (centres[rows] - y0[edge_idx]) / (y1[edge_idx] - y0[edge_idx])
        xs = x0[edge_idx] + t * (x1[edge_idx] - x0[edge_idx])
        order = np.lexsort((xs, rows))
        rows, xs = rows[order], xs[order]  # an even number of crossings per row, sorted by x
        # pixel c is inside when x_a <= c + 0.5 < x_b for a pair (x_a, x_b)
        first = np.clip(np.ceil(xs[0::2] - 0.5), 0, width).astype(np.int64)
        last = np.clip(np.ceil(xs[1::2] - 0.5), 0, width).astype(np.int64)
        diff = np.zeros((height, width + 1), dtype=np.int32)
        np.add.at(diff, (rows[0::2], first), 1)
        np.add.at(diff, (rows[0::2], last), -1)
        out |= np.cumsum(diff[:, :width], axis=1) > 0
    return out


# --- tokens ---------------------------------------------------------------------------------------------
def _quantize(polygon: np.ndarray, shape: tuple[int, int], num_bins: int) -> np.ndarray:
    """Pixel (x, y) -> (N, 2) bins, consecutive duplicates removed (cyclically)."""
    height, width = shape
    scale = np.array([width, height], dtype=np.float64)
    bins = np.clip(np.rint(polygon / scale * (num_bins - 1)), 0, num_bins - 1).astype(np.int64)
    changed = np.any(bins != np.roll(bins, 1, axis=0), axis=1)
    return bins[changed] if changed.any() else bins[:1]


def _serialize(polygons: list[np.ndarray], layout: VocabLayout) -> list[int]:
    ids: list[int] = []
    first_bin = layout.bin_range[0]
    for polygon in polygons:
        if ids:
            ids.append(layout.mask_id)
        ids.extend((polygon.reshape(-1) + first_bin).tolist())
    return ids


def encode_mask(
    mask: np.ndarray, *, image_size: int, layout: VocabLayout, budget: int | None = None
) -> list[int]:
    """(H, W) bool or 0/1 mask -> token ids of its polygons (eos not included; [] for an empty mask).

    `image_size` is the side of the square the model sees: the simplification tolerance and the token
    budget (`max_tokens`) are set in its pixels, whatever the mask's own resolution. `budget` lowers the
    budget (a training run's target length): coarser polygons, then the largest components that fit; [] when
    not even the largest fits.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.shape[0] < 1 or mask.shape[1] < 1:
        raise ValueError(f"a mask must be 2-D (H, W) and non-empty, got shape {mask.shape}")
    budget = max_tokens(image_size) if budget is None else min(budget, max_tokens(image_size))
    traced = mask_to_polygons(mask != 0)
    # tolerance in mask pixels: one model pixel spans shape / image_size mask pixels; below one mask
    # pixel the tracing would only copy the staircase of an upsampled mask
    scale = max(max(mask.shape[0], mask.shape[1]) / image_size, 1.0)
    for relax in _RELAX:
        tolerance = TOLERANCE * relax * scale
        polygons = [q for q in (_quantize(_simplify_closed(p, tolerance), mask.shape, layout.num_bins)
                                for p in traced) if len(q) >= 3]  # fmt: skip
        ids = _serialize(polygons, layout)
        if len(ids) <= budget:
            return ids
    # still too long at the coarsest tolerance: keep the largest components that fit
    areas = [abs(_signed_area(p.astype(np.float64))) for p in polygons]
    kept, used = [], -1  # the first polygon needs no separator
    for i in sorted(range(len(polygons)), key=lambda i: -areas[i]):
        if used + 2 * len(polygons[i]) + 1 > budget:
            break
        kept.append(i)
        used += 2 * len(polygons[i]) + 1
    return _serialize([polygons[i] for i in sorted(kept)], layout)


def token_ids_to_polygons(token_ids: Sequence[int], *, layout: VocabLayout) -> list[np.ndarray]:
    """Best-effort parse: (N, 2) bin arrays with N >= 3; never raises on malformed sequences."""
    polygons: list[np.ndarray] = []
    current: list[int] = []
    first_bin, last_bin = layout.bin_range

    def flush() -> None:
        coords = current[: len(current) // 2 * 2]  # a dangling x is dropped
        if len(coords) >= 6:
            polygons.append(np.asarray(coords, dtype=np.int64).reshape(-1, 2))
        current.clear()

    for token in token_ids:
        try:
            token_id = int(token)
        except (TypeError, ValueError, OverflowError):
            continue
        if token_id == layout.eos_id:
            break
        if token_id == layout.mask_id:
            flush()
        elif first_bin <= token_id <= last_bin:
            current.append(token_id - first_bin)
    flush()
    return polygons


def decode_mask(
    token_ids: Sequence[int], *, image_size: int, layout: VocabLayout, out_shape: tuple[int, int]
) -> np.ndarray:
    """Token ids -> (out_shape) bool mask; malformed input gives a best-effort (possibly empty) mask.

    `image_size` is accepted for symmetry with `encode_mask`: bins are fractions of the image, so the
    mask decodes at any `out_shape`.
    """
    del image_size  # the bins are resolution-free
    height, width = (int(v) for v in out_shape)
    if height < 1 or width < 1:
        raise ValueError(f"out_shape must be positive (height, width), got {out_shape}")
    scale = np.array([width, height], dtype=np.float64) / (layout.num_bins - 1)
    try:
        polygons = [p * scale for p in token_ids_to_polygons(token_ids, layout=layout)]
    except TypeError:  # not a sequence at all
        return np.zeros((height, width), dtype=bool)
    return polygons_to_mask(polygons, (height, width))


def dice_score(pred: np.ndarray, target: np.ndarray) -> float:
    """2|A∩B| / (|A| + |B|); 1.0 when both masks are empty."""
    pred, target = np.asarray(pred, dtype=bool), np.asarray(target, dtype=bool)
    total = int(pred.sum()) + int(target.sum())
    return 1.0 if total == 0 else 2.0 * int((pred & target).sum()) / total
