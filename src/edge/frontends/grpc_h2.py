"""The gRPC door on h2 (`listeners.grpc.engine: h2`): gRPC's HTTP/2 mapping served from the event loop.

The same door as `grpc.py` without grpc.aio's server: each HTTP/2 stream is a
call, its headers the metadata (`-bin` values decoded), `grpc-timeout` its
deadline; the caller's messages are deframed as DATA arrives, and the reply
goes out as response headers (initial metadata), framed messages and
trailers (status, message, trailing metadata), or as one trailers-only block
for a local answer. A unary method the protos registry knows runs its
pipeline once the request stream has ended, with its one message as bytes;
any other method runs at once, its messages flowing through as they come.
A caller's RST_STREAM cancels the call (the upstream call with it), and it
is told apart from the end of its messages, so no half-close grace applies.

Why not grpc.aio: a proxied unary call costs grpc.aio ~410-460 us of CPU
here (five completion-queue events, each a thread hand-off), the same call on
h2 about half (docs/performance.md, "gRPC door on h2"). The gateway's own
services (health, server reflection) are grpcio's servicers, called here
through `own_services.py`. TLS is `ssl` with ALPN h2, so a listener can ask
for an optional client certificate and set a minimum TLS version, and the
certificate reloads like the HTTP listener's.

Against hostile or broken callers (tests/grpc/test_grpc_h2_abuse.py): a
caller that resets calls before their answer, or opens streams past the
limit, more than `RESET_BURST` at once or `RESET_RATE` a second after that
(a token bucket) is sent GOAWAY ENHANCE_YOUR_CALM and cut off (HTTP/2
Rapid Reset, CVE-2023-44487: each stream may start a call; nghttp2 allows a
burst of 1000 and 33 a second, Envoy half of 500 streams, nginx 2x the
stream limit per read). A caller that does not read stops being read
(edge.http2). More than `limits.max_headers` header fields, or one longer than
`limits.max_header_line`, end the call with RESOURCE_EXHAUSTED as the HTTP
door answers 431; a header block above 64 KiB ends the connection
(GOAWAY ENHANCE_YOUR_CALM, from h2). A connection must send its preface and
SETTINGS within `HANDSHAKE_TIMEOUT` (grpc-core's server allows 120 s for the
whole handshake, TLS included; asyncio's TLS handshake has its own 60 s), and
one without calls for `IDLE_TIMEOUT` is sent GOAWAY and closed (Envoy's
default; grpc-core keeps idle connections and pings them every 2 hours;
gRPC clients reconnect on their next call). A caller that vanishes while its
calls stay open (a long Watch) is found by TCP keepalive on every accepted
socket, the kernel's probes after 2 hours idle, where grpc-core's server
pings after 2 hours. A call on which no HEADERS or DATA moves either way
for `limits.stream_idle_timeout` (a caller that never finishes its
request, a watch whose backend went quiet) is ended UNAVAILABLE and its
upstream call cancelled (`_cut_idle`; Envoy's `stream_idle_timeout`, 5
minutes; grpc-core has no such limit): each stream only records that a frame
moved, and the connection's one timer looks. grpc-core's PING strike rule
(GOAWAY after pings more often than every 5 minutes) is not copied: pings
cost a read's worth of CPU and are bounded like any other frame.

Each call is a `GrpcStream` (grpc_stream.py: its messages, flow control and
reply); a unary call's second message ends it. When a stream ends, whatever
window it had not returned is. What a stream becomes, a call through the
pipeline or one of the gateway's own services, is grpc_h2_door.py's.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from contextlib import suppress
from typing import Any

import h2.events
import h2.exceptions
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

from edge.call import Denial, Metadata, MetaValue, Peer
from edge.config.gateway import Limits
from edge.deadlines import Deadlines
from edge.errors import EdgeError, Status
from edge.frontends.grpc import GrpcDoor, denial_trailers
from edge.frontends.grpc_h2_door import GrpcH2Door
from edge.frontends.grpc_stream import STATUS_TEXT, GrpcStream
from edge.frontends.open_connections import OpenConnections
from edge.frontends.own_services import OwnServices
from edge.grpc_wire import (
    ACCEPT_ENCODING,
    ENCODINGS,
    Deframer,
    WireError,
    parse_timeout,
)
from edge.http2 import H2Protocol, StreamClosed, StreamRefused

log = logging.getLogger("edge.grpc")

RequestReceived = h2.events.RequestReceived
DataReceived = h2.events.DataReceived
StreamEnded = h2.events.StreamEnded
StreamReset = h2.events.StreamReset
ConnectionTerminated = h2.events.ConnectionTerminated
RemoteSettingsChanged = h2.events.RemoteSettingsChanged

HANDSHAKE_TIMEOUT = 20.0  # seconds from accept to the caller's SETTINGS
IDLE_TIMEOUT = 3600.0  # seconds a connection may stay without calls
IDLE_CHECKS = 8  # checks for idle calls per `limits.stream_idle_timeout`: a call is cut within 1.25 times it
MAX_STREAMS = 1000  # MAX_CONCURRENT_STREAMS the door advertises
RESET_BURST = 2 * MAX_STREAMS  # streams the caller may reset (or open past the limit) at once ...
RESET_RATE = MAX_STREAMS / 10  # ... and a second after that
CALM_LINGER = 1.0  # seconds a caller sent ENHANCE_YOUR_CALM has to read it before the connection is cut
IDLE_MESSAGE = "the call was idle for {:g} s, no frame either way (limits.stream_idle_timeout)"

# Request headers that are HTTP/2 or gRPC framing, not the caller's metadata.
NOT_METADATA = frozenset({"content-type", "te", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding"})


class GrpcH2Connection(H2Protocol):
    """One caller's HTTP/2 connection: a `GrpcStream` per call, each call its own task."""

    def __init__(self, listener: GrpcH2Listener) -> None:
        super().__init__(client_side=False, max_concurrent_streams=MAX_STREAMS)
        self.listener = listener
        self.door = listener.door
        self.limits = listener.limits
        self.streams: dict[int, GrpcStream] = {}
        self.peer = Peer("unknown")
        self.loop = asyncio.get_running_loop()
        self.draining = False
        self.calmed = False
        self.advanced = 0  # bytes of unfinished messages returned ahead (`GrpcStream.return_window`)
        self.starved: set[GrpcStream] = set()  # streams holding such bytes back for want of budget
        self.stream_idle = listener.limits.stream_idle_timeout
        self._greeted = False
        self._idle_since = self.loop.time()
        self._timer: asyncio.TimerHandle | None = None
        self._resets = float(RESET_BURST)
        self._resets_at = self._idle_since

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.peer = _peer(transport, self.listener.door.scheme == "https")
        self.listener.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self._timer = self.loop.call_later(HANDSHAKE_TIMEOUT, self._due)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._timer is not None:
            self._timer.cancel()
        for stream in list(self.streams.values()):
            self._cancel(stream)
        self.streams.clear()
        self.starved.clear()
        self.listener.forget(self)

    def handle_event(self, event: Any) -> None:
        if self.calmed:
            return
        kind = type(event)
        if kind is DataReceived:
            stream = self.streams.get(event.stream_id)
            if stream is None:
                self.acknowledge(event.stream_id, event.flow_controlled_length)
                return
            try:
                stream.received(event.data, event.flow_controlled_length)
            except WireError as error:
                self._fail(stream, error)
        elif kind is RequestReceived:
            self._open(event)
        elif kind is StreamEnded:
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                try:
                    stream.finished()
                except WireError as error:
                    self._fail(stream, error)
                    return
                if stream.task is None:
                    self._start_unary(stream)
        elif kind is StreamReset:
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                self._forget(stream)
                self._cancel(stream)
                self._count_reset()
        elif kind is StreamRefused:
            self._count_reset()
        elif kind is RemoteSettingsChanged and not self._greeted:
            self._greeted = True
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_later(self._check_in(0.0), self._due)
        elif kind is ConnectionTerminated:
            self.draining = True
            if not self.streams:
                self.close()

    def _open(self, event: Any) -> None:
        stream_id = event.stream_id
        if self.draining:
            self.reset(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        method = path = content_type = ""
        encoding = None
        timeout = None
        pairs: list[tuple[str, MetaValue]] = []
        longest = pseudo = 0
        for name, value in event.headers:
            size = len(name) + len(value)
            if size > longest:
                longest = size
            if name[0] == ":":
                pseudo += 1
                if name == ":path":
                    path = value
                elif name == ":method":
                    method = value
            elif name in NOT_METADATA:
                if name == "content-type":
                    content_type = value
                elif name == "grpc-timeout":
                    timeout = parse_timeout(value)
                elif name == "grpc-encoding":
                    encoding = value
            elif name.endswith("-bin"):
                pairs.append((name, self.door.binary(name, value)))
            else:
                pairs.append((name, value))
        stream = GrpcStream(self, stream_id, path, Deframer(self.limits.max_grpc_message, encoding))
        stream.metadata = Metadata(pairs)
        stream.timeout = timeout
        if method != "POST" or not content_type.startswith("application/grpc"):
            with suppress(StreamClosed):  # the caller reset the stream in the same read
                self._refuse_http(stream, method, 405 if method != "POST" else 415)
            return
        problem = self._headers_problem(len(event.headers) - pseudo, longest)
        if problem is None and encoding is not None and encoding not in ENCODINGS:
            problem = Status.UNIMPLEMENTED, f"grpc-encoding {encoding} is not supported (use {ACCEPT_ENCODING})"
        if problem is not None:
            self._end(stream, Denial(*problem))
            return
        self.streams[stream_id] = stream
        handler = self.door.handler(path)
        if handler is not None:
            stream.own = True
            stream.task = self.loop.create_task(self._run(stream, handler(stream)))
            return
        client_streaming, server_streaming = self.door.kind(path)
        stream.unary_request = not client_streaming and not server_streaming
        stream.unary_response = not server_streaming
        if not stream.unary_request:
            stream.task = self.loop.create_task(self._run(stream, self._streamed(stream)))

    def _headers_problem(self, fields: int, longest: int) -> tuple[Status, str] | None:
        """`limits.max_headers` and `max_header_line` as the HTTP door applies them (431 there).

        Pseudo-headers are the request line: they count towards the line length, not the fields.
        """
        limits = self.limits
        if fields > limits.max_headers:
            return Status.RESOURCE_EXHAUSTED, f"{fields} header fields, more than the limit of {limits.max_headers}"
        if longest + 2 > limits.max_header_line:
            return Status.RESOURCE_EXHAUSTED, f"a header field is longer than {limits.max_header_line} bytes"
        return None

    def _start_unary(self, stream: GrpcStream) -> None:
        if len(stream.messages) != 1:  # grpc's cardinality violation
            self._end(stream, Denial(Status.INTERNAL, f"a unary call carried {len(stream.messages)} messages"))
            return
        message = stream.messages.popleft()
        stream.give_back()
        stream.task = self.loop.create_task(self._run(stream, self.door.unary_call(stream, message)))

    async def _run(self, stream: GrpcStream, work: Any) -> None:
        try:
            if stream.timeout is None:
                await work
            else:
                with self.listener.deadlines.after(stream.timeout):
                    await work
        except TimeoutError:
            with suppress(StreamClosed):
                stream.answer(Status.DEADLINE_EXCEEDED, "the call's deadline passed")
                self.reset(stream.id, ErrorCodes.NO_ERROR)
        except (asyncio.CancelledError, StreamClosed):
            pass
        except Exception:
            log.exception("grpc stream %d of %s failed", stream.id, self.peer.address)
            with suppress(StreamClosed):
                stream.answer(Status.INTERNAL, "internal error")
        finally:
            self._forget(stream)
            if self.draining and not self.streams:
                self.flush()
                self.close()

    def _forget(self, stream: GrpcStream) -> None:
        """The stream leaves the table; the window its unread bytes hold goes back to the caller."""
        if self.streams.pop(stream.id, None) is None:
            return
        self.starved.discard(stream)
        stream.release()
        if not self.streams:
            self._idle_since = self.loop.time()

    def refund(self, stream: GrpcStream) -> None:
        """`stream`'s bytes returned ahead are accounted for: the budget they held may go to a starved stream."""
        self.advanced -= stream.advanced
        stream.advanced = 0
        if self.starved:
            starved, self.starved = self.starved, set()
            for other in starved:
                if other.id in self.streams and not other.messages:
                    other.return_window()

    def _fail(self, stream: GrpcStream, error: EdgeError) -> None:
        """The caller framed a message wrongly or too large: the call ends with the error's status."""
        self._end(stream, Denial.from_error(error))

    def _cancel(self, stream: GrpcStream) -> None:
        if stream.task is not None:
            stream.task.cancel()

    def _count_reset(self) -> None:
        """A stream the caller reset before its answer, or opened past the limit: Rapid Reset past the budget."""
        now = self.loop.time()
        self._resets = min(RESET_BURST, self._resets + (now - self._resets_at) * RESET_RATE) - 1
        self._resets_at = now
        if self._resets < 0:
            self._calm()

    def _calm(self) -> None:
        log.warning("grpc caller %s resets streams faster than allowed; GOAWAY ENHANCE_YOUR_CALM", self.peer.address)
        self.calmed = self.draining = True
        with suppress(h2.exceptions.ProtocolError):
            self.conn.close_connection(ErrorCodes.ENHANCE_YOUR_CALM, b"too many streams reset")
        for stream in list(self.streams.values()):
            self._forget(stream)
            self._cancel(stream)
        self.hang_up(CALM_LINGER)

    def _due(self) -> None:
        """The handshake deadline, then the idle checks: of the calls (`_cut_idle`) and of the connection.

        One timer a connection, every `stream_idle_timeout / IDLE_CHECKS`
        (37.5 s by default; a call opened between checks needs no timer of
        its own): a call seen without a frame since the check before is idle
        from that check on, so it is never cut early and at most two check
        intervals late. A connection without calls for `IDLE_TIMEOUT` goes
        away.
        """
        self._timer = None
        if self.closed or self.draining:
            return
        if not self._greeted:
            log.info("grpc caller %s sent no HTTP/2 preface within %g s; closing", self.peer.address, HANDSHAKE_TIMEOUT)
            self.abort()
            return
        now = self.loop.time()
        if self.streams and self.stream_idle:
            self._check_streams(now)
        idle = 0.0 if self.streams else now - self._idle_since
        if idle >= IDLE_TIMEOUT:
            self.shut_down()
            return
        self._timer = self.loop.call_later(self._check_in(idle), self._due)

    def _check_in(self, idle: float) -> float:
        """Seconds to the next check, the connection idle for `idle` seconds."""
        wait = IDLE_TIMEOUT - idle
        return min(wait, self.stream_idle / IDLE_CHECKS) if self.stream_idle else wait

    def _check_streams(self, now: float) -> None:
        limit = self.stream_idle
        for stream in list(self.streams.values()):
            if stream.moved:
                stream.moved = False
                stream.quiet_since = now
            elif now - stream.quiet_since >= limit and not (stream.own and stream.ended):
                self._cut_idle(stream)

    def _cut_idle(self, stream: GrpcStream) -> None:
        """End a call idle past `limits.stream_idle_timeout` with UNAVAILABLE (`_end`).

        The caller is told in trailers (grpc-status and a message naming the
        limit, as Envoy's `stream_idle_timeout` answers before any response
        headers) even when the response headers went already, where Envoy
        only resets the stream and the caller is left with an HTTP/2 error
        code. The gateway's own Watch calls, idle by design once the request
        is in, are left alone (`_check_streams`).
        """
        log.info("grpc call %s on stream %d of %s idle; ending it", stream.path, stream.id, self.peer.address)
        self._end(stream, Denial(Status.UNAVAILABLE, IDLE_MESSAGE.format(self.stream_idle)))

    def _end(self, stream: GrpcStream, denial: Denial) -> None:
        """The door ends a call itself: the caller is told `denial`, its upstream call is cancelled, its audit record says the same.

        A call whose pipeline runs gets `Call.cut`, which the pipeline records
        when the cancel reaches it; one whose pipeline has not started (a
        unary request never finished or framed wrongly, a stream whose first
        message came wrong in the read that opened it) runs it now, refused,
        to be answered and audited. RST_STREAM NO_ERROR then frees the stream slot
        if the caller had not ended its side.
        """
        self._forget(stream)
        call = stream.call
        if call is None and not stream.own:
            if stream.task is None:
                stream.task = self.loop.create_task(self._run(stream, self._refuse(stream, denial)))
            else:
                stream.refusal = denial  # its task has not run yet (`_streamed`)
            return
        if call is not None:
            call.cut = denial
        self._cancel(stream)
        with suppress(StreamClosed):
            stream.answer(denial.status, denial.message, denial_trailers(call, denial) if call is not None else ())
        self.reset(stream.id, ErrorCodes.NO_ERROR)

    async def _streamed(self, stream: GrpcStream) -> None:
        """A streaming call's pipeline, or its refusal when the door ended the call before this task ran."""
        if stream.refusal is None:
            await self.door.stream(stream)
        else:
            await self._refuse(stream, stream.refusal)

    async def _refuse(self, stream: GrpcStream, denial: Denial) -> None:
        await self.door.refuse(stream, denial)
        self.reset(stream.id, ErrorCodes.NO_ERROR)

    def _refuse_http(self, stream: GrpcStream, method: str, status: int) -> None:
        """A request that is not gRPC: an HTTP status with a grpc-status, audited as the HTTP door audits what it cannot parse."""
        code = Status.UNIMPLEMENTED if status == 405 else Status.INTERNAL
        message = "gRPC calls are POST requests" if status == 405 else "content-type must be application/grpc"
        self.door.audit_refusal(stream, method, Denial(code, message, http=status))
        head = [(":status", str(status)), ("grpc-status", STATUS_TEXT[code]), ("grpc-message", message)]
        self.send_headers(stream.id, head, end_stream=True)

    def acknowledge(self, stream_id: int, size: int) -> None:
        with suppress(Exception):
            self.conn.acknowledge_received_data(size, stream_id)
            self.schedule_flush()

    def shut_down(self) -> None:
        """GOAWAY: no new calls; the connection closes when its calls end."""
        self.draining = True
        self.flush()
        if self.transport is not None and not self.closed:
            # h2's close_connection would also stop the streams in flight; the frame alone lets them finish
            last = self.conn.highest_inbound_stream_id
            self.transport.write(GoAwayFrame(0, last_stream_id=last, error_code=0).serialize())
        if not self.streams:
            self.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def _peer(transport: asyncio.BaseTransport, tls: bool) -> Peer:
    address = transport.get_extra_info("peername")
    certificate = None
    if tls:
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            certificate = ssl_object.getpeercert(binary_form=True)
    if isinstance(address, tuple) and len(address) >= 2:
        return Peer(str(address[0]), int(address[1]), certificate)
    return Peer("unknown", 0, certificate)


class GrpcH2Listener:
    """The h2 gRPC door's server: connections, health and reflection, graceful stop."""

    def __init__(self, door: GrpcDoor, limits: Limits, own: OwnServices) -> None:
        self.door = GrpcH2Door(door, own)
        self.own = own
        self.limits = limits
        self.deadlines = Deadlines()
        self.connections: OpenConnections[GrpcH2Connection] = OpenConnections()
        self._server: asyncio.AbstractServer | None = None

    async def start(self, sock: socket.socket, ssl_context: ssl.SSLContext | None) -> None:
        if ssl_context is not None:
            ssl_context.set_alpn_protocols(["h2"])
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: GrpcH2Connection(self), sock=sock, ssl=ssl_context)

    def forget(self, connection: GrpcH2Connection) -> None:
        self.connections.forget(connection)

    async def aclose(self, drain_timeout: float) -> None:
        """Health says NOT_SERVING, GOAWAY to every caller, calls in flight get `drain_timeout`, then the rest are cut."""
        if self._server is None:
            return
        await self.own.health.enter_graceful_shutdown()
        self._server.close()
        await self.connections.drain(drain_timeout)
        await self._server.wait_closed()
        self._server = None
        self.deadlines.close()
