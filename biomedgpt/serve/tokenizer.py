"""A torch- and transformers-free view of the unified tokenizer, for serving.

The training side uses `biomedgpt.tokenization.unified.BiomedGPTTokenizer` (a transformers fast tokenizer); the
server only needs what tasks call (`backend_tokenizer`, `layout`, `decode_text`, `encode_prompt`), which the
`tokenizers` library alone provides from the same `tokenizer.json`. Both give identical ids (tested).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from biomedgpt.tokenization.layout import VocabLayout, layout_for_vocab_size, verify_tokenizer_layout
from tokenizers import Tokenizer


class ServeTokenizer:
    """`tokenizer.json` of a model or export folder behind the interface tasks use."""

    def __init__(self, backend: Tokenizer) -> None:
        self.backend_tokenizer = backend
        self.layout: VocabLayout = layout_for_vocab_size(backend.get_vocab_size(with_added_tokens=True))
        verify_tokenizer_layout(backend, self.layout)
        self.pad_token_id = self.layout.pad_id

    @classmethod
    def from_dir(cls, directory: str | Path) -> ServeTokenizer:
        path = Path(directory) / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer.json in {directory}")
        return cls(Tokenizer.from_file(str(path)))

    def __len__(self) -> int:
        return self.layout.vocab_size

    def encode_prompt(self, text: str) -> list[int]:
        """`<s> BPE(text) </s>` ids, as `BiomedGPTTokenizer.encode_prompt`."""
        if not isinstance(text, str):
            raise TypeError(f"encode_prompt expects a str, got {type(text).__name__}")
        return self.backend_tokenizer.encode(text, add_special_tokens=True).ids

    def decode_text(self, token_ids: Iterable[int] | Any) -> str:
        """Only the text pieces (specials, `<mask>`, codes and bins dropped), as `BiomedGPTTokenizer.decode_text`."""
        first, last = self.layout.text_range
        ids = token_ids.tolist() if hasattr(token_ids, "tolist") else token_ids
        return self.backend_tokenizer.decode(
            [int(t) for t in ids if first <= int(t) <= last], skip_special_tokens=False
        )
