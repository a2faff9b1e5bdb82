"""Tolerances for floating-point comparisons between runs that do not compute in the same order.

The same fp32 values computed in another batch shape, with padding, in another kernel, on another CPU or on a
GPU differ in their last bits: the size of those differences follows the size of the values (the largest
magnitudes in the tensor), not a fixed number. `assert_close_to_scale` compares with an absolute tolerance
relative to that scale, so a bound means the same on logits of order 1 and of order 100, and a wrong result
(off by a fraction of the scale) still fails. Never compare such results bit for bit.
"""

from __future__ import annotations

import numpy as np


def _numpy(values) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, on any device and of any dtype
        values = values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def assert_close_to_scale(actual, expected, *, rel: float, what: str = "values") -> float:
    """Every element of `actual` within `rel * max|expected|` of `expected` (same shape); returns the worst
    difference as a fraction of that scale. Matching infinities (padding biases) count as equal; an expected
    all-zero tensor must come out all zero."""
    got, want = _numpy(actual), _numpy(expected)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    finite = np.isfinite(want)
    assert (np.isfinite(got) == finite).all() and (got[~finite] == want[~finite]).all(), (
        f"{what}: infinities or NaNs differ"
    )
    if not finite.any():
        return 0.0
    scale = float(np.abs(want[finite]).max())
    diff = float(np.abs(got[finite] - want[finite]).max())
    if scale == 0.0:  # all zeros (a padding bias, say): zeros it must stay
        assert diff == 0.0, f"{what}: zeros expected, got values up to {diff:.3g}"
        return 0.0
    assert diff <= rel * scale, f"{what}: differ by {diff / scale:.2e} of their scale {scale:.3g} (> {rel:g})"
    return diff / scale
