"""`BiomedGPTTokenizer`: the unified vocabulary (text BPE + `<mask>` + `<code_i>` + `<bin_i>`) as a
transformers fast tokenizer.

A thin subclass of `PreTrainedTokenizerFast` (transformers 5: `TokenizersBackend`) that adds the
OFA/BiomedGPT id layout (`layout.VocabLayout`) and task helpers. It defines no `__init__`, so
`from_pretrained` loads `tokenizer.json` directly, and it saves and loads like any fast tokenizer. Text is
encoded as in OFA's `encode_text`: `<s> BPE(text) </s>`, with prompts written with their leading space
(` what does the image describe?`).

This module imports transformers; `biomedgpt.tokenization` itself stays light.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from transformers import PreTrainedTokenizerFast

from biomedgpt.tokenization.layout import VocabLayout, layout_for_vocab_size, verify_tokenizer_layout
from biomedgpt.tokenization.locations import bins_to_token_ids
from biomedgpt.tokenization.paths import DEFAULT_TOKENIZER_NAME, default_tokenizer_dir

__all__ = ["BiomedGPTTokenizer", "default_tokenizer_dir", "register_auto_tokenizer"]


def _as_int_list(token_ids: Any) -> list[int]:
    """Accept a list, tuple, numpy array or torch tensor of ids (1-D)."""
    if hasattr(token_ids, "tolist"):
        token_ids = token_ids.tolist()
    return [int(t) for t in token_ids]


class BiomedGPTTokenizer(PreTrainedTokenizerFast):
    """Fast tokenizer over the unified vocabulary; `layout` says where each kind of token lives."""

    _layout_cache: tuple[int, VocabLayout] | None = None

    @classmethod
    def load_default(cls, name: str = DEFAULT_TOKENIZER_NAME, **kwargs: Any) -> BiomedGPTTokenizer:
        """Load the committed asset (`tokenizers/biomed-bpe-v1`), found by `paths.default_tokenizer_dir`."""
        tokenizer = cls.from_pretrained(str(default_tokenizer_dir(name)), **kwargs)
        _ = tokenizer.layout  # verify now, not at first use
        return tokenizer

    @property
    def layout(self) -> VocabLayout:
        """The layout implied by `len(self)`, verified against the backend (RuntimeError if they disagree)."""
        size = len(self)
        if self._layout_cache is None or self._layout_cache[0] != size:
            layout = layout_for_vocab_size(size)
            verify_tokenizer_layout(self.backend_tokenizer, layout)
            self._layout_cache = (size, layout)
        return self._layout_cache[1]

    def encode_prompt(self, text: str) -> list[int]:
        """`<s> BPE(text) </s>` ids; BiomedGPT prompts start with a space (` what does the image describe?`)."""
        if not isinstance(text, str):
            raise TypeError(f"encode_prompt expects a str, got {type(text).__name__}")
        return self.backend_tokenizer.encode(text, add_special_tokens=True).ids

    def decode_text(self, token_ids: Iterable[int] | Any) -> str:
        """Decode only the text pieces: specials, `<mask>`, codes and bins are dropped; spaces kept as is."""
        first, last = self.layout.text_range
        text_ids = [t for t in _as_int_list(token_ids) if first <= t <= last]
        return self.backend_tokenizer.decode(text_ids, skip_special_tokens=False)

    def code_ids(self, codes: Iterable[int] | Any) -> list[int]:
        """Image-code indices (0..num_codes-1) -> `<code_i>` ids."""
        layout = self.layout
        return [layout.code_id(c) for c in _as_int_list(codes)]

    def code_indices(self, token_ids: Iterable[int] | Any) -> list[int]:
        """`<code_i>` ids -> indices; ValueError naming the first id that is not a code."""
        layout = self.layout
        return [layout.code_index(t) for t in _as_int_list(token_ids)]

    def bin_ids(self, bins: Iterable[int] | Any) -> list[int]:
        """Location-bin indices (0..num_bins-1) -> `<bin_i>` ids."""
        return bins_to_token_ids(_as_int_list(bins), self.layout)


def register_auto_tokenizer(config_class: type) -> None:
    """Map a model config class to `BiomedGPTTokenizer` in `AutoTokenizer` (call it where the config lives).

    Without it AutoTokenizer still loads our assets, as a plain `PreTrainedTokenizerFast`.
    """
    from transformers import AutoTokenizer

    AutoTokenizer.register(config_class, tokenizer_class=BiomedGPTTokenizer, exist_ok=True)
