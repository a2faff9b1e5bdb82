"""Iteration-level (continuous) batching: requests join the running decode batch at any step and leave it the
step they finish.

Each request becomes a `sequences.Sequence` over one or more decoder rows (beam search: one per beam). Rows
live in fixed KV slots (`KVSlots`): per decoder layer, self-attention keys and values, and the cross-attention
keys and values of the row's source, each `(rows, heads, width, head_dim)`, allocated once and grown only when
a longer sequence or source arrives. Running rows are kept packed at the front, so each step feeds the
decoder graph contiguous views of the slots, with no copy; the graph masks each row's unused cache columns and
returns only the new keys and values, which are written into the row's next column.

One step of the loop:
1. admit waiting requests while the limits allow (`max_rows` rows running, `max_tokens` KV positions
   reserved), and run their encoder passes together in one batch;
2. run one decoder step over every running row, whatever its request's task, length or decoding mode;
3. let each sequence take its logits (greedy, sampled, beam and trie-constrained requests coexist), stream
   the tokens it emitted, and free the slots of those that finished or whose client has gone.

`run` decodes a list of jobs to completion in the calling thread (the engine's `run`, eval, the demo);
`start` runs the same loop in a thread for the server, fed through `submit`. No torch here: the model comes
in as a `StepModel` (ONNX Runtime sessions, or the PyTorch modules behind the same two calls).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from biomedgpt.serve.sequences import Sequence, logsumexp

log = logging.getLogger(__name__)


class StepModel(Protocol):
    """The two calls the scheduler makes (the exported graphs' signatures, `biomedgpt.model.graphs`)."""

    num_layers: int
    num_heads: int
    head_dim: int
    max_target_positions: int
    image_size: int

    def encode(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, pixels: np.ndarray, patch_masks: np.ndarray
    ) -> list[np.ndarray]:
        """-> [encoder_attention_bias (B, S), cross_position_keys (1, H, S, hd), cross k/v per layer (B, H, S, hd)];
        `patch_masks` (B,) bool: False for a sample without an image (zeros in `pixels`, masked as OFA masks it)."""

    def decode_step(
        self,
        input_ids: np.ndarray,
        cache_lengths: np.ndarray,
        encoder_attention_bias: np.ndarray,
        cross_position_keys: np.ndarray,
        past: list[np.ndarray],
    ) -> list[np.ndarray]:
        """-> [logits (N, V), new self k/v per layer (N, H, 1, hd)]; `past`: per layer self k, v, cross k, v."""


class QueueFull(RuntimeError):
    """More requests are waiting than the queue holds: the server answers 503 with Retry-After."""


@dataclass(eq=False)
class Job:
    """One request: its encoder inputs, its sequence, and where its tokens and result go."""

    input_ids: np.ndarray  # (T,) int64, the prompt with <s> and </s>
    pixels: np.ndarray | None  # (3, S, S) float32; None: a text-only request
    sequence: Sequence
    on_tokens: Callable[[list[int]], None] | None = None
    """Called from the scheduler's thread with the tokens each step added (streaming)."""
    on_done: Callable[[Job], None] | None = None
    """Called from the scheduler's thread once the job finished, failed or was cancelled."""
    cancelled: bool = False
    error: BaseException | None = None
    enqueued: float = field(default_factory=time.perf_counter)
    started: float | None = None
    finished: float | None = None
    first_token: float | None = None
    slots: np.ndarray | None = None
    batch_rows: int = 0
    """The most rows decoded together in one step while this job ran."""

    @property
    def reserved_tokens(self) -> int:
        seq = self.sequence
        return seq.rows * (len(seq.prefix) + seq.spec.max_new_tokens)

    def cancel(self) -> None:
        """Stop decoding this job (its client has gone): its slots are freed at the next step."""
        self.cancelled = True


@dataclass(frozen=True)
class SchedulerLimits:
    max_rows: int = 32
    """Most decoder rows running at once (a beam-search request holds one row per beam)."""
    max_tokens: int = 16384
    """Most KV positions reserved by running requests (rows x (prefix + max_new_tokens))."""
    max_queue: int = 64
    """Most requests waiting to be admitted; beyond it `submit` raises QueueFull."""


class KVSlots:
    """Per-row KV caches and encoder state for up to `rows` decoder rows, packed at the front."""

    def __init__(self, model: StepModel, rows: int, *, width: int = 64, source: int = 0) -> None:
        self.model = model
        self.capacity = rows
        self.width = 0
        self.source = 0
        self.used = 0
        self.lengths = np.zeros(rows, dtype=np.int64)
        self.self_kv: list[np.ndarray] = []
        self.cross_kv: list[np.ndarray] = []
        self.bias = np.zeros((rows, 0), dtype=np.float32)
        self.position_keys = np.zeros((1, model.num_heads, 0, model.head_dim), dtype=np.float32)
        self._grow(width=width, source=source)

    def _grow(self, *, width: int | None = None, source: int | None = None) -> None:
        m = self.model
        if width is not None and width > self.width:
            new = [
                np.zeros((self.capacity, m.num_heads, width, m.head_dim), np.float32)
                for _ in range(2 * m.num_layers)
            ]
            for old, fresh in zip(self.self_kv, new):
                fresh[:, :, : self.width] = old
            self.self_kv, self.width = new, width
        if source is not None and source > self.source:
            new = [
                np.zeros((self.capacity, m.num_heads, source, m.head_dim), np.float32)
                for _ in range(2 * m.num_layers)
            ]
            for old, fresh in zip(self.cross_kv, new):
                fresh[:, :, : self.source] = old
            bias = np.full((self.capacity, source), -np.inf, dtype=np.float32)
            bias[:, : self.source] = self.bias
            keys = np.zeros((1, m.num_heads, source, m.head_dim), dtype=np.float32)
            keys[:, :, : self.source] = self.position_keys
            self.cross_kv, self.bias, self.position_keys, self.source = new, bias, keys, source

    def ensure_width(self, needed: int) -> None:
        """Room for `needed` cache positions per row (doubling, up to the model's target positions)."""
        if needed > self.width:
            limit = self.model.max_target_positions
            self._grow(width=min(max(needed, 2 * self.width), limit))

    def add(self, encoded: list[np.ndarray], index: int, rows: int) -> np.ndarray:
        """Place sample `index` of an encoder batch into `rows` new slots; -> their indices."""
        bias, position_keys, *cross = encoded
        length = bias.shape[1]
        self._grow(source=length)
        if position_keys.shape[2] > 0:  # the same keys for every sample; keep the longest seen
            self.position_keys[:, :, : position_keys.shape[2]] = position_keys
        slots = np.arange(self.used, self.used + rows)
        self.used += rows
        self.lengths[slots] = 0
        self.bias[slots] = -np.inf
        self.bias[slots, :length] = bias[index]
        for store, value in zip(self.cross_kv, cross):
            store[slots, :, :length] = value[index]
            store[slots, :, length:] = 0.0
        return slots

    def move(self, source: np.ndarray, target: np.ndarray) -> None:
        """Copy rows `source` onto rows `target` (packing, and beam reordering)."""
        for store in (*self.self_kv, *self.cross_kv, self.bias, self.lengths):
            store[target] = store[source]

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """One decoder step over rows [0, used) -> logits (used, V); the new keys/values are written in place."""
        n = self.used
        self.ensure_width(int(self.lengths[:n].max()) + 1)
        past: list[np.ndarray] = []
        for layer in range(self.model.num_layers):
            past += [
                self.self_kv[2 * layer][:n],
                self.self_kv[2 * layer + 1][:n],
                self.cross_kv[2 * layer][:n],
                self.cross_kv[2 * layer + 1][:n],
            ]
        logits, *new = self.model.decode_step(
            tokens[:, None], self.lengths[:n].copy(), self.bias[:n], self.position_keys, past
        )
        rows, columns = np.arange(n), self.lengths[:n]
        for store, value in zip(self.self_kv, new):
            store[rows, :, columns] = value[:, :, 0]
        self.lengths[:n] += 1
        return logits


class Scheduler:
    """Continuous batching over one `StepModel` (see the module docstring)."""

    def __init__(
        self,
        model: StepModel,
        limits: SchedulerLimits | None = None,
        *,
        on_step: Callable[[int, float], None] | None = None,
    ) -> None:
        self.model = model
        self.limits = limits or SchedulerLimits()
        self.on_step = on_step
        """Called after every decoder step with (running rows, seconds): the server's batch metrics."""
        self.slots = KVSlots(model, self.limits.max_rows)
        self.running: list[Job] = []
        self.pending: collections.deque[Job] = collections.deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False

    # --- the server's side ------------------------------------------------------------------------------
    @property
    def queue_size(self) -> int:
        return len(self.pending)

    @property
    def running_rows(self) -> int:
        return self.slots.used

    def submit(self, job: Job) -> Job:
        """Queue a job for the running loop (`start`); QueueFull when the queue is at its limit."""
        self._check(job)
        with self._wake:
            if len(self.pending) >= self.limits.max_queue:
                raise QueueFull(
                    f"{len(self.pending)} requests are waiting (the queue holds {self.limits.max_queue})"
                )
            self.pending.append(job)
            self._wake.notify()
        return job

    def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._serve, name="biomedgpt-scheduler", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _serve(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and not self.pending and not self.running:
                    self._wake.wait()
                if self._stopping:
                    break
            try:
                self.iterate()
            except Exception:  # the failed step's jobs carry the error; the loop goes on
                log.exception("decoding step failed")
        for job in [*self.running, *self.pending]:
            job.error = job.error or RuntimeError("the server is shutting down")
            self._finish(job)
        self.running.clear()
        self.pending.clear()

    # --- in-thread use ----------------------------------------------------------------------------------
    def run(self, jobs: list[Job]) -> list[Job]:
        """Decode `jobs` to completion in this thread (admitted as the limits allow); -> the same jobs."""
        if self._thread is not None:
            raise RuntimeError("the scheduler runs in its own thread: use submit()")
        for job in jobs:
            self._check(job)
            self.pending.append(job)
        while self.pending or self.running:
            self.iterate()
        return jobs

    # --- the loop ----------------------------------------------------------------------------------------
    def _check(self, job: Job) -> None:
        if job.sequence.rows > self.limits.max_rows:
            raise ValueError(
                f"the request needs {job.sequence.rows} decoder rows, more than max_rows={self.limits.max_rows}"
            )
        if job.reserved_tokens > self.limits.max_tokens:
            raise ValueError(
                f"the request reserves {job.reserved_tokens} tokens, more than max_tokens={self.limits.max_tokens}"
            )
        needed = len(job.sequence.prefix) + job.sequence.spec.max_new_tokens
        if needed > self.model.max_target_positions:
            raise ValueError(
                f"the request needs {needed} decoder positions, more than the model's {self.model.max_target_positions}"
            )

    def iterate(self) -> None:
        """Admit what fits, then one decoder step over every running row."""
        self._drop_cancelled()
        admitted = self._admit()
        if admitted:
            try:
                self._encode(admitted)
            except Exception as err:  # fail these requests, keep the running ones
                log.exception("encoding %d requests failed", len(admitted))
                for job in admitted:
                    if job in self.running:
                        self._release(job)
                    job.error = err
                    self._finish(job)
        if not self.running:
            return
        tokens = np.empty(self.slots.used, dtype=np.int64)
        for job in self.running:
            tokens[job.slots] = job.sequence.inputs
        started = time.perf_counter()
        try:
            logits = self.slots.step(tokens)
        except Exception as err:
            for job in list(self.running):
                job.error = err
                self._release(job)
                self._finish(job)
            raise
        if self.on_step is not None:
            self.on_step(self.slots.used, time.perf_counter() - started)
        finished = []
        lse = logsumexp(logits)  # (rows,): one pass for the whole step
        for job in self.running:
            job.batch_rows = max(job.batch_rows, len(logits))
            sequence = job.sequence
            parents = sequence.advance(logits[job.slots], lse[job.slots])
            if parents is not None and not np.array_equal(parents, np.arange(len(parents))):
                self.slots.move(job.slots[parents], job.slots)
            if sequence.emitted:
                if job.first_token is None:
                    job.first_token = time.perf_counter()
                if job.on_tokens is not None:
                    job.on_tokens(list(sequence.emitted))
            if sequence.done:
                finished.append(job)
        for job in finished:  # after every job took its logits: releasing moves other jobs' rows
            self._release(job)
            self._finish(job)

    def _admit(self) -> list[Job]:
        admitted: list[Job] = []
        rows = self.slots.used
        tokens = sum(job.reserved_tokens for job in self.running)
        with self._wake:
            while self.pending:
                job = self.pending[0]
                if job.cancelled:
                    self.pending.popleft()
                    self._finish(job)
                    continue
                if (
                    rows + job.sequence.rows > self.limits.max_rows
                    or tokens + job.reserved_tokens > self.limits.max_tokens
                ):
                    break
                self.pending.popleft()
                rows += job.sequence.rows
                tokens += job.reserved_tokens
                admitted.append(job)
        return admitted

    def _encode(self, jobs: list[Job]) -> None:
        width = max(len(job.input_ids) for job in jobs)
        input_ids = np.full((len(jobs), width), jobs[0].sequence.ids.pad, dtype=np.int64)
        attention_mask = np.zeros((len(jobs), width), dtype=np.int64)
        for i, job in enumerate(jobs):
            input_ids[i, : len(job.input_ids)] = job.input_ids
            attention_mask[i, : len(job.input_ids)] = 1
        shape = next((job.pixels.shape for job in jobs if job.pixels is not None), None)
        if shape is None:
            shape = (3, self.model.image_size, self.model.image_size)
        pixels = np.stack(
            [job.pixels if job.pixels is not None else np.zeros(shape, np.float32) for job in jobs]
        )
        patch_masks = np.asarray([job.pixels is not None for job in jobs])
        encoded = self.model.encode(
            input_ids, attention_mask, pixels.astype(np.float32, copy=False), patch_masks
        )
        now = time.perf_counter()
        for i, job in enumerate(jobs):
            job.slots = self.slots.add(encoded, i, job.sequence.rows)
            job.started = now
            self.running.append(job)

    def _drop_cancelled(self) -> None:
        for job in [job for job in self.running if job.cancelled]:
            self._release(job)
            self._finish(job)

    def _release(self, job: Job) -> None:
        """Free the job's slots, moving the last running rows into the holes so rows stay packed."""
        self.running.remove(job)
        holes = sorted(int(s) for s in job.slots)
        keep = self.slots.used - len(holes)
        owners = {int(s): (other, k) for other in self.running for k, s in enumerate(other.slots)}
        targets = [h for h in holes if h < keep]
        sources = [s for s in range(keep, self.slots.used) if s not in set(holes)]
        if targets:
            self.slots.move(np.asarray(sources), np.asarray(targets))
            for source, target in zip(sources, targets):
                other, k = owners[source]
                other.slots[k] = target
        self.slots.used = keep

    def _finish(self, job: Job) -> None:
        job.finished = time.perf_counter()
        if job.on_done is not None:
            job.on_done(job)
