"""The decode pool: a budget of decoded bytes shared by concurrent decodes, granted in arrival order, held until
the decoding thread is done even when its caller has gone."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from biomedgpt.serve.image_pool import DecodeBusy, ImageDecodePool


def test_the_budget_bounds_what_runs_at_once():
    async def main() -> int:
        pool = ImageDecodePool(workers=4, budget_bytes=100)
        running = peak = 0
        lock = threading.Lock()

        def job() -> None:
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
            time.sleep(0.05)
            with lock:
                running -= 1

        await asyncio.gather(*(pool.run(40, job, timeout_s=10) for _ in range(8)))
        assert pool.in_use == 0 and pool.waiting == 0
        pool.shutdown()
        return peak

    assert asyncio.run(main()) == 2  # 40 + 40 fit in 100; a third would not


def test_waiters_are_served_in_arrival_order_so_large_decodes_are_not_starved():
    async def main() -> list[str]:
        pool = ImageDecodePool(workers=4, budget_bytes=100)
        order: list[str] = []
        release = threading.Event()

        def hold() -> None:
            release.wait(5)

        first = asyncio.create_task(pool.run(60, hold, timeout_s=10))
        await asyncio.sleep(0.05)
        large = asyncio.create_task(pool.run(90, lambda: order.append("large"), timeout_s=10))
        await asyncio.sleep(0.05)
        small = asyncio.create_task(pool.run(10, lambda: order.append("small"), timeout_s=10))
        await asyncio.sleep(0.05)
        assert order == [] and pool.waiting == 2  # the small one fits, but waits behind the large one
        release.set()
        await asyncio.gather(first, large, small)
        pool.shutdown()
        return order

    assert asyncio.run(main()) == ["large", "small"]


def test_a_cancelled_caller_keeps_its_share_until_the_thread_is_done():
    async def main() -> None:
        pool = ImageDecodePool(workers=1, budget_bytes=100)
        release = threading.Event()
        task = asyncio.create_task(pool.run(70, lambda: release.wait(5), timeout_s=10))
        await asyncio.sleep(0.05)
        task.cancel()  # the client disconnected; the decode thread still holds its memory
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.in_use == 70
        release.set()
        for _ in range(100):
            if pool.in_use == 0:
                break
            await asyncio.sleep(0.01)
        assert pool.in_use == 0
        pool.shutdown()

    asyncio.run(main())


def test_a_wait_past_the_timeout_is_busy_and_leaves_no_trace():
    async def main() -> None:
        pool = ImageDecodePool(workers=1, budget_bytes=100)
        release = threading.Event()
        holder = asyncio.create_task(pool.run(80, lambda: release.wait(5), timeout_s=10))
        await asyncio.sleep(0.05)
        with pytest.raises(DecodeBusy):
            await pool.run(50, lambda: None, timeout_s=0.1)
        assert pool.waiting == 0 and pool.in_use == 80
        release.set()
        await holder
        assert await pool.run(100, lambda: "done", timeout_s=1) == "done"
        pool.shutdown()

    asyncio.run(main())
