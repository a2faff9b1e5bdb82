"""Decoding constraints that need no torch: the answer trie and n-gram blocking.

Kept free of torch so that the ONNX Runtime engine (`biomedgpt.serve`) can decode with the same rules.

- `AnswerTrie`: closed-set decoding as in OFA/BiomedGPT: at every step only tokens that continue one of the
  candidate answers (each ending with eos) are allowed, so the output is always a listed answer.
- `banned_ngram_tokens`: the tokens that would repeat an n-gram already present (fairseq's `no_repeat_ngram_size`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


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
