"""The server's side of continuous batching: asyncio requests in, the scheduler's thread decoding them.

`ContinuousBatcher` has the request-level `batching.Batcher`'s interface (`start`, `stop`, `submit`,
`queue_size`), so the app serves through either (`batching: continuous | request`), and adds `stream`: the
tokens of one request as each decoder step produces them. A request joins the running batch at the next
step (`scheduler.Scheduler`); a caller that stops waiting (a client gone, a timeout) cancels its job, and its
rows are freed at the next step.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from biomedgpt.serve.batching import BatchFailed, Outcome, QueueFull
from biomedgpt.serve.scheduler import Job, Scheduler, SchedulerLimits
from biomedgpt.serve.scheduler import QueueFull as SchedulerQueueFull

if TYPE_CHECKING:
    from biomedgpt.serve.engine import Engine, Prepared


class ContinuousBatcher:
    def __init__(
        self,
        get_engine: Callable[[], Engine | None],
        limits: SchedulerLimits,
        *,
        on_queue_size: Callable[[int], None] | None = None,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.get_engine = get_engine
        self.limits = limits
        self._on_queue_size = on_queue_size or (lambda size: None)
        self._on_batch = on_batch
        self._scheduler: Scheduler | None = None
        self._engine: Engine | None = None

    async def start(self) -> None:
        """Nothing to start until the engine exists: the scheduler starts with the first request."""

    async def stop(self) -> None:
        if self._scheduler is not None:
            await asyncio.to_thread(self._scheduler.stop)
            self._scheduler = None

    @property
    def queue_size(self) -> int:
        return self._scheduler.queue_size if self._scheduler is not None else 0

    @property
    def running_rows(self) -> int:
        return self._scheduler.running_rows if self._scheduler is not None else 0

    def _ensure(self) -> tuple[Engine, Scheduler]:
        engine = self.get_engine()
        if engine is None:
            raise RuntimeError("the model is not loaded")
        if self._scheduler is None or self._engine is not engine:
            if self._scheduler is not None:
                self._scheduler.stop()
            self._engine = engine
            self._scheduler = Scheduler(engine.step_model(), self.limits, on_step=self._on_batch)
            self._scheduler.start()
        return engine, self._scheduler

    async def submit(self, item: Prepared) -> Outcome[Any]:
        """Decode `item` and wait for its result; QueueFull at once when the queue is full."""
        outcome = None
        async for event in self._run(item, stream=False):
            outcome = event
        assert isinstance(outcome, Outcome)
        return outcome

    async def stream(self, item: Prepared) -> AsyncIterator[list[int] | Outcome[Any]]:
        """Yield the token ids of each step as they come (a list per step), then the `Outcome`."""
        async for event in self._run(item, stream=True):
            yield event

    async def _run(self, item: Prepared, *, stream: bool) -> AsyncIterator[Any]:
        engine, scheduler = self._ensure()
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Any] = asyncio.Queue()
        done = object()

        def on_tokens(tokens: list[int]) -> None:
            loop.call_soon_threadsafe(events.put_nowait, tokens)

        def on_done(_: Job) -> None:
            loop.call_soon_threadsafe(events.put_nowait, done)

        job = engine.job(item, on_tokens=on_tokens if stream else None, on_done=on_done)
        try:
            scheduler.submit(job)
        except SchedulerQueueFull as err:
            raise QueueFull(str(err)) from None
        self._on_queue_size(scheduler.queue_size)
        try:
            while True:
                event = await events.get()
                if event is done:
                    break
                yield event
        except BaseException:
            job.cancel()  # the caller stopped waiting: free the rows at the next step
            raise
        if job.error is not None:
            raise BatchFailed(f"{type(job.error).__name__}: {job.error}") from job.error
        finished = job.finished or time.perf_counter()
        started = job.started or finished
        yield Outcome(
            result=engine.result(item, job),
            batch_size=job.batch_rows,
            queue_ms=(started - job.enqueued) * 1000.0,
            inference_ms=(finished - started) * 1000.0,
        )
