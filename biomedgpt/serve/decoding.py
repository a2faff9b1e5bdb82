"""Greedy and beam search in numpy around any one-step decoder: the loop the ONNX Runtime engine runs.

ONNX Runtime has no generation operator for a custom encoder-decoder (DESIGN.md section 6), so decoding runs
here, with the same rules as the PyTorch loop (`biomedgpt.model.generation`): token-range restriction, the
closed-set `AnswerTrie`, `min_new_tokens`, `no_repeat_ngram_size`, beam search with a length penalty
(score / length ** penalty, as transformers), and forced decoder prefixes (`decoder_prefixes`: BiomedGPT's
VQA models read the question again in the decoder before the answer, OFA's `--prompt-type prev_output`). Greedy and beam outputs are tested equal to the PyTorch loop on
the same weights (`tests/integration/test_export_onnx.py`). No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from biomedgpt.model.constraints import AnswerTrie, banned_ngram_tokens


@dataclass(kw_only=True)
class DecodeSpec:
    """How to decode one batch (the torch-free twin of `biomedgpt.model.generation.DecodeOptions`)."""

    max_new_tokens: int = 64
    min_new_tokens: int = 0
    num_beams: int = 1
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    allowed_tokens: np.ndarray | None = None
    """(V,) bool: tokens that may be generated; None = all but pad, bos and the start token."""
    trie: AnswerTrie | None = None
    decoder_prefixes: list[list[int]] | None = None
    """Per sample, tokens forced after the start token before generation begins: conditioning only (not
    scored, not returned, unseen by the constraints; `max_new_tokens` counts the tokens after them)."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
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


class StepDecoder(Protocol):
    """One decoding step over a KV cache the implementation keeps."""

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """tokens (N, 1) int64 -> logits (N, V) float32 of the next token."""

    def reorder(self, rows: np.ndarray) -> None:
        """Keep cache rows `rows` (beam search)."""


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float32, copy=False)
    top = logits.max(axis=-1, keepdims=True)
    shifted = logits - top
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class _Constraints:
    """The additive (N, V) mask of one step, from the spec and each row's tokens so far."""

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

    def __call__(self, step: int | list[int], rows: list[list[int]]) -> np.ndarray:
        """`step`: tokens generated so far, for all rows or per row."""
        if isinstance(step, int):
            base = self.no_eos if step < self.spec.min_new_tokens else self.base
            mask = np.broadcast_to(base, (len(rows), base.shape[0]))
        else:
            mask = np.stack([self.no_eos if s < self.spec.min_new_tokens else self.base for s in step])
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


def decode(decoder: StepDecoder, *, batch: int, spec: DecodeSpec, ids: SpecialIds, vocab_size: int):
    """-> (sequences (B, L) int64 padded with pad, scores (B,) float32). The decoder holds `batch` rows for
    greedy and `batch * num_beams` rows (each sample repeated num_beams times) for beam search."""
    if spec.decoder_prefixes is not None and len(spec.decoder_prefixes) != batch:
        raise ValueError(f"decoder_prefixes has {len(spec.decoder_prefixes)} rows for a batch of {batch}")
    if spec.num_beams == 1:
        return _greedy(decoder, batch, spec, ids, vocab_size)
    return _beam_search(decoder, batch, spec, ids, vocab_size)


class _Prefixes:
    """Forced decoder prefixes: which rows are still reading theirs at a step, and the token each must take."""

    def __init__(self, prefixes: list[list[int]] | None, batch: int) -> None:
        self.prefixes = prefixes or [[] for _ in range(batch)]
        self.lengths = [len(p) for p in self.prefixes]
        self.longest = max(self.lengths, default=0)

    def force(self, step: int, logprobs: np.ndarray, rows_per_sample: int = 1) -> np.ndarray:
        """Rows still in their prefix at `step` may take only the prefix token, at no cost."""
        if step >= self.longest:
            return logprobs
        logprobs = logprobs.copy()
        for b, prefix in enumerate(self.prefixes):
            if step < len(prefix):
                block = slice(b * rows_per_sample, (b + 1) * rows_per_sample)
                logprobs[block] = -np.inf
                logprobs[block, prefix[step]] = 0.0
        return logprobs


def _greedy(decoder: StepDecoder, batch: int, spec: DecodeSpec, ids: SpecialIds, vocab: int):
    constraints = _Constraints(spec, ids, vocab)
    prefixes = _Prefixes(spec.decoder_prefixes, batch)
    start = np.asarray(prefixes.lengths)  # the step at which each row begins to generate
    tokens = np.full((batch, 1), ids.decoder_start, dtype=np.int64)
    out = np.full((batch, spec.max_new_tokens), ids.pad, dtype=np.int64)
    scores = np.zeros(batch, dtype=np.float32)
    done = np.zeros(batch, dtype=bool)
    written = np.zeros(batch, dtype=np.int64)
    rows: list[list[int]] = [[] for _ in range(batch)]
    track = spec.trie is not None or spec.no_repeat_ngram_size > 0
    for step in range(prefixes.longest + spec.max_new_tokens):
        generated = step - start  # (B,) tokens generated so far; negative while reading the prefix
        free = generated >= 0
        mask = constraints(step if not prefixes.longest else [max(0, int(g)) for g in generated], rows)
        logprobs = prefixes.force(step, log_softmax(decoder.step(tokens)) + mask)  # (B, V)
        next_tokens = logprobs.argmax(axis=-1)
        best = logprobs[np.arange(batch), next_tokens]
        writing = free & ~done
        next_tokens = np.where(done, ids.pad, next_tokens)
        scores += np.where(writing, best, 0.0).astype(np.float32)
        out[writing, generated[writing]] = next_tokens[writing]
        written += writing
        done |= writing & ((next_tokens == ids.eos) | (generated + 1 >= spec.max_new_tokens))
        if track:
            for i in np.flatnonzero(writing).tolist():
                rows[i].append(int(next_tokens[i]))
        if done.all():
            break
        tokens = next_tokens[:, None].astype(np.int64)
    return out[:, : max(1, int(written.max()))], scores


def _beam_search(decoder: StepDecoder, batch: int, spec: DecodeSpec, ids: SpecialIds, vocab: int):
    beams = spec.num_beams
    rows_n = batch * beams
    constraints = _Constraints(spec, ids, vocab)
    prefixes = _Prefixes(spec.decoder_prefixes, batch)
    start = prefixes.lengths  # per sample: the step at which its beams begin to generate
    beam_scores = np.zeros((batch, beams), dtype=np.float32)
    beam_scores[:, 1:] = -np.inf  # all beams start identical: expand only the first one at step 0
    beam_scores = beam_scores.reshape(-1)
    tokens = np.full((rows_n, 1), ids.decoder_start, dtype=np.int64)
    history: list[list[int]] = [[] for _ in range(rows_n)]  # generated tokens (prefixes excluded)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
    done = [False] * batch

    def keep_live_beams(b: int) -> None:
        """A sample out of steps: its live beams count as hypotheses."""
        if len(finished[b]) < beams:
            for row in range(b * beams, (b + 1) * beams):
                score = float(beam_scores[row])
                if score != -np.inf:
                    finished[b].append(
                        (score / max(1, len(history[row])) ** spec.length_penalty, history[row])
                    )
            finished[b].sort(key=lambda h: -h[0])

    for step in range(prefixes.longest + spec.max_new_tokens):
        generated = [max(0, step - start[r // beams]) for r in range(rows_n)] if prefixes.longest else step
        logprobs = log_softmax(decoder.step(tokens)) + constraints(generated, history)  # (N, V)
        logprobs = prefixes.force(step, logprobs, rows_per_sample=beams)
        candidates = (logprobs + beam_scores[:, None]).reshape(batch, beams * vocab)
        top_ids = np.argsort(-candidates, axis=-1, kind="stable")[:, : 2 * beams]  # (B, 2K)
        top_scores = np.take_along_axis(candidates, top_ids, axis=-1)
        next_rows, next_tokens, next_scores = [], [], []
        for b in range(batch):
            length = step + 1 - start[b]  # tokens generated once this step's token is added
            kept = 0
            for rank, (score, flat) in enumerate(zip(top_scores[b].tolist(), top_ids[b].tolist())):
                parent, token = b * beams + flat // vocab, flat % vocab
                if done[b] or score == -np.inf:
                    break
                if token == ids.eos and length > 0:
                    if rank < beams:  # an eos outside the top K beams is not a better hypothesis
                        finished[b].append((score / length**spec.length_penalty, [*history[parent], token]))
                    continue
                next_rows.append(parent)
                next_tokens.append(token)
                next_scores.append(score)
                kept += 1
                if kept == beams:
                    break
            while kept < beams:  # sample finished or out of candidates: pad with dead beams
                next_rows.append(b * beams)
                next_tokens.append(ids.pad)
                next_scores.append(-np.inf)
                kept += 1
            finished[b].sort(key=lambda h: -h[0])
            del finished[b][beams:]
            if not done[b] and len(finished[b]) == beams:
                best_alive = max(next_scores[-beams:])
                # transformers' default (early_stopping=False): stop when no live beam can beat the worst kept one
                done[b] = best_alive / length**spec.length_penalty <= finished[b][-1][0]
        if all(done):
            break
        decoder.reorder(np.asarray(next_rows, dtype=np.int64))
        beam_scores = np.asarray(next_scores, dtype=np.float32)
        tokens = np.asarray(next_tokens, dtype=np.int64)[:, None]
        history = [
            [*history[r], t] if step >= start[i // beams] else history[r]
            for i, (r, t) in enumerate(zip(next_rows, next_tokens))
        ]
        for b in range(batch):
            if not done[b] and step + 1 - start[b] >= spec.max_new_tokens:
                keep_live_beams(b)
                done[b] = True
        if all(done):
            break

    for b in range(batch):
        if not done[b]:
            keep_live_beams(b)
    best = [finished[b][0] if finished[b] else (-np.inf, []) for b in range(batch)]
    width = max(1, max(len(h[1]) for h in best))
    out = np.full((batch, width), ids.pad, dtype=np.int64)
    for b, (_, seq) in enumerate(best):
        out[b, : len(seq)] = seq
    return out, np.asarray([h[0] for h in best], dtype=np.float32)
