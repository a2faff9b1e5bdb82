"""Request-level dynamic batching: requests that arrive close together are decoded in one engine call.

One asyncio worker takes the first waiting request, then collects more until `max_batch_size` or until
`max_wait_ms` have passed since that first one, and runs the batch in a single engine thread. One batch at a
time: inference is CPU/GPU-bound, so two concurrent batches would only fight over the same cores, while a
bigger batch amortises the per-step overhead. A failing batch is retried one request at a time, so one bad
request cannot fail its neighbours, and the worker keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from biomedgpt.serve.types import RequestError

log = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


class QueueFull(RuntimeError):
    """More requests are waiting than `max_queue`: the server answers 503 with Retry-After."""


class BatchFailed(RuntimeError):
    """The engine raised on this request's batch (and on the request alone); the server answers 500."""


@dataclass
class Outcome(Generic[ResultT]):
    """One request's result with how it was served (for `timing_ms` and the metrics)."""

    result: ResultT
    batch_size: int
    queue_ms: float
    inference_ms: float


@dataclass
class _Pending:
    item: Any
    future: asyncio.Future
    enqueued: float


class Batcher(Generic[ItemT, ResultT]):
    """Collects items from many coroutines into calls of `run_batch(list[item]) -> list[result]`."""

    def __init__(
        self,
        run_batch: Callable[[list[ItemT]], Sequence[ResultT]],
        *,
        max_batch_size: int = 8,
        max_wait_ms: float = 5.0,
        max_queue: int = 256,
        on_queue_size: Callable[[int], None] | None = None,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self._on_queue_size = on_queue_size or (lambda size: None)
        self._on_batch = on_batch or (lambda size, seconds: None)
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        """Start the worker on the running loop (the app's lifespan calls this)."""
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="biomedgpt-engine")
        self._worker = asyncio.create_task(self._work(), name="biomedgpt-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        while self._queue is not None and not self._queue.empty():
            _fail(self._queue.get_nowait(), RuntimeError("the server is shutting down"))
        self._worker = self._executor = None

    @property
    def queue_size(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    async def submit(self, item: ItemT) -> Outcome[ResultT]:
        """Queue `item` and wait for its result; `QueueFull` at once when the queue is full.

        Cancelling the caller (a timeout, a client gone) leaves the item in the queue, but the worker skips
        items whose caller stopped waiting.
        """
        if self._queue is None:
            raise RuntimeError("the batcher is not started")
        future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Pending(item, future, time.perf_counter()))
        except asyncio.QueueFull:
            raise QueueFull(f"{self.max_queue} requests are already waiting") from None
        self._on_queue_size(self._queue.qsize())
        return await future

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            batch = await self._collect()
            try:
                self._on_queue_size(self._queue.qsize())
                live = [p for p in batch if not p.future.done()]
                if live:
                    await self._serve(live)
            except Exception as err:  # the worker must outlive any one batch
                log.exception("the batch worker failed")
                for pending in batch:
                    _fail(pending, err)

    async def _collect(self) -> list[_Pending]:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    batch.append(self._queue.get_nowait())  # take what is already waiting, no more
                else:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                break
        return batch

    async def _serve(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        try:
            results = await self._run([p.item for p in batch])
        except Exception as err:
            if len(batch) == 1:
                log.exception("engine failed on a request")
                _fail(batch[0], err)
                return
            log.warning("a batch of %d failed (%s); retrying its requests one by one", len(batch), err)
            for pending in batch:
                await self._serve([pending])
            return
        elapsed = time.perf_counter() - started
        self._on_batch(len(batch), elapsed)
        for pending, result in zip(batch, results):
            if not pending.future.done():
                queue_ms = (started - pending.enqueued) * 1000.0
                pending.future.set_result(Outcome(result, len(batch), queue_ms, elapsed * 1000.0))

    async def _run(self, items: list[ItemT]) -> Sequence[ResultT]:
        loop = asyncio.get_running_loop()
        results = await loop.run_in_executor(self._executor, self.run_batch, items)
        if len(results) != len(items):
            raise RuntimeError(f"the engine returned {len(results)} results for {len(items)} requests")
        return results


def _fail(pending: _Pending, err: Exception) -> None:
    if pending.future.done():
        return
    # Errors that describe the request itself (RequestError) pass through; anything else is the server's.
    if isinstance(err, RequestError):
        pending.future.set_exception(err)
    else:
        failure = BatchFailed(f"inference failed: {type(err).__name__}")
        failure.__cause__ = err
        pending.future.set_exception(failure)
