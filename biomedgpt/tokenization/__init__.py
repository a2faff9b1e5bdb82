"""The unified tokenizer: text BPE + `<mask>` + `<code_i>` + `<bin_i>`, and location helpers.

Only light, pure-Python pieces are exported here (the id layout, decoding range masks, location
quantization); importing this package never imports torch or transformers. The Hugging Face tokenizer
class lives in `biomedgpt.tokenization.unified` (it imports transformers).
"""

from biomedgpt.tokenization.layout import (
    DEFAULT_LAYOUT,
    OFA_LAYOUT,
    SPECIAL_TOKENS,
    VocabLayout,
    bin_token,
    code_token,
    layout_for_vocab_size,
)
from biomedgpt.tokenization.locations import (
    bins_to_box,
    bins_to_point,
    bins_to_polygon,
    bins_to_text,
    bins_to_token_ids,
    box_to_bins,
    box_to_text,
    point_to_bins,
    point_to_text,
    polygon_to_bins,
    polygon_to_text,
    text_to_bins,
    text_to_box,
    token_ids_to_bins,
)
from biomedgpt.tokenization.paths import default_tokenizer_dir
from biomedgpt.tokenization.ranges import ALLOWED_KINDS, allowed_token_mask

__all__ = [
    "ALLOWED_KINDS",
    "DEFAULT_LAYOUT",
    "OFA_LAYOUT",
    "SPECIAL_TOKENS",
    "VocabLayout",
    "allowed_token_mask",
    "bin_token",
    "bins_to_box",
    "bins_to_point",
    "bins_to_polygon",
    "bins_to_text",
    "bins_to_token_ids",
    "box_to_bins",
    "box_to_text",
    "code_token",
    "default_tokenizer_dir",
    "layout_for_vocab_size",
    "point_to_bins",
    "point_to_text",
    "polygon_to_bins",
    "polygon_to_text",
    "text_to_bins",
    "text_to_box",
    "token_ids_to_bins",
]
