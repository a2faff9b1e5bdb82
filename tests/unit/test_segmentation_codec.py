"""Segmentation codec: masks <-> polygon `<bin>` tokens (Florence-2 style), round-trip Dice, robustness.

The Dice floors below sit under the figures measured for docs/segmentation.md with margin; the real-data
tests read pyradiomics and stardist files from the registry cache (the `registry_cache` fixture fetches them
once, as `make test` does).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from biomedgpt.ingest import registry
from biomedgpt.ingest.synthetic import synthetic_samples
from biomedgpt.tasks.segmentation_codec import (
    decode_mask,
    dice_score,
    encode_mask,
    mask_to_polygons,
    max_tokens,
    polygons_to_mask,
    token_ids_to_polygons,
)
from biomedgpt.tokenization.layout import DEFAULT_LAYOUT, OFA_LAYOUT

LAYOUT = DEFAULT_LAYOUT


def _roundtrip(mask: np.ndarray, image_size: int = 128, layout=LAYOUT) -> tuple[np.ndarray, list[int]]:
    ids = encode_mask(mask, image_size=image_size, layout=layout)
    return decode_mask(ids, image_size=image_size, layout=layout, out_shape=mask.shape), ids


def _disk(shape: tuple[int, int], cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Background not 8-connected to the border becomes foreground (reference for the hole-filling rule).

    Foreground components are 4-connected, so background is 8-connected (the dual rule): a background
    pixel touching the outside only at a corner is not a hole.
    """
    outside = np.zeros_like(mask)
    outside[0, :], outside[-1, :], outside[:, 0], outside[:, -1] = (
        ~mask[0, :], ~mask[-1, :], ~mask[:, 0], ~mask[:, -1],
    )  # fmt: skip
    while True:
        grown = outside.copy()
        grown[1:, :] |= outside[:-1, :]
        grown[:-1, :] |= outside[1:, :]
        grown[:, 1:] |= outside[:, :-1]
        grown[:, :-1] |= outside[:, 1:]
        grown[1:, 1:] |= outside[:-1, :-1]
        grown[1:, :-1] |= outside[:-1, 1:]
        grown[:-1, 1:] |= outside[1:, :-1]
        grown[:-1, :-1] |= outside[1:, 1:]
        grown &= ~mask
        if (grown == outside).all():
            return ~outside
        outside = grown


# --- tracing and rasterization ----------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), density=st.floats(0.1, 0.9), h=st.integers(1, 24), w=st.integers(1, 24))
def test_traced_polygons_rasterize_back_to_the_mask_with_holes_filled(seed, density, h, w) -> None:
    mask = np.random.default_rng(seed).random((h, w)) < density
    back = polygons_to_mask(mask_to_polygons(mask), mask.shape)
    assert np.array_equal(back, _fill_holes(mask))


def test_diagonal_pixels_are_separate_components() -> None:
    mask = np.zeros((4, 4), dtype=bool)
    mask[0, 0] = mask[1, 1] = True
    polygons = mask_to_polygons(mask)
    assert len(polygons) == 2
    assert np.array_equal(polygons_to_mask(polygons, mask.shape), mask)


def test_polygons_are_in_reading_order_and_clockwise_from_top_left() -> None:
    mask = _disk((64, 64), 45, 10, 5) | _disk((64, 64), 12, 50, 6) | _disk((64, 64), 12, 15, 4)
    polygons = mask_to_polygons(mask)
    tops = [(p[:, 1].min(), p[0, 0]) for p in polygons]
    assert tops == sorted(tops)
    for p in polygons:
        start = p[0]
        assert start[1] == p[:, 1].min() and start[0] == p[p[:, 1] == start[1], 0].min()
        x, y = p[:, 0], p[:, 1]
        assert np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y) > 0  # clockwise on screen


# --- tokens ----------------------------------------------------------------------------------------------
def test_empty_mask_is_the_empty_sequence() -> None:
    empty = np.zeros((32, 40), dtype=bool)
    assert encode_mask(empty, image_size=128, layout=LAYOUT) == []
    decoded = decode_mask([], image_size=128, layout=LAYOUT, out_shape=(32, 40))
    assert decoded.shape == (32, 40) and decoded.dtype == bool and not decoded.any()


@pytest.mark.parametrize("layout", [DEFAULT_LAYOUT, OFA_LAYOUT])
def test_token_structure_polygons_of_bins_separated_by_mask(layout) -> None:
    mask = _disk((128, 128), 30, 30, 10) | _disk((128, 128), 90, 40, 7) | _disk((128, 128), 60, 100, 12)
    ids = encode_mask(mask.astype(np.uint8), image_size=128, layout=layout)
    assert layout.eos_id not in ids
    assert all(layout.is_bin(t) or t == layout.mask_id for t in ids)
    assert ids[0] != layout.mask_id and ids[-1] != layout.mask_id
    groups = " ".join("S" if t == layout.mask_id else "b" for t in ids).split("S")
    assert len(groups) == 3
    for group in groups:
        n = len(group.split())
        assert n % 2 == 0 and n >= 6
    decoded = decode_mask(ids, image_size=128, layout=layout, out_shape=mask.shape)
    assert len(mask_to_polygons(decoded)) == 3
    assert dice_score(decoded, mask) > 0.97


def test_encoding_is_deterministic_and_bool_or_int_input_agree() -> None:
    mask = _disk((100, 80), 50, 40, 20)
    a = encode_mask(mask, image_size=128, layout=LAYOUT)
    assert (
        a
        == encode_mask(mask.astype(np.int64), image_size=128, layout=LAYOUT)
        == encode_mask(mask, image_size=128, layout=LAYOUT)
    )


def test_decode_at_another_resolution() -> None:
    mask = _disk((64, 64), 30, 34, 14)
    ids = encode_mask(mask, image_size=128, layout=LAYOUT)
    big = decode_mask(ids, image_size=128, layout=LAYOUT, out_shape=(256, 256))
    assert dice_score(big, _disk((256, 256), 30 * 4 + 1.5, 34 * 4 + 1.5, 14 * 4)) > 0.97


def test_budget_is_respected_on_a_pathological_mask() -> None:
    noise = np.random.default_rng(0).random((64, 64)) < 0.5  # about 300 components
    for image_size in (32, 128):
        ids = encode_mask(noise, image_size=image_size, layout=LAYOUT)
        assert 0 < len(ids) <= max_tokens(image_size)
        decoded = decode_mask(ids, image_size=image_size, layout=LAYOUT, out_shape=noise.shape)
        assert decoded.any()


def test_max_tokens() -> None:
    assert max_tokens(128) == 512
    assert max_tokens(256) == 1000 and max_tokens(384) == 1000  # always fits 1024 decoder positions
    with pytest.raises(ValueError):
        max_tokens(0)


def test_bad_masks_are_rejected() -> None:
    with pytest.raises(ValueError):
        encode_mask(np.zeros((2, 3, 4)), image_size=128, layout=LAYOUT)
    with pytest.raises(ValueError):
        encode_mask(np.zeros((0, 3)), image_size=128, layout=LAYOUT)


# --- malformed sequences ----------------------------------------------------------------------------------
def _bins(*values: int) -> list[int]:
    return [LAYOUT.bin_id(v) for v in values]


SQUARE = _bins(100, 100, 900, 100, 900, 900, 100, 900)


@pytest.mark.parametrize(
    ("tokens", "expect_any"),
    [
        (SQUARE, True),
        (SQUARE + _bins(500), True),  # odd count: the dangling x is dropped
        (SQUARE[:4], False),  # two vertices: no polygon
        ([LAYOUT.mask_id, *SQUARE, LAYOUT.mask_id, LAYOUT.mask_id], True),  # stray separators
        ([*SQUARE[:4], 5, 7, -3, 10**12, LAYOUT.vocab_size, *SQUARE[4:]], True),  # non-bin ids skipped
        ([LAYOUT.eos_id, *SQUARE], False),  # eos ends the sequence
        ([*SQUARE, LAYOUT.eos_id, 4, 5], True),
        ([None, "x", 3.7, *SQUARE], True),  # not even integers
        (_bins(0, 0, 0, 0, 0, 0, 0, 0), False),  # degenerate polygon
        (_bins(*range(1000)) * 3, False),  # long and collinear: zero area
        (_bins(*np.random.default_rng(0).integers(0, 1000, 3001).tolist()), True),  # long scribble
        ([], False),
    ],
)
def test_malformed_sequences_never_raise(tokens, expect_any) -> None:
    out = decode_mask(tokens, image_size=128, layout=LAYOUT, out_shape=(50, 70))
    assert out.shape == (50, 70) and out.dtype == bool
    assert bool(out.any()) == expect_any


def test_decode_accepts_numpy_and_rejects_nothing_iterable() -> None:
    out = decode_mask(np.array(SQUARE), image_size=128, layout=LAYOUT, out_shape=(10, 10))
    assert out[2:8, 2:8].all()
    assert not decode_mask(None, image_size=128, layout=LAYOUT, out_shape=(10, 10)).any()  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-5, DEFAULT_LAYOUT.vocab_size + 5), max_size=200))
def test_random_sequences_never_raise(tokens) -> None:
    out = decode_mask(tokens, image_size=128, layout=LAYOUT, out_shape=(17, 23))
    assert out.shape == (17, 23) and out.dtype == bool
    assert all(len(p) >= 3 for p in token_ids_to_polygons(tokens, layout=LAYOUT))


# --- round-trip Dice on held-out masks (figures in docs/segmentation.md) -------------------------------------
def synthetic_masks() -> list[np.ndarray]:
    """Union lesion masks of held-out (test-split) SYNTHETIC scans, 128 x 128."""
    return [s.mask for s in synthetic_samples(1500, seed=1) if s.mask is not None and s.split == "test"]


def radiomics_masks() -> list[np.ndarray]:
    """Every lesion slice of the five pyradiomics cases, at native resolution (up to 512 x 512)."""
    from biomedgpt.ingest.volumes import lesion_slices, load_mask_volume, load_volume, slice_volume

    masks = []
    for case in ("brain1", "brain2", "breast1", "lung1", "lung2"):
        [image] = registry.extract("pyradiomics", f"pyradiomics-3.1.0/data/{case}_image.nrrd")
        [label] = registry.extract("pyradiomics", f"pyradiomics-3.1.0/data/{case}_label.nrrd")
        labels = load_mask_volume(label, like=load_volume(image))
        masks += [slice_volume(labels, k) != 0 for k in lesion_slices(labels)]
    return masks


def stardist_masks() -> list[np.ndarray]:
    """The 16 128 x 128 tiles of stardist's 512 x 512 nuclei instance mask, as binary masks."""
    from PIL import Image

    [path] = registry.extract("stardist", "stardist/data/images/mask2d.tif")
    labels = np.asarray(Image.open(path))
    return [labels[r : r + 128, c : c + 128] != 0 for r in range(0, 512, 128) for c in range(0, 512, 128)]


DEMO_SHARDS = Path(__file__).resolve().parents[2] / "data_shards" / "demo"


def demo_masks(split: str) -> list[np.ndarray]:
    """Segmentation masks of one split of the demo corpus (`biomedgpt shard --demo`; gitignored)."""
    from biomedgpt.data.schema import decode_sample
    from biomedgpt.data.shards import iter_tar_samples

    masks = []
    for tar in sorted(DEMO_SHARDS.glob(f"*-{split}-*.tar")):
        for members in iter_tar_samples(tar):
            if b'"segmentation"' in members.get("json", b""):
                sample = decode_sample(members)
                if sample.task == "segmentation":
                    masks.append(sample.mask)
    return masks


def _measure(masks: list[np.ndarray], image_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    results = [_roundtrip(m, image_size=image_size) for m in masks]
    dice = np.array([dice_score(d, m) for (d, _), m in zip(results, masks)])
    return dice, np.array([len(ids) for _, ids in results])


def test_round_trip_dice_on_held_out_synthetic_lesions() -> None:
    masks = synthetic_masks()
    assert len(masks) >= 20
    dice, tokens = _measure(masks)
    assert dice.mean() >= 0.99 and dice.min() >= 0.97  # measured: 0.997 mean, 0.985 min
    assert tokens.mean() < 80  # measured: about 47


@pytest.mark.usefixtures("registry_cache")
def test_round_trip_dice_on_pyradiomics_lesion_slices() -> None:
    masks = radiomics_masks()
    assert len(masks) >= 20
    dice, tokens = _measure(masks)
    assert dice.mean() >= 0.96 and dice.min() >= 0.90  # measured: 0.979 mean, 0.942 min
    assert tokens.max() <= max_tokens(128)


@pytest.mark.usefixtures("registry_cache")
def test_round_trip_dice_on_stardist_nuclei_crops() -> None:
    dice, tokens = _measure(stardist_masks())
    assert dice.mean() >= 0.98 and dice.min() >= 0.97  # measured: 0.993 mean, 0.989 min
    assert tokens.max() <= max_tokens(128)


# --- the alternative: Unified-IO 2's mask as image codes (docs/segmentation.md) -----------------------------
def image_code_roundtrip(mask: np.ndarray, tokenizer) -> np.ndarray:
    """Mask -> gray image at the tokenizer's native size -> VQ codes -> decoded image -> threshold at 50%."""
    from PIL import Image

    size = tokenizer.image_size
    gray = Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.Resampling.BILINEAR)
    decoded = tokenizer.reconstruct(np.asarray(gray)[None])[0].mean(axis=-1)  # (size, size) float
    back = Image.fromarray(decoded.astype(np.float32), mode="F").resize(
        mask.shape[::-1], Image.Resampling.BILINEAR
    )
    return np.asarray(back) >= 127.5


@pytest.mark.slow
@pytest.mark.usefixtures("registry_cache")
def test_polygons_beat_image_codes_on_every_dataset(capsys) -> None:
    """Prints the comparison table of docs/segmentation.md (`pytest -k image_codes -s`)."""
    from biomedgpt.tokenization.image_vq import ImageTokenizer

    tokenizer = ImageTokenizer.load_default()
    sets = [
        ("synthetic", synthetic_masks()),
        ("pyradiomics", radiomics_masks()),
        ("stardist", stardist_masks()),
    ]
    if DEMO_SHARDS.is_dir():
        sets.append(("demo test split", demo_masks("test")))
    rows = []
    for name, masks in sets:
        poly_dice, poly_tokens = _measure(masks)
        code_dice = np.array([dice_score(image_code_roundtrip(m, tokenizer), m) for m in masks])
        rows.append((name, len(masks), poly_dice, poly_tokens, code_dice))
        assert poly_dice.mean() > code_dice.mean(), name
    with capsys.disabled():
        print(
            "\n| masks | n | polygon Dice mean (min) | polygon tokens mean (max) | image-code Dice mean (min) |"
        )
        for name, n, pd, pt, cd in rows:
            print(f"| {name} | {n} | {pd.mean():.3f} ({pd.min():.3f}) | {pt.mean():.0f} ({pt.max()}) "
                  f"| {cd.mean():.3f} ({cd.min():.3f}) |")  # fmt: skip
