"""The id layout of the unified vocabulary: specials, text BPE pieces, `<mask>`, image codes, location bins.

Follows OFA's fairseq dictionary (Wang et al., 2022, "OFA: Unifying Architectures, Tasks, and
Modalities", and its `data/dict.txt` + `tasks/ofa_task.py`), which BiomedGPT reuses:

    <s>=0  <pad>=1  </s>=2  <unk>=3 | text pieces | <mask> | <code_0..8191> | <bin_0..999>

OFA's GPT-2 dictionary has 50,260 text pieces, so `<mask>` is 50264, codes are 50265-58456 and bins are
58457-59456 (59,457 ids). Our default BPE (`tokenizers/biomed-bpe-v1`) has 23,571 text pieces so that the
whole vocabulary is exactly 32,768 = 2**15 ids (see that folder's README for why).

Pure Python on purpose: importing this module must not import numpy, torch or transformers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

BOS_TOKEN = "<s>"
PAD_TOKEN = "<pad>"
EOS_TOKEN = "</s>"
UNK_TOKEN = "<unk>"
MASK_TOKEN = "<mask>"
# Order matters: their ids are 0, 1, 2, 3 (fairseq's Dictionary puts them first in this order).
SPECIAL_TOKENS: tuple[str, ...] = (BOS_TOKEN, PAD_TOKEN, EOS_TOKEN, UNK_TOKEN)
NUM_SPECIALS = len(SPECIAL_TOKENS)

OFA_NUM_CODES = 8192
OFA_NUM_BINS = 1000


def code_token(index: int) -> str:
    """The string of image-code token `index`, e.g. `<code_17>`."""
    return f"<code_{index}>"


def bin_token(index: int) -> str:
    """The string of location-bin token `index`, e.g. `<bin_499>`."""
    return f"<bin_{index}>"


def _check_count(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"VocabLayout.{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"VocabLayout.{name} must be >= {minimum}, got {value}")


@dataclass(frozen=True, kw_only=True)
class VocabLayout:
    """Where each kind of token lives in the unified vocabulary (all ranges are inclusive)."""

    num_text: int
    """Number of text BPE pieces, byte alphabet included (ids 4 .. 4 + num_text - 1)."""
    num_codes: int = OFA_NUM_CODES
    """Number of `<code_i>` image-code tokens (OFA: 8192, a VQGAN codebook)."""
    num_bins: int = OFA_NUM_BINS
    """Number of `<bin_i>` location tokens (OFA: 1000 per axis)."""

    def __post_init__(self) -> None:
        _check_count("num_text", self.num_text, 1)
        _check_count("num_codes", self.num_codes, 1)
        # Quantization divides by num_bins - 1, so at least two bins are needed.
        _check_count("num_bins", self.num_bins, 2)

    # --- specials ---------------------------------------------------------------------------------
    @property
    def bos_id(self) -> int:
        return 0

    @property
    def pad_id(self) -> int:
        return 1

    @property
    def eos_id(self) -> int:
        return 2

    @property
    def unk_id(self) -> int:
        return 3

    @property
    def special_ids(self) -> dict[str, int]:
        """The four fixed specials, string -> id."""
        return {token: i for i, token in enumerate(SPECIAL_TOKENS)}

    # --- ranges -----------------------------------------------------------------------------------
    @property
    def text_range(self) -> tuple[int, int]:
        """(first, last) id of the text BPE pieces."""
        return NUM_SPECIALS, NUM_SPECIALS + self.num_text - 1

    @property
    def mask_id(self) -> int:
        return NUM_SPECIALS + self.num_text

    @property
    def code_range(self) -> tuple[int, int]:
        """(first, last) id of `<code_0>` .. `<code_{num_codes-1}>`."""
        first = self.mask_id + 1
        return first, first + self.num_codes - 1

    @property
    def bin_range(self) -> tuple[int, int]:
        """(first, last) id of `<bin_0>` .. `<bin_{num_bins-1}>`."""
        first = self.code_range[1] + 1
        return first, first + self.num_bins - 1

    @property
    def vocab_size(self) -> int:
        return self.bin_range[1] + 1

    # --- conversions ------------------------------------------------------------------------------
    def code_id(self, index: int) -> int:
        """Token id of `<code_{index}>`."""
        _check_index("code", index, self.num_codes)
        return self.code_range[0] + index

    def bin_id(self, index: int) -> int:
        """Token id of `<bin_{index}>`."""
        _check_index("bin", index, self.num_bins)
        return self.bin_range[0] + index

    def is_text(self, token_id: int) -> bool:
        first, last = self.text_range
        return first <= token_id <= last

    def is_code(self, token_id: int) -> bool:
        first, last = self.code_range
        return first <= token_id <= last

    def is_bin(self, token_id: int) -> bool:
        first, last = self.bin_range
        return first <= token_id <= last

    def code_index(self, token_id: int) -> int:
        """Inverse of `code_id`: the i of `<code_i>`; ValueError if `token_id` is not a code."""
        if not self.is_code(token_id):
            first, last = self.code_range
            raise ValueError(f"token id {token_id} is not an image-code token (codes are {first}..{last})")
        return token_id - self.code_range[0]

    def bin_index(self, token_id: int) -> int:
        """Inverse of `bin_id`: the i of `<bin_i>`; ValueError if `token_id` is not a bin."""
        if not self.is_bin(token_id):
            first, last = self.bin_range
            raise ValueError(f"token id {token_id} is not a location-bin token (bins are {first}..{last})")
        return token_id - self.bin_range[0]

    def added_token_strings(self) -> list[str]:
        """`<mask>`, the codes and the bins in id order (the tokens added after the text pieces)."""
        return (
            [MASK_TOKEN]
            + [code_token(i) for i in range(self.num_codes)]
            + [bin_token(i) for i in range(self.num_bins)]
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: inclusive [first, last] ranges, the mask id, the size and the specials."""
        return {
            "text": list(self.text_range),
            "mask": self.mask_id,
            "code": list(self.code_range),
            "bin": list(self.bin_range),
            "vocab_size": self.vocab_size,
            "specials": self.special_ids,
        }


def _check_index(kind: str, index: int, count: int) -> None:
    if isinstance(index, bool) or not isinstance(index, int):
        raise TypeError(f"{kind} index must be an int, got {type(index).__name__} ({index!r})")
    if not 0 <= index < count:
        raise ValueError(f"{kind} index {index} is out of range 0..{count - 1}")


def layout_for_vocab_size(
    vocab_size: int, *, num_codes: int = OFA_NUM_CODES, num_bins: int = OFA_NUM_BINS
) -> VocabLayout:
    """The layout whose total size is `vocab_size` (text pieces = the rest after specials, mask, codes, bins)."""
    fixed = NUM_SPECIALS + 1 + num_codes + num_bins
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__} ({vocab_size!r})")
    if vocab_size <= fixed:
        raise ValueError(
            f"vocab_size {vocab_size} is too small: {NUM_SPECIALS} specials + <mask> + {num_codes} codes"
            f" + {num_bins} bins already take {fixed} ids, leaving no room for text pieces"
        )
    return VocabLayout(num_text=vocab_size - fixed, num_codes=num_codes, num_bins=num_bins)


class BackendTokenizer(Protocol):
    """The two methods of a `tokenizers.Tokenizer` that `verify_tokenizer_layout` needs."""

    def token_to_id(self, token: str) -> int | None: ...

    def get_vocab_size(self, with_added_tokens: bool = True) -> int: ...


def verify_tokenizer_layout(tokenizer: BackendTokenizer, layout: VocabLayout) -> None:
    """Raise RuntimeError, listing the mismatches, unless every special, mask, code and bin id and the
    size of the text block are where `layout` says."""
    problems: list[str] = []
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    if size != layout.vocab_size:
        problems.append(f"vocab size {size} != layout.vocab_size {layout.vocab_size}")
    model_size = tokenizer.get_vocab_size(with_added_tokens=False)
    if model_size != layout.text_range[1] + 1:
        problems.append(
            f"BPE model has {model_size} entries, expected {layout.text_range[1] + 1} (specials + text)"
        )
    expected = {**layout.special_ids}
    expected.update({token: layout.mask_id + i for i, token in enumerate(layout.added_token_strings())})
    for token, token_id in expected.items():
        got = tokenizer.token_to_id(token)
        if got != token_id:
            problems.append(f"{token} has id {got}, expected {token_id}")
            if len(problems) >= 10:
                problems.append("...")
                break
    if problems:
        raise RuntimeError("tokenizer does not match the vocabulary layout: " + "; ".join(problems))


OFA_LAYOUT = VocabLayout(num_text=50260)
"""OFA/BiomedGPT's GPT-2 dictionary: mask 50264, codes 50265..58456, bins 58457..59456, 59,457 ids."""

DEFAULT_LAYOUT = VocabLayout(num_text=23571)
"""Our biomedical BPE (tokenizers/biomed-bpe-v1): 32,768 = 2**15 ids; every id fits int16."""
