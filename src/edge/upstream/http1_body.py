"""A streamed upstream response body: fed by the connection's parser, read by the front door.

`http1.py`'s connections hand a body larger than `SMALL_BODY` (or of unknown
length) to one of these: the parser pushes pieces in, the door pulls them out,
and the connection stops reading from the socket while more than
`BODY_BUFFER` bytes wait.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from edge.errors import UpstreamUnavailable

BODY_BUFFER = 256 * 1024


class BodyOwner(Protocol):
    """What the body needs of its connection."""

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def abandon(self) -> None: ...


class BodyStream:
    """A streamed response body: fed by the connection's parser, read by the front door.

    While more than `BODY_BUFFER` bytes wait the connection stops reading, so
    a slow caller slows the upstream down instead of filling memory. A body
    that breaks off or stalls for `read_timeout` is UNAVAILABLE, reported here
    where it happens; closing the stream before its end closes the connection.
    """

    __slots__ = (
        "_buffered",
        "_chunks",
        "_closed",
        "_complete",
        "_connection",
        "_error",
        "_paused",
        "_waiter",
        "read_timeout",
    )

    def __init__(self, connection: BodyOwner) -> None:
        self._connection = connection
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._complete = False
        self._closed = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self.read_timeout = 30.0

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > BODY_BUFFER and not self._paused:
            self._paused = True
            self._connection.pause_reading()
        self._wake()

    def finish(self) -> None:
        """The body ended at the protocol level: the connection is no longer this stream's to pause."""
        self._complete = True
        self._resume()
        self._wake()

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            self._connection.resume_reading()

    def fail(self, error: BaseException) -> None:
        if not self._complete:
            self._error = error
            self._paused = False  # the connection is being closed
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __aiter__(self) -> BodyStream:
        return self

    async def __anext__(self) -> bytes:
        chunks = self._chunks
        while not chunks:
            if self._closed or (self._complete and self._error is None):
                raise StopAsyncIteration
            if self._error is not None:
                raise UpstreamUnavailable(f"upstream response broke off: {type(self._error).__name__}")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(self.read_timeout):
                    await self._waiter
            except TimeoutError:
                raise UpstreamUnavailable("upstream response broke off: TimeoutError") from None
            finally:
                self._waiter = None
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        self._resume()
        return data

    async def aclose(self) -> None:
        if not self._complete and not self._closed:
            self._connection.abandon()
        self._closed = True
        self._chunks.clear()
