"""A request body as it arrives on an httptools connection: fed by the parser, read by the upstream.

The parser pushes chunks in (`feed`), the upstream client pulls them out
(`async for`); while more than `BODY_BUFFER` bytes wait, the connection stops
reading from the socket, so a slow upstream slows the client down instead of
filling memory. `Expect: 100-continue` is answered when the body is first
pulled, that is once the pipeline has decided to forward the call.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

BODY_BUFFER = 256 * 1024
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
PAUSED_BODY = 1


class BodyOwner(Protocol):
    """What the body needs of its connection."""

    def pause_reading(self, reason: int) -> None: ...
    def resume_reading(self, reason: int) -> None: ...
    def write(self, data: bytes) -> None: ...


class RequestStream:
    """A request body as it arrives: an async iterator of bytes fed by the parser, with flow control."""

    __slots__ = ("_buffered", "_chunks", "_connection", "_continue", "_error", "_waiter", "complete")

    def __init__(self, connection: BodyOwner, expect_continue: bool) -> None:
        self._connection = connection
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._continue = expect_continue
        self.complete = False

    @property
    def full(self) -> bool:
        return self._buffered > BODY_BUFFER

    def feed(self, data: bytes) -> None:
        self._continue = False  # the client did not wait for it
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > BODY_BUFFER:
            self._connection.pause_reading(PAUSED_BODY)
        self._wake()

    def finish(self) -> None:
        self.complete = True
        self._wake()

    def fail(self, error: BaseException) -> None:
        if not self.complete:
            self._error = error
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> bytes:
        chunks = self._chunks
        while not chunks:
            if self._error is not None:
                raise self._error
            if self.complete:
                raise StopAsyncIteration
            if self._continue:
                self._continue = False
                self._connection.write(CONTINUE)
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        self._connection.resume_reading(PAUSED_BODY)
        return data
