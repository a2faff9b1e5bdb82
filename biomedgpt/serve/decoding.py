"""Decoding settings, and a fixed batch decoded in numpy around any one-step decoder.

The settings are `biomedgpt.model.decode_spec.DecodeSpec`, the one decoding-settings type of the project (the
PyTorch loop, the engines and eval take it); they are imported here for the serving modules.

ONNX Runtime has no generation operator for a custom encoder-decoder, so decoding runs here, with the same
rules as the PyTorch loop (`biomedgpt.model.generation`): token-range restriction, the closed-set
`AnswerTrie`, `min_new_tokens`, `no_repeat_ngram_size`, beam search with a length penalty (score / length **
penalty, as transformers), forced decoder prefixes (`decoder_prefixes`: BiomedGPT's VQA models read the
question again in the decoder before the answer, OFA's `--prompt-type prev_output`), and sampling. The rules
live in `sequences.py`, one request at a time; `decode` drives a fixed batch of them (the export's parity
check), and the server's `scheduler.Scheduler` drives requests that join and leave at any step. Greedy and
beam outputs are tested equal to the PyTorch loop on the same weights (`tests/integration/test_export_onnx.py`).
No torch here.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from biomedgpt.model.constraints import Constraints
from biomedgpt.model.decode_spec import DecodeSpec, SpecialIds
from biomedgpt.serve.sequences import Sequence, log_softmax, logsumexp, new_sequence


class StepDecoder(Protocol):
    """One decoding step over a KV cache the implementation keeps."""

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """tokens (N, 1) int64 -> logits (N, V) float32 of the next token."""

    def reorder(self, rows: np.ndarray) -> None:
        """Keep cache rows `rows` (beam search)."""


__all__ = ["DecodeSpec", "SpecialIds", "StepDecoder", "decode", "log_softmax", "sequences_for"]


def sequences_for(spec: DecodeSpec, ids: SpecialIds, vocab_size: int, batch: int) -> list[Sequence]:
    """One `Sequence` per sample of a batch decoded with `spec` (its prefixes and seeds per sample)."""
    if spec.decoder_prefixes is not None and len(spec.decoder_prefixes) != batch:
        raise ValueError(f"decoder_prefixes has {len(spec.decoder_prefixes)} rows for a batch of {batch}")
    constraints = Constraints(spec, ids, vocab_size)
    prefixes = spec.decoder_prefixes or [None] * batch
    seeds = [None if spec.seed is None else spec.seed + b for b in range(batch)]
    return [
        new_sequence(spec, ids, constraints=constraints, prefix=prefix, seed=seed)
        for prefix, seed in zip(prefixes, seeds)
    ]


def decode(decoder: StepDecoder, *, batch: int, spec: DecodeSpec, ids: SpecialIds, vocab_size: int):
    """-> (sequences (B, L) int64 padded with pad, scores (B,) float32). The decoder holds `batch` rows for
    greedy and sampling, and `batch * num_beams` rows (each sample repeated num_beams times) for beam search."""
    sequences = sequences_for(spec, ids, vocab_size, batch)
    width = sequences[0].rows
    while True:
        logits = decoder.step(np.concatenate([s.inputs for s in sequences])[:, None])
        lse = logsumexp(logits)
        order, moved = np.arange(batch * width), False
        for b, sequence in enumerate(sequences):
            if sequence.done:
                continue
            rows = slice(b * width, (b + 1) * width)
            parents = sequence.advance(logits[rows], lse[rows])
            if parents is not None:
                order[b * width : (b + 1) * width] = b * width + parents
                moved = True
            if sequence.done:
                sequence.inputs = np.full(width, ids.pad, dtype=np.int64)
        if all(s.done for s in sequences):
            break
        if moved:
            decoder.reorder(order)
    results = [s.result() for s in sequences]
    out = np.full((batch, max(1, max(len(tokens) for tokens, _ in results))), ids.pad, dtype=np.int64)
    for b, (tokens, _) in enumerate(results):
        out[b, : len(tokens)] = tokens
    return out, np.asarray([score for _, score in results], dtype=np.float32)
