"""A listener's open connections, and the graceful stop both server cores make of them.

The httptools HTTP door and the h2 gRPC door own their connections (no
framework does it for them); stopping is the same for both: stop accepting
(the caller's job), ask every connection to finish what it has in flight
(`shut_down`: close when idle, GOAWAY on HTTP/2), wait until all have gone or
the drain timeout passes, then cut the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import suppress
from typing import Generic, Protocol, TypeVar


class Connection(Protocol):
    def shut_down(self) -> None: ...

    def abort(self) -> None: ...


C = TypeVar("C", bound=Connection)


class OpenConnections(Generic[C]):
    def __init__(self) -> None:
        self._open: set[C] = set()
        self._all_gone: asyncio.Event | None = None

    def add(self, connection: C) -> None:
        self._open.add(connection)

    def forget(self, connection: C) -> None:
        self._open.discard(connection)
        if not self._open and self._all_gone is not None:
            self._all_gone.set()

    def __iter__(self) -> Iterator[C]:
        return iter(list(self._open))

    def __len__(self) -> int:
        return len(self._open)

    async def drain(self, seconds: float) -> None:
        """Every connection finishes what it has in flight within `seconds`; then the rest are cut."""
        self._all_gone = asyncio.Event()
        for connection in self:
            connection.shut_down()
        if self._open:
            with suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._all_gone.wait()
        for connection in self:
            connection.abort()
