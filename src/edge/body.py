"""A request body that flows: counted, bounded, read only when the upstream pulls it.

The front door wraps its protocol's stream in `RequestBody`; the upstream
client iterates it. Going over the limit raises `PayloadTooLarge` and keeps it
in `error`, so the upstream client can report it even when its library wraps
the exception in its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

from edge.call import Call
from edge.errors import PayloadTooLarge


class RequestBody:
    def __init__(self, chunks: AsyncIterable[bytes], call: Call, limit: int) -> None:
        self._chunks = chunks
        self._call = call
        self._limit = limit
        self.error: PayloadTooLarge | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._read()

    async def _read(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            self._call.bytes_in += len(chunk)
            if self._call.bytes_in > self._limit:
                self.error = PayloadTooLarge(f"request body is larger than {self._limit} bytes")
                raise self.error
            yield chunk
