"""The dynamic batcher on a plain function: grouping, the wait window, failure isolation, the queue bound."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from biomedgpt.serve.batching import Batcher, BatchFailed, QueueFull
from biomedgpt.serve.types import RequestError


class Recorder:
    """A batch function that records the batches it sees; items named "boom" make the whole batch fail."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list[str]] = []
        self.delay_s = delay_s
        self.threads: set[str] = set()

    def __call__(self, items: list[str]) -> list[str]:
        self.threads.add(threading.current_thread().name)
        self.batches.append(list(items))
        time.sleep(self.delay_s)
        if "boom" in items:
            raise RuntimeError("engine exploded")
        if "bad" in items and len(items) == 1:
            raise RequestError("bad request", field="image")
        return [item.upper() for item in items]


def run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_share_batches_up_to_the_size_limit():
    async def scenario():
        recorder = Recorder()
        batcher = Batcher(recorder, max_batch_size=4, max_wait_ms=50)
        await batcher.start()
        try:
            outcomes = await asyncio.gather(*(batcher.submit(f"r{i}") for i in range(10)))
        finally:
            await batcher.stop()
        return recorder, outcomes

    recorder, outcomes = run(scenario())
    assert [o.result for o in outcomes] == [f"R{i}" for i in range(10)]
    assert [len(b) for b in recorder.batches] == [4, 4, 2]
    assert all(o.batch_size in (2, 4) for o in outcomes)
    assert recorder.threads == {"biomedgpt-engine_0"}  # one engine thread: one batch at a time


def test_a_lone_request_waits_at_most_max_wait():
    async def scenario():
        batcher = Batcher(Recorder(), max_batch_size=8, max_wait_ms=20)
        await batcher.start()
        started = time.perf_counter()
        outcome = await batcher.submit("x")
        elapsed = time.perf_counter() - started
        await batcher.stop()
        return outcome, elapsed

    outcome, elapsed = run(scenario())
    assert outcome.result == "X" and outcome.batch_size == 1
    assert elapsed < 1.0


def test_a_failing_batch_is_retried_alone_and_the_worker_survives():
    async def scenario():
        recorder = Recorder()
        batcher = Batcher(recorder, max_batch_size=8, max_wait_ms=30)
        await batcher.start()
        results = await asyncio.gather(
            batcher.submit("a"), batcher.submit("boom"), batcher.submit("b"), return_exceptions=True
        )
        after = await batcher.submit("c")
        bad = await asyncio.gather(batcher.submit("bad"), return_exceptions=True)
        await batcher.stop()
        return recorder, results, after, bad

    recorder, results, after, bad = run(scenario())
    assert results[0].result == "A" and results[2].result == "B"
    assert isinstance(results[1], BatchFailed) and "RuntimeError" in str(results[1])
    assert recorder.batches[0] == ["a", "boom", "b"] and ["boom"] in recorder.batches
    assert after.result == "C"
    assert isinstance(bad[0], RequestError)  # a request's own error passes through as a 4xx


def test_a_full_queue_refuses_at_once():
    async def scenario():
        batcher = Batcher(Recorder(delay_s=0.2), max_batch_size=1, max_wait_ms=0, max_queue=2)
        await batcher.start()
        first = asyncio.create_task(batcher.submit("busy"))
        await asyncio.sleep(0.05)  # the worker has taken it and is running it
        waiting = [asyncio.create_task(batcher.submit(f"w{i}")) for i in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await batcher.submit("one too many")
        done = await asyncio.gather(first, *waiting)
        await batcher.stop()
        return done

    assert [o.result for o in run(scenario())] == ["BUSY", "W0", "W1"]


def test_requests_whose_caller_gave_up_are_skipped():
    async def scenario():
        recorder = Recorder(delay_s=0.1)
        batcher = Batcher(recorder, max_batch_size=1, max_wait_ms=0)
        await batcher.start()
        first = asyncio.create_task(batcher.submit("first"))
        await asyncio.sleep(0.02)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(batcher.submit("abandoned"), 0.01)
        await first
        await batcher.submit("last")
        await batcher.stop()
        return recorder

    assert ["abandoned"] not in run(scenario()).batches
