"""Coarse shared deadlines behave as asyncio.timeout: expiry is TimeoutError, other cancellations pass through."""

from __future__ import annotations

import asyncio
import time

import pytest

from edge.deadlines import Deadlines


async def test_a_block_past_its_deadline_raises_timeout_error_about_on_time() -> None:
    deadlines = Deadlines(resolution=0.005)
    started = time.monotonic()
    with pytest.raises(TimeoutError), deadlines.after(0.05):
        await asyncio.sleep(10)
    assert 0.045 <= time.monotonic() - started < 0.5


async def test_a_block_that_finishes_in_time_is_not_cancelled_later() -> None:
    deadlines = Deadlines(resolution=0.005)
    with deadlines.after(0.03):
        await asyncio.sleep(0)
    await asyncio.sleep(0.08)  # past the deadline: nothing fires any more
    assert deadlines._ticker is None


async def test_a_cancellation_from_elsewhere_is_not_turned_into_a_timeout() -> None:
    deadlines = Deadlines()

    async def waits() -> None:
        with deadlines.after(5):
            await asyncio.sleep(10)

    task = asyncio.create_task(waits())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)


async def test_many_deadlines_each_fire_and_none_is_left_pending() -> None:
    deadlines = Deadlines(resolution=0.005)

    async def one(seconds: float) -> str:
        try:
            with deadlines.after(seconds):
                await asyncio.sleep(0.04 if seconds > 0.06 else 5)
        except TimeoutError:
            return "timeout"
        return "done"

    results = await asyncio.wait_for(asyncio.gather(*(one(0.01 * (i % 10)) for i in range(100))), 2)
    assert results.count("timeout") == 70  # 0 .. 0.06 s time out, 0.07 .. 0.09 s finish first
    assert results.count("done") == 30
    await asyncio.sleep(0.02)
    assert deadlines._ticker is None


async def test_a_task_already_being_cancelled_keeps_its_own_cancellation() -> None:
    deadlines = Deadlines(resolution=0.005)

    async def inner() -> None:
        asyncio.current_task().cancel()  # type: ignore[union-attr]
        with deadlines.after(0.01):
            await asyncio.sleep(1)

    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(asyncio.create_task(inner()), 2)
