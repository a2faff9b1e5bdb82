"""One request's decoding, one step at a time: greedy, sampled and beam-search sequences.

A `Sequence` owns the decoder rows of one request (one row; `num_beams` rows for beam search) and turns each
step's logits into the next input tokens. Whoever drives the decoder, whether the fixed batch of
`decoding.decode` or the continuous-batching `scheduler.Scheduler` where requests join and leave at any step,
asks every live sequence the same three things: its `inputs`, `advance(logits)` (which may return how its rows
must be reordered, for beam search), and whether it is `done`. So greedy, sampled, beam and trie-constrained
requests share one batch, and the rules live here once:

- token-range restriction (`allowed_tokens`), the closed-set `AnswerTrie`, `min_new_tokens` and
  `no_repeat_ngram_size`, as one additive mask per row;
- forced decoder prefixes (BiomedGPT's VQA reads the question in the decoder before the answer): the prefix
  conditions, and is neither scored, returned nor seen by the constraints;
- beam search with a length penalty (score / generated length ** penalty, as transformers, whose `generate()`
  the PyTorch loop is tested against);
- sampling with temperature, top-k and top-p (nucleus), reproducible from a seed;
- greedy choice over grouped tokens (`DecodeSpec.grouped_tokens`: all location bins weighed as one choice).
No torch here.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

import numpy as np

from biomedgpt.model.constraints import Constraints, grouped_argmax

if TYPE_CHECKING:
    from biomedgpt.model.decode_spec import DecodeSpec, SpecialIds


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float32, copy=False)
    return logits - logsumexp(logits)[..., None]


def logsumexp(logits: np.ndarray) -> np.ndarray:
    """(..., V) -> (...): one pass over a whole step's rows (the scheduler computes it once per step)."""
    top = logits.max(axis=-1, keepdims=True)
    return (np.log(np.exp(logits - top).sum(axis=-1, keepdims=True)) + top)[..., 0]


class Sequence(abc.ABC):
    """The decoding state of one request over `rows` decoder rows."""

    rows: int = 1

    def __init__(
        self,
        spec: DecodeSpec,
        ids: SpecialIds,
        *,
        constraints: Constraints,
        prefix: list[int] | None = None,
    ) -> None:
        self.spec = spec
        self.ids = ids
        self.constraints = constraints
        self.prefix = list(prefix or [])
        self.steps = 0  # decoder steps taken (prefix included)
        self.done = False
        self.inputs = np.full(self.rows, ids.decoder_start, dtype=np.int64)
        """The token each row feeds to the decoder at the next step."""
        self.emitted: list[int] = []
        """Tokens the last `advance` added to the answer (streaming; beam search emits at the end)."""
        self.finish_reason = "stop"

    @property
    def generated(self) -> int:
        return max(0, self.steps - len(self.prefix))

    def _forced(self) -> int | None:
        return self.prefix[self.steps] if self.steps < len(self.prefix) else None

    @abc.abstractmethod
    def advance(self, logits: np.ndarray, lse: np.ndarray | None = None) -> np.ndarray | None:
        """Take this step's (rows, V) logits (and their (rows,) log-sum-exp, when the caller has it); -> the
        parent row of each row when rows must be reordered."""

    @abc.abstractmethod
    def result(self) -> tuple[list[int], float]:
        """The answer's tokens (eos included when produced) and its score."""


class GreedySequence(Sequence):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.tokens: list[int] = []
        self.score = 0.0

    def _choose(self, logprobs: np.ndarray) -> int:
        return grouped_argmax(logprobs, self.spec.grouped_tokens)

    def advance(self, logits: np.ndarray, lse: np.ndarray | None = None) -> None:
        forced = self._forced()
        self.steps += 1
        self.emitted = []
        if forced is not None:
            self.inputs[0] = forced
            return None
        norm = logsumexp(logits[0]) if lse is None else lse[0]
        logprobs = (logits[0] - norm) + self.constraints(len(self.tokens), [self.tokens])[0]
        token = self._choose(logprobs)
        self.score += float(logprobs[token])
        self.tokens.append(token)
        self.emitted = [token]
        self.inputs[0] = token
        if token == self.ids.eos:
            self.done = True
        elif len(self.tokens) >= self.spec.max_new_tokens:
            self.done, self.finish_reason = True, "length"
        return None

    def result(self) -> tuple[list[int], float]:
        return list(self.tokens), self.score


class SampledSequence(GreedySequence):
    """Sampling from the constrained distribution: temperature, then top-k, then top-p; seeded per sequence."""

    def __init__(self, *args, seed: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rng = np.random.default_rng(seed)

    def _choose(self, logprobs: np.ndarray) -> int:
        spec = self.spec
        scaled = logprobs / max(spec.temperature, 1e-6)
        order = np.argsort(-scaled, kind="stable")
        finite = int(np.isfinite(scaled).sum())
        keep = order[: max(1, min(finite, spec.top_k or finite))]
        probs = np.exp(scaled[keep] - scaled[keep[0]])
        probs /= probs.sum()
        if spec.top_p < 1.0:  # the smallest head of the ranking whose mass reaches top_p
            cut = int(np.searchsorted(np.cumsum(probs), spec.top_p)) + 1
            keep, probs = keep[:cut], probs[:cut] / probs[:cut].sum()
        return int(keep[self.rng.choice(len(keep), p=probs)])


class BeamSequence(Sequence):
    """Beam search over `num_beams` rows (transformers' rules: early stopping off, eos only from the top K)."""

    def __init__(self, *args, **kwargs) -> None:
        self.rows = args[0].num_beams
        super().__init__(*args, **kwargs)
        self.beam_scores = np.full(self.rows, -np.inf, dtype=np.float32)
        self.beam_scores[0] = 0.0  # all beams start identical: expand only the first one
        self.history: list[list[int]] = [[] for _ in range(self.rows)]
        self.finished: list[tuple[float, list[int]]] = []

    def _keep_live_beams(self) -> None:
        """Out of steps: the live beams count as hypotheses."""
        if len(self.finished) < self.rows:
            penalty = self.spec.length_penalty
            for score, tokens in zip(self.beam_scores.tolist(), self.history):
                if score != -np.inf:
                    self.finished.append((score / max(1, len(tokens)) ** penalty, tokens))
            self.finished.sort(key=lambda h: -h[0])
        self.finish_reason = "length"

    def advance(self, logits: np.ndarray, lse: np.ndarray | None = None) -> np.ndarray | None:
        beams, vocab, eos = self.rows, logits.shape[-1], self.ids.eos
        penalty = self.spec.length_penalty
        norm = logsumexp(logits) if lse is None else lse
        logprobs = (logits - norm[:, None]) + self.constraints(self.generated, self.history)
        forced = self._forced()
        if forced is not None:
            logprobs = np.full_like(logprobs, -np.inf)
            logprobs[:, forced] = 0.0
        self.steps += 1
        length = self.steps - len(self.prefix)  # tokens generated once this step's token is added
        candidates = (logprobs + self.beam_scores[:, None]).reshape(-1)
        top = np.argsort(-candidates, kind="stable")[: 2 * beams]
        rows, tokens, scores = [], [], []
        for rank, flat in enumerate(top.tolist()):
            score = float(candidates[flat])
            parent, token = flat // vocab, flat % vocab
            if score == -np.inf:
                break
            if token == eos and length > 0:
                if rank < beams:  # an eos outside the top K beams is not a better hypothesis
                    self.finished.append((score / length**penalty, [*self.history[parent], token]))
                continue
            rows.append(parent)
            tokens.append(token)
            scores.append(score)
            if len(rows) == beams:
                break
        while len(rows) < beams:  # out of candidates: dead beams
            rows.append(0)
            tokens.append(self.ids.pad)
            scores.append(-np.inf)
        self.finished.sort(key=lambda h: -h[0])
        del self.finished[beams:]
        if len(self.finished) == beams:
            # stop when no live beam can beat the worst kept hypothesis
            self.done = max(scores) / max(length, 1) ** penalty <= self.finished[-1][0]
        if self.done:
            self.emitted = self.result()[0]
            return None
        parents = np.asarray(rows, dtype=np.int64)
        self.beam_scores = np.asarray(scores, dtype=np.float32)
        self.inputs = np.asarray(tokens, dtype=np.int64)
        if length > 0:
            self.history = [[*self.history[r], t] for r, t in zip(rows, tokens)]
        else:
            self.history = [list(self.history[r]) for r in rows]
        if length >= self.spec.max_new_tokens:
            self._keep_live_beams()
            self.done = True
            self.emitted = self.result()[0]
        return parents

    def result(self) -> tuple[list[int], float]:
        if not self.finished:
            return [], float("-inf")
        score, tokens = self.finished[0]
        return list(tokens), float(score)


def new_sequence(
    spec: DecodeSpec,
    ids: SpecialIds,
    *,
    constraints: Constraints,
    prefix: list[int] | None = None,
    seed: int | None = None,
) -> Sequence:
    """The sequence type the spec asks for: beam search, sampling, or greedy."""
    if spec.num_beams > 1:
        return BeamSequence(spec, ids, constraints=constraints, prefix=prefix)
    if spec.do_sample:
        return SampledSequence(spec, ids, constraints=constraints, prefix=prefix, seed=seed)
    return GreedySequence(spec, ids, constraints=constraints, prefix=prefix)
