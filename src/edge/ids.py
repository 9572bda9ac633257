"""Random ids for requests and traces: `os.urandom` bytes, fetched a few kilobytes at a time.

Every call needs a request id (when the caller sent none) and often a new
trace and span id. `os.urandom` releases the GIL around its system call, so
one call per id meant two GIL hand-overs per request whenever another thread
(the audit writer) was busy: each cost far more than the bytes. Drawing ids
from a buffer refilled every `BATCH` bytes keeps the same randomness (the
kernel's CSPRNG) at one system call per ~100 requests. A forked worker drops
the buffer it inherited, so no two processes hand out the same ids. The ids
are taken on the event loop's thread only (no lock).
"""

from __future__ import annotations

import os

BATCH = 4096


class RandomHex:
    __slots__ = ("_at", "_buffer")

    def __init__(self) -> None:
        self._buffer = b""
        self._at = 0

    def take(self, size: int) -> str:
        """`size` fresh random bytes as lower-case hex (2 * size characters)."""
        at = self._at
        end = at + size
        if end > len(self._buffer):
            self._buffer = os.urandom(BATCH)
            at, end = 0, size
        self._at = end
        return self._buffer[at:end].hex()

    def reset(self) -> None:
        self._buffer = b""
        self._at = 0


_source = RandomHex()
os.register_at_fork(after_in_child=_source.reset)


def request_id() -> str:
    """A new request id: 32 hex characters (128 random bits)."""
    return _source.take(16)


def trace_ids() -> str:
    """48 hex characters: a W3C trace id (the first 32) and a parent id (the last 16)."""
    return _source.take(24)


def caller_request_id(given: object) -> str:
    """The caller's request id when it sent a usable one (text, 1 to 200 characters), else a new one.

    Both doors keep a caller's id so one request can be followed across systems,
    but not an unbounded one: it is logged and written to every audit record.
    """
    if isinstance(given, str) and 0 < len(given) <= 200:
        return given
    return request_id()
