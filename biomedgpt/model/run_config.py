"""Run-config sections owned by the model: which model to build (`model:`) and how to decode (`generation:`).

Plain dataclasses, no torch: the CLI resolves configs without importing the model. The named
sizes follow BiomedGPT/OFA (Zhang et al. 2024, "A generalist vision-language foundation model
for diverse biomedical tasks"; Wang et al. 2022, OFA).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from biomedgpt.config import check

Arch = Literal["tiny", "small", "medium", "base", "large"]
LocationInit = Literal["random", "sinusoidal"]
Constraint = Literal["none", "text", "bins", "codes"]


@dataclass(kw_only=True)
class ModelConfig:
    """The `model:` section: architecture size, input geometry, regularization, initial weights."""

    arch: Arch = "tiny"
    """Named size: tiny (tests), small (4+4 layers, d256), medium (4+4, d512), base (6+6, d768), large (12+12, d1024)."""
    vocab_size: int | None = None
    """Size of the unified vocabulary (text + <mask> + <code_i> + <bin_i>); null takes the tokenizer's."""
    image_size: int = 256
    """Side of the square input image in pixels; the stem has stride 16 (256 px -> 256 image tokens). 16..1024, a multiple of 16."""
    dropout: float = 0.1
    """Dropout on embeddings and on residual/FFN outputs; in [0, 1)."""
    attention_dropout: float = 0.0
    """Dropout on attention probabilities; in [0, 1)."""
    drop_path_rate: float = 0.0
    """Stochastic depth: drop-path probability of the last layer, rising linearly from 0; in [0, 1)."""
    max_source_positions: int = 1024
    """Most text tokens the encoder reads (its absolute position table); image tokens have their own 2-D positions."""
    max_target_positions: int = 1024
    """Most tokens the decoder reads or writes (its absolute position table)."""
    init_from: str | None = None
    """Weights to start from: a checkpoint folder written by biomedgpt; null for random initialization."""
    location_init: LocationInit = "random"
    """How a fresh model's `<bin_i>` embeddings start: random (as every other token), or sinusoidal (sinusoids of
    the bin's value, so neighbouring locations start close; the output layer is tied, so a likely bin makes its
    neighbours likely too). Ignored with init_from."""

    def __post_init__(self) -> None:
        check(
            self.vocab_size is None or self.vocab_size > 0,
            "vocab_size",
            f"must be > 0, got {self.vocab_size}",
        )
        check(
            16 <= self.image_size <= 1024 and self.image_size % 16 == 0,
            "image_size",
            f"must be a multiple of 16 in 16..1024 (the stem's stride is 16), got {self.image_size}",
        )
        for name, value in (
            ("dropout", self.dropout),
            ("attention_dropout", self.attention_dropout),
            ("drop_path_rate", self.drop_path_rate),
        ):
            check(0.0 <= value < 1.0, name, f"must be in [0, 1), got {value}")
        for name, value in (
            ("max_source_positions", self.max_source_positions),
            ("max_target_positions", self.max_target_positions),
        ):
            check(value > 0, name, f"must be > 0, got {value}")
        check(self.init_from is None or self.init_from != "", "init_from", "must be a path or null, got ''")


@dataclass(kw_only=True)
class GenerationConfig:
    """The `generation:` section: how outputs are decoded (greedy or beam, lengths, token constraint)."""

    num_beams: int = 1
    """Beam width; 1 is greedy decoding. 1..64."""
    max_new_tokens: int = 64
    """Most tokens written after the BOS token; at least 1."""
    min_new_tokens: int = 0
    """EOS is blocked until this many tokens are written; at most max_new_tokens."""
    length_penalty: float = 1.0
    """Beam scores are divided by length ** length_penalty: above 1 favours longer outputs, below 1 shorter."""
    no_repeat_ngram_size: int = 0
    """Forbid repeating any n-gram of this size; 0 turns it off."""
    constraint: Constraint = "text"
    """Tokens decoding may emit: none (the whole vocabulary), text (text pieces only: no <code>/<bin> leaking into captions), bins (locations), codes (image codes)."""

    def __post_init__(self) -> None:
        check(1 <= self.num_beams <= 64, "num_beams", f"must be in 1..64, got {self.num_beams}")
        check(self.max_new_tokens >= 1, "max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        check(
            0 <= self.min_new_tokens <= self.max_new_tokens,
            "min_new_tokens",
            f"must be in 0..max_new_tokens ({self.max_new_tokens}), got {self.min_new_tokens}",
        )
        check(
            math.isfinite(self.length_penalty),
            "length_penalty",
            f"must be a finite number, got {self.length_penalty}",
        )
        check(
            self.no_repeat_ngram_size >= 0,
            "no_repeat_ngram_size",
            f"must be >= 0, got {self.no_repeat_ngram_size}",
        )
