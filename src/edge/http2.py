"""One HTTP/2 connection on an asyncio transport, driven by h2: the base of the gRPC door and the gRPC client.

h2 is a state machine without I/O: it turns bytes into events and calls into
frames. This class is the I/O around it that both sides need the same way:
every event of a read goes to `handle_event`, the frames that the read and
its handlers produced leave in one write, frames produced elsewhere (a
handler task replying) leave once at the end of the loop pass
(`schedule_flush`), and DATA waits for the peer's flow-control window and
for the transport's buffer to drain. Measured on this machine, a unary call
proxied over h2 on both sides costs about half the CPU of grpc.aio
(docs/performance.md).

h2's own header validation is off (`configuration`): it cost ~75 us per
proxied call, and the door and the client check what they rely on
themselves. Headers are encoded and decoded through `hpack_literals.py`.

Against a hostile or broken peer, the server side differs from the client
side in two ways. A stream opened past MAX_CONCURRENT_STREAMS is refused
with RST_STREAM REFUSED_STREAM (`StreamRefused`) where h2 would end the whole
connection, as grpc-core and nginx do. And while the transport's write buffer
is above its high-water mark, the server stops reading from the peer: a peer
that does not read (PING flood, many calls) cannot make the gateway buffer its
answers without bound. Only the server does this: if both ends of a link
stopped reading while they could not write, they could wait for each other.
A connection that is closed while its peer does not read is cut after
`CLOSE_LINGER` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

from edge.hpack_literals import LeanDecoder, LiteralEncoder, cache_huffman_decoding

log = logging.getLogger("edge.http2")

WINDOW = 1 << 24  # the stream and connection windows this side advertises
MAX_HEADER_LIST = 1 << 16
DEFAULT_WINDOW = 65535
CLOSE_LINGER = 10.0  # seconds a closing connection may wait for its peer to read what is left
TLS_CLOSE_LINGER = 1.0  # seconds a closing TLS connection waits for the peer's close_notify

WindowUpdated = h2.events.WindowUpdated
RemoteSettingsChanged = h2.events.RemoteSettingsChanged
StreamReset = h2.events.StreamReset

cache_huffman_decoding()


class StreamClosed(ConnectionError):
    """The stream was reset or the connection went while this side was sending on it."""


class StreamRefused(h2.events.Event):
    """The peer opened a stream past MAX_CONCURRENT_STREAMS; it was answered with RST_STREAM REFUSED_STREAM."""

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class LingeringH2Connection(h2.connection.H2Connection):
    """An `H2Connection` that keeps serving the streams in flight after the peer's GOAWAY.

    h2 treats a received GOAWAY as the end of the connection: it drops the
    frames queued and refuses to send any more, which would fail the calls
    the peer still expects answers to (a server restarting gracefully, a
    caller going away politely). Here GOAWAY is only reported; each side
    stops opening streams and closes once the last one ends.

    It also remembers fewer closed streams: h2 keeps the last 65,536 per
    connection (how each closed, to tell a late frame on one from a protocol
    error), about 8 MiB on every busy long-lived connection. A late frame
    arrives within a round trip, when at most a few times the concurrency
    limit of streams can have closed since.
    """

    MAX_CLOSED_STREAMS = 4096

    def _receive_goaway_frame(self, frame: GoAwayFrame) -> tuple[list[Any], list[Any]]:
        event = h2.events.ConnectionTerminated()
        try:
            event.error_code = ErrorCodes(frame.error_code)
        except ValueError:
            event.error_code = frame.error_code
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]


class ServerH2Connection(LingeringH2Connection):
    """A server-side `H2Connection` that refuses a stream above the concurrency limit instead of the connection.

    h2 raises TooManyStreamsError, a connection error, before it decodes the
    header block. Here the block is decoded as usual (HPACK state is shared by
    the connection), the stream opened and reset at once, and the request's
    events are replaced by one `StreamRefused`.
    """

    _admitting = False

    @property
    def open_inbound_streams(self) -> int:
        return 0 if self._admitting else super().open_inbound_streams

    def _receive_headers_frame(self, frame: Any) -> tuple[list[Any], list[Any]]:
        stream_id = frame.stream_id
        if stream_id in self.streams or self.open_inbound_streams < self.local_settings.max_concurrent_streams:
            return super()._receive_headers_frame(frame)
        self._admitting = True
        try:
            frames, events = super()._receive_headers_frame(frame)
        finally:
            self._admitting = False
        frames = [*frames, *self.streams[stream_id].reset_stream(ErrorCodes.REFUSED_STREAM)]
        kept = [event for event in events if getattr(event, "stream_id", None) != stream_id]
        return frames, [*kept, StreamRefused(stream_id)]


def configuration(client_side: bool) -> h2.config.H2Configuration:
    return h2.config.H2Configuration(
        client_side=client_side,
        header_encoding="latin-1",
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=False,
        normalize_inbound_headers=False,
        split_outbound_cookies=False,
    )


class H2Protocol(asyncio.Protocol):
    """An h2 connection's transport side; subclasses handle its events."""

    def __init__(self, client_side: bool, max_concurrent_streams: int = 1000) -> None:
        connection = LingeringH2Connection if client_side else ServerH2Connection
        self.conn = connection(configuration(client_side))
        self.conn.encoder = LiteralEncoder()
        decoder = LeanDecoder()
        decoder.max_header_list_size = self.conn.decoder.max_header_list_size
        self.conn.decoder = decoder
        self.conn.local_settings = h2.settings.Settings(
            client=client_side,
            initial_values={
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: WINDOW,
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_concurrent_streams,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
            },
        )
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._flush_pending = False
        self._window_waiters: dict[int, asyncio.Future[None]] = {}
        self._writable: asyncio.Future[None] | None = None
        self._reads_pause = not client_side  # see the module docstring: only the server stops reading
        self._linger: asyncio.TimerHandle | None = None
        self._hung_up = False

    # transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport subclasses
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(WINDOW - DEFAULT_WINDOW)
        self.flush()

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing() or self._hung_up:
            return  # what a closing transport still hands over is not read (a broken peer is logged once)
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as error:
            log.info("http/2 peer broke the protocol (%s); closing the connection", error)
            self.flush()
            self.close()
            return
        event: Any
        for event in events:
            kind = type(event)
            if kind is WindowUpdated or kind is RemoteSettingsChanged:
                self._window_opened(event.stream_id if kind is WindowUpdated else 0)
            elif kind is StreamReset:
                self.stream_gone(event.stream_id)
            self.handle_event(event)
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._linger is not None:
            self._linger.cancel()
        gone = StreamClosed("the connection closed")
        for waiter in self._window_waiters.values():
            if not waiter.done():
                waiter.set_exception(gone)
        self._window_waiters.clear()
        if self._writable is not None and not self._writable.done():
            self._writable.set_exception(gone)
        self._release_streams()

    def _release_streams(self) -> None:
        """Drop h2's per-stream state now the connection is gone.

        An `H2Connection` is a reference cycle (its frame dispatch table holds
        its own bound methods), so it is freed only by a full collection,
        which a serving process runs rarely (`cli._settle_heap`); without this
        every closed connection held its streams and up to `MAX_CLOSED_STREAMS`
        remembered ones until then (~7 MB per 16 connections in the gRPC bench).
        """
        conn = self.conn
        conn.streams.clear()
        conn._closed_streams.clear()

    def pause_writing(self) -> None:
        if self._writable is None or self._writable.done():
            self._writable = self._loop.create_future()
        if self._reads_pause and self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        if self._reads_pause and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def handle_event(self, event: Any) -> None:
        """One h2 event of a read; frames it causes leave with the read's one write."""

    # sending

    def flush(self) -> None:
        self._flush_pending = False
        if self.closed or self.transport is None:
            return
        data = self.conn.data_to_send()
        if data:
            self.transport.write(data)

    def schedule_flush(self) -> None:
        """Write what h2 holds once this loop pass ends (with whatever else the pass adds)."""
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self.flush)

    def send_headers(self, stream_id: int, headers: list[tuple[str, str]], end_stream: bool = False) -> None:
        """Raises `StreamClosed` when the stream or the connection is gone."""
        try:
            self.conn.send_headers(stream_id, headers, end_stream=end_stream)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as error:
            raise StreamClosed(str(error) or "the stream is closed") from None
        self.schedule_flush()

    def fits(self, stream_id: int, size: int) -> bool:
        """`size` bytes of DATA can go now, in one frame, without waiting."""
        conn = self.conn
        return (
            size <= conn.max_outbound_frame_size
            and size <= conn.local_flow_control_window(stream_id)
            and (self._writable is None or self._writable.done())
        )

    async def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """DATA as the peer's windows allow; raises `StreamClosed` if the stream or the connection goes first."""
        conn = self.conn
        try:
            if self.fits(stream_id, len(data)):
                conn.send_data(stream_id, data, end_stream=end_stream)
                self.schedule_flush()
                return
            view = memoryview(data)
            while True:
                if self._writable is not None and not self._writable.done():
                    await self._writable
                size = min(len(view), conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size)
                if size == 0 and len(view):
                    await self._window(stream_id)
                    continue
                last = size == len(view)
                conn.send_data(stream_id, view[:size].tobytes(), end_stream=end_stream and last)
                self.schedule_flush()
                if last:
                    return
                view = view[size:]
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as error:
            raise StreamClosed(str(error) or "the stream is closed") from None

    def end_stream(self, stream_id: int) -> None:
        """Raises `StreamClosed` when the stream or the connection is gone."""
        try:
            self.conn.end_stream(stream_id)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as error:
            raise StreamClosed(str(error) or "the stream is closed") from None
        self.schedule_flush()

    def reset(self, stream_id: int, code: ErrorCodes = ErrorCodes.CANCEL) -> None:
        """Reset a stream this side no longer wants; nothing happens if it is already closed."""
        if self.closed:
            return
        try:
            self.conn.reset_stream(stream_id, code)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        self.stream_gone(stream_id)
        self.schedule_flush()

    def stream_gone(self, stream_id: int) -> None:
        """A stream ended by a reset: a sender waiting for its window learns it now."""
        waiter = self._window_waiters.pop(stream_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_exception(StreamClosed("the stream was reset"))

    def close(self) -> None:
        """Close once what is written has left; a peer that does not read it is cut after `CLOSE_LINGER`.

        A TLS connection also waits for the peer's close_notify, which an idle
        gRPC client may never send (grpc-core keeps its connections in a pool
        past the channel's close): it is cut after `TLS_CLOSE_LINGER` instead
        of holding a graceful stop for the whole drain timeout.
        """
        transport = self.transport
        if transport is None or self.closed or transport.is_closing():
            return
        transport.close()
        if transport.get_write_buffer_size():
            self._linger = self._loop.call_later(CLOSE_LINGER, transport.abort)
        elif transport.get_extra_info("ssl_object") is not None:
            self._linger = self._loop.call_later(TLS_CLOSE_LINGER, transport.abort)

    def hang_up(self, linger: float) -> None:
        """Send what is written and end this side, discard what the peer still sends, cut after `linger` seconds.

        Closing a socket with unread input resets the connection, and the
        peer may then lose a GOAWAY sent just before; this lets it read it.
        """
        transport = self.transport
        if transport is None or self.closed or transport.is_closing() or self._hung_up:
            return
        self._hung_up = True
        self.flush()
        if not transport.can_write_eof():  # TLS
            self.close()
            return
        transport.write_eof()
        self._linger = self._loop.call_later(linger, transport.abort)

    async def _window(self, stream_id: int) -> None:
        waiter = self._window_waiters.get(stream_id)
        if waiter is None or waiter.done():
            waiter = self._window_waiters[stream_id] = self._loop.create_future()
        await waiter

    def _window_opened(self, stream_id: int) -> None:
        if stream_id == 0:
            waiters = list(self._window_waiters.values())
            self._window_waiters.clear()
        else:
            waiter = self._window_waiters.pop(stream_id, None)
            waiters = [waiter] if waiter is not None else []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
