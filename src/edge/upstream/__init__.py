"""Upstream clients: one interface, `send(call) -> Reply`, one implementation per protocol.

Third-party errors (aiohttp's, grpc's) are mapped to `EdgeError`s here, where
they enter, so nothing above knows which client library raised them.
"""

from __future__ import annotations

from typing import Protocol

from edge.call import Call, Reply


class Upstream(Protocol):
    name: str

    async def send(self, call: Call) -> Reply: ...

    async def aclose(self) -> None: ...


class _NoMessages:
    """The body of a gRPC unary reply that ended without a message."""

    def __aiter__(self) -> _NoMessages:
        return self

    async def __anext__(self) -> bytes:
        raise StopAsyncIteration


NO_MESSAGES = _NoMessages()
