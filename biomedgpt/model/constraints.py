"""Decoding constraints that need no torch: the answer trie, n-gram blocking, and the per-step mask of both.

Kept free of torch so that the ONNX Runtime engine (`biomedgpt.serve`) can decode with the same rules.

- `AnswerTrie`: closed-set decoding as in OFA/BiomedGPT: at every step only tokens that continue one of the
  candidate answers (each ending with eos) are allowed, so the output is always a listed answer.
- `banned_ngram_tokens`: the tokens that would repeat an n-gram already present (fairseq's `no_repeat_ngram_size`).
- `Constraints`: a `DecodeSpec`'s rules as one additive mask per step, for the PyTorch loop and the engines alike.
- `grouped_argmax`: greedy's choice when one answer is spread over many tokens (a location over 1,000 bins).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from biomedgpt.model.decode_spec import DecodeSpec, SpecialIds


class AnswerTrie:
    """A prefix tree over candidate token sequences; `allowed(prefix)` lists the tokens that may follow."""

    def __init__(self, sequences: Iterable[Sequence[int]], *, eos_token_id: int) -> None:
        self.eos_token_id = eos_token_id
        self._root: dict[int, dict] = {}
        self._count = 0
        for seq in sequences:
            seq = list(seq)
            if not seq:
                raise ValueError("an answer in the trie is empty")
            if seq[-1] != eos_token_id:
                seq.append(eos_token_id)
            node = self._root
            for token in seq:
                node = node.setdefault(int(token), {})
            self._count += 1
        if not self._count:
            raise ValueError("the answer trie needs at least one candidate answer")

    def __len__(self) -> int:
        return self._count

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        """Tokens allowed after `prefix` (the tokens generated so far, start token excluded).

        A prefix that left the trie (which constrained decoding never produces) allows only eos, so decoding ends.
        """
        node = self._root
        for token in prefix:
            nxt = node.get(int(token))
            if nxt is None:
                return [self.eos_token_id]
            node = nxt
        return list(node) or [self.eos_token_id]

    def contains(self, sequence: Sequence[int]) -> bool:
        """Whether `sequence` (ending with eos or not) is one of the candidates."""
        seq = list(sequence)
        if not seq or seq[-1] != self.eos_token_id:
            seq.append(self.eos_token_id)
        node = self._root
        for token in seq:
            if int(token) not in node:
                return False
            node = node[int(token)]
        return not node

    def prefix_allowed_tokens_fn(self, *, num_start_tokens: int = 1):
        """An adapter for transformers' `generate(prefix_allowed_tokens_fn=...)` (sequences include the start token)."""

        def fn(batch_id: int, input_ids) -> list[int]:
            return self.allowed([int(t) for t in input_ids[num_start_tokens:]])

        return fn


def banned_ngram_tokens(tokens: Sequence[int], n: int) -> set[int]:
    """Tokens that would complete an n-gram already present in `tokens` (empty when n <= 0 or too short)."""
    if n <= 0 or len(tokens) < n:
        return set()
    prefix = tuple(tokens[len(tokens) - n + 1 :]) if n > 1 else ()
    banned = set()
    for i in range(len(tokens) - n + 1):
        if tuple(tokens[i : i + n - 1]) == prefix:
            banned.add(int(tokens[i + n - 1]))
    return banned


DECODER_PREFIX_MODES = ("prompt", "prompt+eos")
"""How a task's decoder prefix is made from its encoder prompt (a model folder's `serving.json`
`decoder_prefix`): OFA's `--prompt-type prev_output` is "prompt" (the prompt's tokens after `<s>`), `src` is
"prompt+eos" (the same, then `</s>`)."""


def grouped_argmax(logprobs: np.ndarray, grouped: np.ndarray | None) -> int:
    """Greedy's next token when the tokens in `grouped` ((V,) bool) are one choice: the group's total probability
    is weighed against each other token's, and the likeliest token of the winner is taken.

    Why: a mask or a box starts with a location, and the model spreads that location over 1,000 `<bin>` tokens.
    Plain argmax compares `</s>` ("no mask") with each bin alone, so a model 90 % sure that there is a lesion,
    but unsure where to within a few bins, answers "no lesion". Weighing the bins together asks the question the
    model was trained on: is there a location next, or the end? `grouped=None` is plain argmax.
    """
    if grouped is None:
        return int(logprobs.argmax())
    inside = np.where(grouped, logprobs, -np.inf)
    outside = np.where(grouped, -np.inf, logprobs)
    best_outside = int(outside.argmax())
    top = inside.max()
    if not np.isfinite(top):
        return best_outside
    mass = top + np.log(np.exp(inside - top).sum())
    return int(inside.argmax()) if mass >= outside[best_outside] else best_outside


def decoder_prefix(prompt_ids: Sequence[int], mode: str | None, *, bos: int, eos: int) -> list[int]:
    """The tokens forced into the decoder after its start token, from one (unpadded) encoder prompt."""
    if not mode:
        return []
    if mode not in DECODER_PREFIX_MODES:
        raise ValueError(f"unknown decoder_prefix {mode!r}; expected one of {DECODER_PREFIX_MODES}")
    ids = [int(t) for t in prompt_ids]
    if ids and ids[0] == bos:
        ids = ids[1:]
    if mode == "prompt" and ids and ids[-1] == eos:
        ids = ids[:-1]
    return ids


class Constraints:
    """The additive (rows, V) mask of one step, from a `DecodeSpec` and each row's generated tokens: the token
    range (`allowed_tokens`, eos always allowed), `min_new_tokens`, the answer trie and n-gram blocking. The one
    constraint builder: the PyTorch loop and the engines' numpy sequences both apply it."""

    def __init__(self, spec: DecodeSpec, ids: SpecialIds, vocab_size: int) -> None:
        self.spec = spec
        if spec.allowed_tokens is not None:
            allowed = np.asarray(spec.allowed_tokens, dtype=bool).copy()
        else:
            allowed = np.ones(vocab_size, dtype=bool)
            allowed[[ids.pad, ids.bos, ids.decoder_start]] = False
        allowed[ids.eos] = True
        self.base = np.where(allowed, 0.0, -np.inf).astype(np.float32)  # (V,)
        self.no_eos = self.base.copy()
        self.no_eos[ids.eos] = -np.inf

    def __call__(self, generated: int | Sequence[int], rows: list[list[int]]) -> np.ndarray:
        """`generated`: tokens generated so far, for every row or per row; `rows`: each row's tokens so far."""
        if isinstance(generated, int):
            base = self.no_eos if generated < self.spec.min_new_tokens else self.base
            mask = np.broadcast_to(base, (len(rows), base.shape[0]))
        else:
            mask = np.stack([self.no_eos if g < self.spec.min_new_tokens else self.base for g in generated])
        if self.spec.trie is None and self.spec.no_repeat_ngram_size <= 0:
            return mask
        mask = mask.copy()
        for i, tokens in enumerate(rows):
            if self.spec.trie is not None:
                keep = self.spec.trie.allowed(tokens)
                row = np.full_like(mask[i], -np.inf)
                row[keep] = mask[i, keep]
                mask[i] = row
            for token in banned_ngram_tokens(tokens, self.spec.no_repeat_ngram_size):
                mask[i, token] = -np.inf
        return mask
