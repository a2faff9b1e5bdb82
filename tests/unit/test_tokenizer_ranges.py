"""Decoding range masks over the unified vocabulary (the guard against codes leaking into captions)."""

from __future__ import annotations

import numpy as np
import pytest

from biomedgpt.tokenization.layout import DEFAULT_LAYOUT, OFA_LAYOUT, VocabLayout
from biomedgpt.tokenization.ranges import ALLOWED_KINDS, allowed_token_mask


@pytest.mark.parametrize(
    "layout", [DEFAULT_LAYOUT, OFA_LAYOUT, VocabLayout(num_text=300, num_codes=16, num_bins=10)]
)
def test_masks_partition_the_vocabulary(layout) -> None:
    masks = {kind: allowed_token_mask(layout, kind) for kind in ALLOWED_KINDS}
    for mask in masks.values():
        assert mask.dtype == np.bool_ and mask.shape == (layout.vocab_size,)
        assert mask[layout.eos_id]  # every output can end
        for never in (layout.bos_id, layout.pad_id, layout.unk_id, layout.mask_id):
            assert not mask[never]
    ids = np.arange(layout.vocab_size)
    is_text = (ids >= layout.text_range[0]) & (ids <= layout.text_range[1])
    is_code = (ids >= layout.code_range[0]) & (ids <= layout.code_range[1])
    is_bin = (ids >= layout.bin_range[0]) & (ids <= layout.bin_range[1])
    is_eos = ids == layout.eos_id
    np.testing.assert_array_equal(masks["text"], is_text | is_eos)
    np.testing.assert_array_equal(masks["codes"], is_code | is_eos)
    np.testing.assert_array_equal(masks["bins"], is_bin | is_eos)
    np.testing.assert_array_equal(masks["any"], is_text | is_code | is_bin | is_eos)


def test_text_mask_excludes_every_code_and_bin() -> None:
    mask = allowed_token_mask(DEFAULT_LAYOUT, "text")
    assert not mask[DEFAULT_LAYOUT.code_range[0] :].any()
    assert mask.sum() == DEFAULT_LAYOUT.num_text + 1
    assert allowed_token_mask(DEFAULT_LAYOUT, "bins").sum() == 1000 + 1
    assert allowed_token_mask(DEFAULT_LAYOUT, "codes").sum() == 8192 + 1


def test_mask_applies_to_logits() -> None:
    logits = np.zeros(DEFAULT_LAYOUT.vocab_size, dtype=np.float32)
    logits[DEFAULT_LAYOUT.code_id(3)] = 10.0  # a code would win unconstrained
    logits[DEFAULT_LAYOUT.text_range[0] + 7] = 1.0
    logits[~allowed_token_mask(DEFAULT_LAYOUT, "text")] = -np.inf
    assert int(logits.argmax()) == DEFAULT_LAYOUT.text_range[0] + 7


def test_unknown_kind_is_named() -> None:
    with pytest.raises(
        ValueError, match=r"unknown token kind 'image'; expected one of text, bins, codes, any"
    ):
        allowed_token_mask(DEFAULT_LAYOUT, "image")
