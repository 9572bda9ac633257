"""Write backpressure of an `asyncio.Protocol`: `wait` holds a writer while the transport says pause.

asyncio streams have this built in (`StreamWriter.drain`); the HTTP door's
server connections and the upstream HTTP client are plain protocols (for the
cost per request, docs/performance.md), so both keep one of these and route
`pause_writing`/`resume_writing` and the loss of the connection to it.
"""

from __future__ import annotations

import asyncio


class WriteBackpressure:
    __slots__ = ("_loop", "_paused", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def fail(self, error: BaseException) -> None:
        """The connection is gone: a writer waiting gets `error`."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    async def wait(self) -> None:
        """Return at once unless paused; else when the transport resumes (or the connection is lost)."""
        if not self._paused:
            return
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
