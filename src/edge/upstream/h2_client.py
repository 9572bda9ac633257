"""The client side of one HTTP/2 connection: streams this side opens, each driven by a `StreamHandler`.

`H2Protocol` (edge.http2) does the I/O; this adds what a client needs and
h2 leaves to its user: a stream table with the peer's MAX_CONCURRENT_STREAMS
respected (callers queue for `room`), readiness once the server's SETTINGS
arrive (proof that an HTTP/2 server answered), draining after GOAWAY (streams
the server accepted finish; those above its last stream id are handed back
as refused, so they can be retried elsewhere), keepalive pings, and one
deadline sweep per connection instead of a timer per stream.

Two things are done beside h2 rather than through it, both measured or
needed. A request's headers go to h2 as one header block the caller has
joined from `header_field`s (HPACK literals, edge.hpack_literals), so its
fixed headers are encoded once per endpoint and its path once per path:
HPACK encoding was the largest cost of a proxied call's client side. A
server's GOAWAY lets the streams it accepted finish
(`edge.http2.LingeringH2Connection`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, cast

import h2.events
import h2.exceptions
from h2.errors import ErrorCodes

from edge.config.gateway import GrpcKeepalive
from edge.hpack_literals import SENSITIVE, LiteralEncoder, encode_field
from edge.http2 import H2Protocol

log = logging.getLogger("edge.upstream.h2")

PING = b"edge-kap"
Headers = list[tuple[str, str]]  # names and values as text: edge.http2 decodes them as latin-1


class StreamHandler(Protocol):
    """One stream's consumer: told what arrives, and when the stream can no longer complete."""

    when: float  # loop time by which the stream must have ended
    sent_end: bool  # this side has ended its half of the stream

    def on_headers(self, headers: Headers, ended: bool) -> None: ...

    def on_data(self, data: bytes, flow: int) -> None: ...

    def on_trailers(self, headers: Headers) -> None: ...

    def on_end(self) -> None: ...

    def on_reset(self, code: int) -> None: ...

    def on_lost(self, refused: bool) -> None:
        """The connection went (or went away): `refused` when the server never saw the stream."""

    def expire(self) -> None: ...


class ConnectionFull(Exception):
    """No stream can be opened on this connection now (full, draining or closed)."""


def header_field(name: str, value: str) -> bytes:
    """One header's HPACK bytes, independent of any table state (as `hpack_literals.encode_field`).

    The common case, a short header that is not a credential, is written here
    directly: a literal without indexing, new name, one length byte each.
    """
    raw_name, raw_value = name.encode(), value.encode()
    if len(raw_name) < 127 and len(raw_value) < 127 and raw_name not in SENSITIVE:
        return b"\x00%c%b%c%b" % (len(raw_name), raw_name, len(raw_value), raw_value)
    return encode_field(raw_name, raw_value)


class _BlockEncoder(LiteralEncoder):
    """`LiteralEncoder` that also takes a whole request's header block already joined from `header_field`s.

    A block arrives as the one pair `(b"", block)`: h2 then handles one pair
    per request instead of a dozen, and the fixed part is joined once per endpoint.
    """

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        if len(headers) != 1 or headers[0][0]:
            return bytes(super().encode(headers, huffman))
        block = bytes(headers[0][1])
        table = self.header_table
        if table.resized:
            table.resized = False
            return bytes(self._encode_table_size_change()) + block
        return block


class H2ClientConnection(H2Protocol):
    def __init__(self, keepalive: GrpcKeepalive | None, on_close: Callable[[H2ClientConnection], None]) -> None:
        super().__init__(client_side=True)
        self.conn.encoder = _BlockEncoder()
        self.loop = self._loop
        self.streams: dict[int, StreamHandler] = {}
        self.ready: asyncio.Future[None] = self._loop.create_future()
        self.max_streams = 100  # until the server's SETTINGS say otherwise
        self.draining = False
        self._on_close = on_close
        self._room: deque[asyncio.Future[None]] = deque()
        self._flushed_through = 0
        self._sweep: asyncio.TimerHandle | None = None
        self._sweep_at = math.inf
        self._keepalive = keepalive
        self._heard = False
        self._keepalive_timer: asyncio.TimerHandle | None = None
        self._events: dict[type, Callable[[Any], None]] = {
            h2.events.ResponseReceived: self._response,
            h2.events.DataReceived: self._data,
            h2.events.TrailersReceived: self._trailers,
            h2.events.StreamEnded: self._ended,
            h2.events.StreamReset: self._reset,
            h2.events.RemoteSettingsChanged: self._settings,
            h2.events.ConnectionTerminated: self._goaway,
            h2.events.PingAckReceived: self._ping_ack,
        }

    # opening streams

    @property
    def open(self) -> bool:
        return not self.closed and not self.draining

    def has_room(self) -> bool:
        return not self.closed and not self.draining and len(self.streams) < self.max_streams

    def open_stream(self, handler: StreamHandler, block: bytes, end_stream: bool) -> int:
        """Send a request's header block (`header_field`s, pseudo-headers first) on a new stream.

        Raises `ConnectionFull` when no stream can be opened now.
        """
        if not self.has_room():
            raise ConnectionFull
        conn = self.conn
        try:
            stream_id = conn.get_next_available_stream_id()
            conn.send_headers(stream_id, [(b"", block)], end_stream=end_stream)
        except h2.exceptions.NoAvailableStreamIDError:
            self._drain()
            raise ConnectionFull from None
        except (h2.exceptions.TooManyStreamsError, h2.exceptions.ProtocolError):
            raise ConnectionFull from None
        self.streams[stream_id] = handler
        if handler.when < self._sweep_at:
            self._arm_sweep(handler.when)
        self.schedule_flush()
        return stream_id

    async def room(self) -> None:
        """Until a stream can be opened (raises `ConnectionFull` if the connection closes or drains first)."""
        waiter = self._loop.create_future()
        self._room.append(waiter)
        try:
            await waiter
        finally:
            if not waiter.done() and waiter in self._room:
                self._room.remove(waiter)

    def abandon(self, stream_id: int, code: ErrorCodes = ErrorCodes.CANCEL) -> None:
        """This side gives up a stream: RST_STREAM, and the stream's slot is free."""
        if self.streams.pop(stream_id, None) is not None:
            self.reset(stream_id, code)
            self._released()

    def acknowledge(self, stream_id: int, size: int) -> None:
        """`size` received bytes are consumed: the peer may send as much again."""
        if not self.closed and size:
            self.conn.acknowledge_received_data(size, stream_id)
            self.schedule_flush()

    def shutdown(self) -> None:
        """GOAWAY and close; streams still open are lost."""
        if not self.closed:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.conn.close_connection()
            self.flush()
            self.close()
        self._fail_all(after=math.inf)

    # transport

    def data_received(self, data: bytes) -> None:
        self._heard = True
        super().data_received(data)

    def flush(self) -> None:
        super().flush()
        self._flushed_through = self.conn.highest_outbound_stream_id or 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._keepalive is not None:
            self._keepalive_timer = self._loop.call_later(self._keepalive.time, self._keepalive_due)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"the connection closed before HTTP/2 settings: {exc}"))
        for timer in (self._sweep, self._keepalive_timer):
            if timer is not None:
                timer.cancel()
        self._fail_all(after=self._flushed_through)
        self._on_close(self)

    def _fail_all(self, after: float) -> None:
        """Every stream is lost; those numbered `after` the last one written never left: refused."""
        streams, self.streams = self.streams, {}
        for stream_id, handler in streams.items():
            handler.on_lost(stream_id > after)
        self._wake_all()

    # events

    def handle_event(self, event: Any) -> None:
        handle = self._events.get(type(event))
        if handle is not None:
            handle(event)

    def _response(self, event: h2.events.ResponseReceived) -> None:
        handler = self.streams.get(event.stream_id)
        if handler is not None:
            handler.on_headers(cast(Headers, event.headers), event.stream_ended is not None)

    def _data(self, event: h2.events.DataReceived) -> None:
        stream_id: int = event.stream_id
        handler = self.streams.get(stream_id)
        if handler is not None:
            handler.on_data(event.data, event.flow_controlled_length)
        else:
            self.conn.acknowledge_received_data(event.flow_controlled_length, stream_id)

    def _trailers(self, event: h2.events.TrailersReceived) -> None:
        handler = self.streams.get(event.stream_id)
        if handler is not None:
            handler.on_trailers(cast(Headers, event.headers))

    def _ended(self, event: h2.events.StreamEnded) -> None:
        stream_id: int = event.stream_id
        handler = self.streams.pop(stream_id, None)
        if handler is None:
            return
        handler.on_end()
        if not handler.sent_end:
            self.reset(stream_id, ErrorCodes.NO_ERROR)
        self._released()

    def _reset(self, event: h2.events.StreamReset) -> None:
        handler = self.streams.pop(event.stream_id, None)
        if handler is not None:
            handler.on_reset(int(event.error_code or 0))
            self._released()

    def _settings(self, event: h2.events.RemoteSettingsChanged) -> None:
        before = self.max_streams
        self.max_streams = self.conn.remote_settings.max_concurrent_streams
        if not self.ready.done():
            self.ready.set_result(None)
        for _ in range(max(self.max_streams - before, 0)):
            if not self._wake_one():
                break

    def _goaway(self, event: h2.events.ConnectionTerminated) -> None:
        last = event.last_stream_id if event.last_stream_id is not None else 0
        log.info("upstream connection going away (%s, last stream %d)", event.error_code, last)
        self._drain()
        for stream_id in [s for s in self.streams if s > last]:
            self.streams.pop(stream_id).on_lost(refused=True)
        if not self.streams:
            self.close()

    def _drain(self) -> None:
        if not self.draining:
            self.draining = True
            self._on_close(self)
            self._wake_all()

    def _released(self) -> None:
        if self.draining:
            if not self.streams:
                self.close()
            return
        self._wake_one()

    def _wake_one(self) -> bool:
        while self._room:
            waiter = self._room.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return True
        return False

    def _wake_all(self) -> None:
        waiters, self._room = self._room, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(ConnectionFull())

    # deadlines: one timer for the earliest, rescanned when it fires

    def _arm_sweep(self, when: float) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
        self._sweep_at = when
        self._sweep = self._loop.call_at(when, self._sweep_due)

    def _sweep_due(self) -> None:
        self._sweep = None
        self._sweep_at = math.inf
        now = self._loop.time()
        for handler in [h for h in self.streams.values() if h.when <= now]:
            handler.expire()
        if self.streams:
            self._arm_sweep(min(h.when for h in self.streams.values()))

    # keepalive

    def _keepalive_due(self) -> None:
        keepalive = self._keepalive
        assert keepalive is not None
        if self._heard or not (self.streams or keepalive.without_calls):
            self._heard = False
            self._keepalive_timer = self._loop.call_later(keepalive.time, self._keepalive_due)
            return
        self.conn.ping(PING)
        self.flush()
        self._keepalive_timer = self._loop.call_later(keepalive.timeout, self._ping_unanswered)

    def _ping_ack(self, event: h2.events.PingAckReceived) -> None:
        if self._keepalive is not None and event.ping_data == PING and self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
            self._heard = False
            self._keepalive_timer = self._loop.call_later(self._keepalive.time, self._keepalive_due)

    def _ping_unanswered(self) -> None:
        log.warning("upstream connection did not answer a keepalive ping; dropping it")
        if self.transport is not None:
            self.transport.abort()
