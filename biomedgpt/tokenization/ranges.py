"""Boolean masks over the unified vocabulary: which ids a decoding step may emit for a kind of output.

Decoding constraints are the fix for a known trap in OFA ports: image-code tokens leaking into
captions when generation is not restricted to text tokens. OFA itself does the same through its
`constraint_range` argument (`models/sequence_generator.py`), which sets logits outside a range to -inf.
A mask here is True where a token is allowed; apply it as `logits[..., ~mask] = -inf`.

Rules: `</s>` is always allowed (every output must be able to end); `<pad>`, `<s>`, `<unk>` and `<mask>`
are never allowed (they are inputs or bookkeeping, never outputs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from biomedgpt.tokenization.layout import VocabLayout

if TYPE_CHECKING:
    import numpy as np

ALLOWED_KINDS: tuple[str, ...] = ("text", "bins", "codes", "any")
"""The kinds `allowed_token_mask` knows: text pieces, location bins, image codes, or all three."""


def allowed_token_mask(layout: VocabLayout, kind: str) -> np.ndarray:
    """A `(layout.vocab_size,)` bool array, True where a token of `kind` (or `</s>`) may be generated."""
    import numpy as np

    if kind not in ALLOWED_KINDS:
        raise ValueError(f"unknown token kind {kind!r}; expected one of {', '.join(ALLOWED_KINDS)}")
    mask = np.zeros(layout.vocab_size, dtype=bool)
    ranges = {
        "text": [layout.text_range],
        "bins": [layout.bin_range],
        "codes": [layout.code_range],
        "any": [layout.text_range, layout.code_range, layout.bin_range],
    }[kind]
    for first, last in ranges:
        mask[first : last + 1] = True
    mask[layout.eos_id] = True
    return mask
