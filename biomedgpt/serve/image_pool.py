"""Decoding uploads off the event loop, in bounded threads, within a budget of decoded bytes.

A 0.2 MB PNG can declare 6300x6300 RGBA pixels: 160 MB once decoded. Without a bound, sixteen such uploads at
once hold gigabytes and starve every other request of CPU. Here each decode first reserves its estimated peak
(`images.read_header`) from one budget shared by all requests, waiting in arrival order when the budget is
spent; then it runs in one of two small thread pools: large decodes in a lane of their own (one thread, at a
lower CPU priority on Linux), so a burst of them never delays the ordinary uploads, which run in the other lane,
nor starves the model of CPU. A decode whose client has gone keeps its reservation until its thread finishes, so
the budget always matches what the threads hold.

When the budget drains after a burst, the C heap is trimmed (glibc `malloc_trim`): the decoders' freed
blocks go back to the operating system instead of staying in the process as retained memory.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import ctypes.util
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

LARGE_DECODE_BYTES = 64 * 1024 * 1024
"""Decodes estimated above this run in the large lane (one thread): about a 2000x2000 RGB image."""
LARGE_DECODE_NICENESS = 10
"""How much lower the large lane's thread runs (Linux `nice` increment of that thread only)."""
TRIM_AFTER_BYTES = 256 * 1024 * 1024
"""Trim the C heap once the budget is idle after at least this many bytes were released since the last trim."""


class DecodeBusy(Exception):
    """The budget stayed spent for longer than the caller would wait."""


class ImageDecodePool:
    """`await pool.run(cost, fn)`: `fn()` in a bounded thread once `cost` bytes of the budget are free."""

    def __init__(self, *, workers: int, budget_bytes: int) -> None:
        if workers < 1 or budget_bytes < 1:
            raise ValueError(f"workers and budget_bytes must be >= 1, got {workers} and {budget_bytes}")
        self.budget_bytes = budget_bytes
        self.in_use = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()
        self._small = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="biomedgpt-decode")
        self._large = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="biomedgpt-decode-large", initializer=_lower_priority
        )
        self._released_since_trim = 0

    @property
    def waiting(self) -> int:
        """Decodes waiting for budget."""
        return len(self._waiters)

    async def run(self, cost: int, fn: Callable[[], T], *, timeout_s: float) -> T:
        """Reserve `cost` bytes (waiting up to `timeout_s`, else `DecodeBusy`), run `fn` in a thread, release."""
        cost = min(max(cost, 1), self.budget_bytes)
        await self._acquire(cost, timeout_s)
        loop = asyncio.get_running_loop()
        lane = self._large if cost > LARGE_DECODE_BYTES else self._small
        try:
            job: Future[T] = lane.submit(fn)
        except BaseException:
            self._release(cost)
            raise
        # Released when the thread is done, not when the caller stops waiting (a client may disconnect).
        job.add_done_callback(lambda _: loop.call_soon_threadsafe(self._release, cost))
        return await asyncio.wrap_future(job)

    def shutdown(self) -> None:
        self._small.shutdown(wait=False, cancel_futures=True)
        self._large.shutdown(wait=False, cancel_futures=True)

    async def _acquire(self, cost: int, timeout_s: float) -> None:
        if not self._waiters and self.in_use + cost <= self.budget_bytes:
            self.in_use += cost
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (cost, granted)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(granted), timeout_s)
        except (asyncio.TimeoutError, asyncio.CancelledError) as err:
            if granted.done() and not granted.cancelled():
                self._release(cost)  # granted just as the wait ended: give it back
            else:
                granted.cancel()
                self._waiters.remove(entry)
                self._grant()  # a large waiter leaving may let smaller ones behind it in
            if isinstance(err, asyncio.TimeoutError):
                raise DecodeBusy(f"no decode budget within {timeout_s} s") from None
            raise

    def _release(self, cost: int) -> None:
        self.in_use -= cost
        self._released_since_trim += cost
        self._grant()
        if self.in_use == 0 and self._released_since_trim >= TRIM_AFTER_BYTES:
            self._released_since_trim = 0
            self._small.submit(trim_heap)

    def _grant(self) -> None:
        """Wake waiters in arrival order while they fit (the first that does not fit blocks the rest: no
        starvation of large decodes by a stream of small ones)."""
        while self._waiters and self.in_use + self._waiters[0][0] <= self.budget_bytes:
            cost, granted = self._waiters.popleft()
            self.in_use += cost
            granted.set_result(None)


def _lower_priority() -> None:
    """Lower the calling thread's CPU priority (Linux: a thread id is a process id for setpriority)."""
    if hasattr(os, "setpriority"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LARGE_DECODE_NICENESS)


def _libc_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


_MALLOC_TRIM = _libc_malloc_trim()


def trim_heap() -> None:
    """Return freed C-heap memory to the operating system (glibc only; a no-op elsewhere)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
