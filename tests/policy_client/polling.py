"""`eventually`: ask again until an answer is right, bounded in time (file watchers and audit writers are asynchronous)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], within: float = 5.0) -> T:
    deadline = time.monotonic() + within
    for _ in range(100_000):
        value = await probe()
        if done(value) or time.monotonic() > deadline:
            assert done(value), f"still {value!r} after {within} s"
            return value
        await asyncio.sleep(0.02)
    raise AssertionError("unreachable")
