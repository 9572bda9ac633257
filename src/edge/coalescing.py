"""Writes made during one pass of the event loop leave together, at the start of the next.

Every write to a loopback or LAN socket whose reader sleeps wakes that
reader, and a wake-up costs the writer more than the copy (on the bench
machine ~13% of a gateway process's CPU went to waking nginx and wrk, and
each wake-up could preempt the gateway itself). Written one by one, the
replies and upstream requests of a busy pass wake their peers once each;
queued and written back to back at the end of the pass, they find the peer
already awake after the first. Order per transport is kept (one queue), and
an owner closing a transport flushes first so nothing queued is dropped. A
writer that waits on backpressure flushes before it waits, so the
transport's buffer, not this queue, is what it waits on.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("edge.coalescing")


class WriteCoalescer:
    __slots__ = ("_loop", "_queued")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queued: list[tuple[asyncio.WriteTransport, bytes]] = []

    def write(self, transport: asyncio.WriteTransport, data: bytes) -> None:
        if not self._queued:
            self._loop.call_soon(self.flush)
        self._queued.append((transport, data))

    def flush(self) -> None:
        """Hand everything queued to its transport; a transport closed since was aborted, its bytes go with it.

        One transport failing (it raises only when it broke in between) must
        not keep the others' bytes: that one is aborted, the rest are written.
        """
        queued, self._queued = self._queued, []
        for transport, data in queued:
            if transport.is_closing():
                continue
            try:
                transport.write(data)
            except Exception:
                log.exception("a queued write failed; aborting that connection")
                transport.abort()
