"""Decoding settings, in one type that needs no torch: `DecodeSpec`, and the special ids decoding uses.

The PyTorch loop (`biomedgpt.model.generation.generate`) and the serving engines' numpy sequences
(`biomedgpt.serve.sequences`, driven by the scheduler) take the same `DecodeSpec`; the run config's
`generation:` section (`biomedgpt.model.run_config.GenerationConfig`) becomes one with `DecodeSpec.from_config`.
The constraints it describes are applied by `biomedgpt.model.constraints.Constraints`, for both loops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from biomedgpt.model.constraints import AnswerTrie


@dataclass(kw_only=True)
class DecodeSpec:
    """How to decode: greedy, beam search or sampling, and the constraints (the one decoding-settings type: the
    PyTorch loop, the numpy sequences of the engines and eval all take it)."""

    max_new_tokens: int = 64
    min_new_tokens: int = 0
    num_beams: int = 1
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    allowed_tokens: np.ndarray | None = None
    """(V,) bool: tokens that may be generated; None = all but pad, bos and the start token."""
    trie: AnswerTrie | None = None
    grouped_tokens: np.ndarray | None = None
    """(V,) bool: tokens greedy decoding weighs as one choice (`constraints.grouped_argmax`: a location is spread
    over 1,000 bins, so their total probability is compared with `</s>`'s); None = plain argmax. The task sets it
    (`Task.grouped_token_mask`); sampling and beam search already weigh probability mass and ignore it."""
    decoder_prefixes: list[list[int]] | None = None
    """Per sample, tokens forced after the start token before generation begins: conditioning only (not
    scored, not returned, unseen by the constraints; `max_new_tokens` counts the tokens after them)."""
    do_sample: bool = False
    """Sample (temperature, top_k, top_p) instead of taking the most likely token; beam search never samples."""
    temperature: float = 1.0
    top_k: int = 0
    """Sample among the k most likely tokens (0 = all)."""
    top_p: float = 1.0
    """Sample among the most likely tokens whose probabilities sum to top_p (1 = all)."""
    seed: int | None = None
    """The same seed gives the same tokens (sample b of a batch uses seed + b)."""

    @classmethod
    def from_config(cls, generation: Any, **overrides: Any) -> DecodeSpec:
        """From a run config's `generation:` section (`GenerationConfig`), any field overridden."""
        names = ("max_new_tokens", "min_new_tokens", "num_beams", "length_penalty", "no_repeat_ngram_size")
        return cls(**{**{name: getattr(generation, name) for name in names}, **overrides})

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(f"min_new_tokens must be in 0..max_new_tokens, got {self.min_new_tokens}")
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {self.num_beams}")


@dataclass(frozen=True, kw_only=True)
class SpecialIds:
    pad: int
    bos: int
    eos: int
    decoder_start: int
