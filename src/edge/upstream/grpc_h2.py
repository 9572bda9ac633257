"""gRPC upstream client on h2: one multiplexed HTTP/2 connection per endpoint, raw message bytes both ways.

A drop-in for `GrpcUpstream` (upstream/grpc.py) with the same contract: a
unary call's reply is complete when `send` returns; any other call returns
once the backend's response headers are in, and the reply's body iterator
fills in `status`, `message` and `trailers` when it is exhausted. Why h2:
grpc.aio hands every call through its C core, a poller thread and several
completion-queue wake-ups; the same call driven from Python over h2 costs
the gateway roughly half the CPU (docs/performance.md, "gRPC door").

What grpcio kept in C is written here, kept small: the gRPC call over one
HTTP/2 stream (`_Exchange`: headers, length-prefixed messages, status from
trailers or a trailers-only answer, the spec's mapping of HTTP answers and
RST_STREAM codes to statuses), connecting and endpoint choice (`_Origin`),
retrying once a stream the server never saw (GOAWAY, REFUSED_STREAM), and
flow control that follows the consumer of a streamed reply. The HTTP/2
connection itself (stream table, MAX_CONCURRENT_STREAMS, GOAWAY, keepalive,
deadlines) is `h2_client.H2ClientConnection`; the wire pieces are
`edge.grpc_wire`.

When a connection is at the server's MAX_CONCURRENT_STREAMS, calls queue for
a free stream on it (as grpc-core does), within their deadline.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import AsyncIterable
from urllib.parse import urlsplit

from h2.errors import ErrorCodes

from edge import __version__
from edge.call import Call, MetaValue, Reply
from edge.config.gateway import Limits
from edge.config.gateway import Upstream as UpstreamConfig
from edge.errors import EdgeError, Status, UpstreamTimeout, UpstreamUnavailable, http_status
from edge.grpc_wire import (
    ACCEPT_ENCODING,
    Deframer,
    WireError,
    decode_value,
    encode_metadata,
    format_timeout,
    frame,
    status_from_http,
    unquote_message,
)
from edge.http2 import StreamClosed
from edge.tls import client_context
from edge.upstream import NO_MESSAGES
from edge.upstream.endpoints import Endpoints
from edge.upstream.grpc_metadata import RESPONSE_RESERVED, request_metadata
from edge.upstream.h2_client import ConnectionFull, H2ClientConnection, Headers, header_field

log = logging.getLogger("edge.upstream.grpc")

USER_AGENT = f"edge/{__version__}"
PATH_CACHE_SIZE = 4096
Metadata = list[tuple[str, MetaValue]]

# RST_STREAM codes as call statuses (PROTOCOL-HTTP2.md, "Errors"); anything else is INTERNAL.
RESET_STATUS: dict[int, Status] = {
    ErrorCodes.REFUSED_STREAM: Status.UNAVAILABLE,
    ErrorCodes.CANCEL: Status.CANCELLED,
    ErrorCodes.ENHANCE_YOUR_CALM: Status.RESOURCE_EXHAUSTED,
    ErrorCodes.INADEQUATE_SECURITY: Status.PERMISSION_DENIED,
}
STATUS_TEXT = {str(status.value): status for status in Status}


class GrpcH2Upstream:
    def __init__(self, name: str, config: UpstreamConfig, limits: Limits) -> None:
        self.name = name
        self.config = config
        self.endpoints = Endpoints(config.endpoints)
        self._max_message = limits.max_grpc_message
        context = _tls_context(config) if any(url.startswith("grpcs:") for url in config.endpoints) else None
        self._origins = {url: _Origin(url, config, context) for url in config.endpoints}
        self._single = self._origins[config.endpoints[0]] if len(config.endpoints) == 1 else None
        self._paths: dict[str, bytes] = {}
        self._pumps: set[asyncio.Task[None]] = set()
        self._closed = False

    async def send(self, call: Call) -> Reply:
        seconds = self._timeout(call)
        if seconds <= 0:
            raise UpstreamTimeout("the caller's deadline passed before the call reached the upstream")
        loop = asyncio.get_running_loop()
        when = loop.time() + seconds
        path = self._path(call.upstream_path or call.path)
        metadata = b"".join([header_field(name, value) for name, value in encode_metadata(request_metadata(call))])
        body = call.body
        if isinstance(body, bytes) and len(body) > self._max_message:
            return _too_large(len(body), self._max_message)
        for attempt in (0, 1):
            origin, conn = await self._connection(call, when)
            timeout = header_field("grpc-timeout", format_timeout(when - loop.time()))
            headers = path + origin.head + timeout + metadata
            exchange = _Exchange(conn, when, self._max_message, call.unary and isinstance(body, bytes))
            if exchange.unary:
                reply = await self._unary(conn, exchange, headers, body)  # type: ignore[arg-type]
            else:
                reply = await self._streaming(conn, exchange, headers, body)
            if not (exchange.refused and attempt == 0 and isinstance(body, bytes)):
                return reply
            log.info("upstream %s refused a stream before answering; retrying on a new one", self.name)
        raise AssertionError("unreachable")

    async def _unary(self, conn: H2ClientConnection, exchange: _Exchange, headers: bytes, body: bytes) -> Reply:
        try:
            await _request(conn, exchange, headers, body)
            while exchange.status is None:
                await exchange.wait()
        except BaseException:
            exchange.cancel()
            raise
        return exchange.unary_reply()

    async def _streaming(
        self, conn: H2ClientConnection, exchange: _Exchange, headers: bytes, body: bytes | AsyncIterable[bytes]
    ) -> Reply:
        try:
            if isinstance(body, bytes):
                await _request(conn, exchange, headers, body)
            else:
                exchange.stream_id = conn.open_stream(exchange, headers, end_stream=False)
                self._pump(conn, exchange, body)
            while exchange.initial is None and exchange.status is None:
                await exchange.wait()
        except BaseException:
            exchange.cancel()
            raise
        reply = Reply(headers=exchange.initial or [])
        reply.body = _ReplyMessages(exchange, reply)
        return reply

    def _pump(self, conn: H2ClientConnection, exchange: _Exchange, body: AsyncIterable[bytes]) -> None:
        task = asyncio.get_running_loop().create_task(_send_messages(conn, exchange, body))
        exchange.pump = task
        self._pumps.add(task)
        task.add_done_callback(self._pumps.discard)

    async def _connection(self, call: Call, when: float) -> tuple[_Origin, H2ClientConnection]:
        """A connection with a free stream: the endpoint's open one (at once), else connect or queue."""
        origin = self._single
        if origin is not None and (conn := origin.current) is not None and conn.has_room():
            call.endpoint = origin.url
            return origin, conn
        if self._closed:
            raise UpstreamUnavailable(f"upstream {self.name!r} is closed")
        for url in self.endpoints.order():
            origin = self._origins[url]
            call.endpoint = url
            conn = origin.current
            if conn is None or not conn.has_room():
                try:
                    conn = await self._stream_slot(origin, when)
                except (OSError, ConnectionError, ssl.SSLError) as error:
                    log.warning("upstream %s: %s does not accept connections: %s", self.name, url, error)
                    self.endpoints.failed(url)
                    continue
            self.endpoints.succeeded(url)
            return origin, conn
        log.warning("upstream %s: no endpoint accepts connections", self.name)
        raise UpstreamUnavailable(f"upstream {self.name!r} is unreachable")

    async def _stream_slot(self, origin: _Origin, when: float) -> H2ClientConnection:
        loop = asyncio.get_running_loop()
        connect_timeout = self.config.connect_timeout
        while True:
            conn = origin.current
            if conn is not None and not conn.open:
                origin.forget(conn)
                continue
            if conn is None:
                left = when - loop.time()
                try:
                    async with asyncio.timeout(min(left, connect_timeout)):
                        conn = await asyncio.shield(origin.connect(connect_timeout))
                except TimeoutError:
                    if left <= connect_timeout:
                        raise UpstreamTimeout(f"upstream {self.name!r}: the deadline passed while connecting") from None
                    raise ConnectionError(f"no HTTP/2 connection within {connect_timeout:.3g}s") from None
            if conn.has_room():
                return conn
            try:
                async with asyncio.timeout_at(when):
                    await conn.room()
            except ConnectionFull:
                continue
            except TimeoutError:
                raise UpstreamTimeout(
                    f"upstream {self.name!r}: the deadline passed waiting for a free stream"
                ) from None

    def _timeout(self, call: Call) -> float:
        timeout = call.route.timeout if call.route and call.route.timeout else self.config.timeout
        remaining = call.remaining()
        return timeout if remaining is None else min(timeout, remaining)

    def _path(self, path: str) -> bytes:
        field = self._paths.get(path)
        if field is None:
            if len(self._paths) >= PATH_CACHE_SIZE:
                self._paths.clear()
            field = self._paths[path] = header_field(":path", path)
        return field

    async def aclose(self) -> None:
        self._closed = True
        for origin in self._origins.values():
            origin.close()
        for task in list(self._pumps):
            task.cancel()


def _tls_context(config: UpstreamConfig) -> ssl.SSLContext:
    context = client_context(config.tls)
    context.set_alpn_protocols(["h2"])
    return context


class _Origin:
    """One endpoint: how to reach it, its static request headers, its connections."""

    def __init__(self, url: str, config: UpstreamConfig, context: ssl.SSLContext | None) -> None:
        parts = urlsplit(url)
        secure = parts.scheme == "grpcs"
        server_name = config.tls.server_name if config.tls is not None else None
        self.url = url
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if secure else 80)
        self.ssl = context if secure else None
        self.server_hostname = (server_name or self.host) if secure else None
        self.keepalive = config.grpc_keepalive
        self.head = b"".join(
            header_field(name, value)
            for name, value in (
                (":method", "POST"),
                (":scheme", "https" if secure else "http"),
                (":authority", server_name if secure and server_name else parts.netloc),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                ("user-agent", USER_AGENT),
                ("grpc-accept-encoding", ACCEPT_ENCODING),
            )
        )
        self.current: H2ClientConnection | None = None
        self.connections: set[H2ClientConnection] = set()
        self._connecting: asyncio.Task[H2ClientConnection] | None = None

    def connect(self, budget: float) -> asyncio.Task[H2ClientConnection]:
        """The connection attempt in progress, or a new one within `budget` seconds: concurrent callers share it."""
        if self._connecting is None:
            task = asyncio.get_running_loop().create_task(self._open(budget))
            task.add_done_callback(self._opened)
            self._connecting = task
        return self._connecting

    async def _open(self, budget: float) -> H2ClientConnection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(budget):
            transport, conn = await loop.create_connection(
                lambda: H2ClientConnection(self.keepalive, self.forget),
                self.host,
                self.port,
                ssl=self.ssl,
                server_hostname=self.server_hostname,
            )
            try:
                _check_alpn(transport)
                await conn.ready
            except BaseException:
                transport.abort()
                raise
        self.connections.add(conn)
        self.current = conn
        return conn

    def _opened(self, task: asyncio.Task[H2ClientConnection]) -> None:
        self._connecting = None
        if not task.cancelled():
            task.exception()  # retrieved here: a failure every waiter gave up on is not an unhandled one

    def forget(self, conn: H2ClientConnection) -> None:
        """`conn` takes no new streams (GOAWAY) or is gone."""
        if self.current is conn:
            self.current = None
        if conn.closed:
            self.connections.discard(conn)

    def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        for conn in list(self.connections):
            conn.shutdown()
        self.connections.clear()
        self.current = None


def _check_alpn(transport: asyncio.BaseTransport) -> None:
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is not None and ssl_object.selected_alpn_protocol() != "h2":
        raise ConnectionError("the upstream did not agree to HTTP/2 (ALPN h2)")


async def _request(conn: H2ClientConnection, exchange: _Exchange, headers: bytes, message: bytes) -> None:
    """One request message: HEADERS and DATA with END_STREAM, in one write when the windows allow."""
    exchange.stream_id = conn.open_stream(exchange, headers, end_stream=False)
    try:
        await conn.send_data(exchange.stream_id, frame(message), end_stream=True)
    except StreamClosed:
        exchange.lost_stream()
        return
    exchange.sent_end = True


async def _send_messages(conn: H2ClientConnection, exchange: _Exchange, body: AsyncIterable[bytes]) -> None:
    """The caller's messages as they come, as fast as the backend's window allows; END_STREAM after the last."""
    stream_id = exchange.stream_id
    try:
        async for message in body:
            if len(message) > exchange.max_message:
                exchange.pump = None
                exchange.fail(Status.RESOURCE_EXHAUSTED, _too_large(len(message), exchange.max_message).message)
                return
            await conn.send_data(stream_id, frame(message))
        conn.end_stream(stream_id)
        exchange.sent_end = True
    except StreamClosed:
        exchange.lost_stream()
    except EdgeError as error:
        exchange.pump = None
        exchange.fail(error.status, error.message)
    except Exception as error:
        log.warning("reading the caller's messages failed: %r", error)
        exchange.pump = None
        exchange.fail(Status.CANCELLED, "the caller's request stream failed")
    finally:
        exchange.pump = None


def _too_large(size: int, limit: int) -> Reply:
    """A request message above the limit never leaves (as grpc's max_send_message_length)."""
    message = f"a request message of {size} bytes is larger than the limit of {limit}"
    status = Status.RESOURCE_EXHAUSTED
    return Reply(http_status=http_status(status), body=NO_MESSAGES, status=status, message=message)


class _Exchange:
    """One gRPC call on one HTTP/2 stream: what was asked, what has come back, and how it ended."""

    __slots__ = (
        "_deframer",
        "_held",
        "_messages",
        "_reply_message",
        "_waiter",
        "conn",
        "initial",
        "max_message",
        "message",
        "pump",
        "refused",
        "sent_end",
        "status",
        "stream_id",
        "trailers",
        "unary",
        "when",
    )

    def __init__(self, conn: H2ClientConnection, when: float, max_message: int, unary: bool) -> None:
        self.conn = conn
        self.when = when
        self.unary = unary
        self.stream_id = 0
        self.sent_end = False
        self.initial: Metadata | None = None
        self.status: Status | None = None
        self.message = ""
        self.trailers: Metadata = []
        self.refused = False
        self.pump: asyncio.Task[None] | None = None
        self.max_message = max_message
        self._deframer: Deframer | None = None
        self._messages: deque[tuple[bytes, int]] = deque()
        self._reply_message: bytes | None = None
        self._held = 0  # received bytes not yet given back to the flow-control window
        self._waiter: asyncio.Future[None] | None = None

    # what the consumer sees

    async def wait(self) -> None:
        waiter = self._waiter = self.conn.loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def take(self) -> bytes | None:
        """The next message received, its bytes given back to the backend's window; None if none is here."""
        if not self._messages:
            return None
        message, size = self._messages.popleft()
        if size:
            self.conn.acknowledge(self.stream_id, size)
        return message

    def unary_reply(self) -> Reply:
        status = self.status
        assert status is not None
        message = self._reply_message
        return Reply(
            http_status=http_status(status),
            headers=self.initial or [],
            body=message if message is not None and status is Status.OK else NO_MESSAGES,
            status=status,
            message=self.message,
            trailers=self.trailers,
        )

    def cancel(self) -> None:
        """The caller went away: the backend is told (RST_STREAM CANCEL)."""
        self.conn.abandon(self.stream_id)
        self.fail(Status.CANCELLED, "the caller cancelled the call")

    def discard(self) -> None:
        """The consumer wants no more messages: reset an unfinished stream, give back every held byte."""
        if self.status is None:
            self.cancel()
        held = self._held + sum(size for _, size in self._messages)
        self._messages.clear()
        self._held = 0
        self.conn.acknowledge(self.stream_id, held)

    def fail(self, status: Status, message: str) -> None:
        """The gateway ends the call itself: the stream is reset if still open."""
        if self.stream_id:
            self.conn.abandon(self.stream_id)
        self._finish(status, message, [])

    def lost_stream(self) -> None:
        """Sending found the stream closed: its ending is already known, or it is now."""
        if self.status is None:
            self._finish(Status.UNAVAILABLE, "the upstream stream closed while the request was sent", [])

    # what the connection reports (StreamHandler)

    def on_headers(self, headers: Headers, ended: bool) -> None:
        code, content_type, status, message, encoding, metadata = _read(headers)
        if code != "200" or (content_type is not None and not content_type.startswith("application/grpc")):
            self._not_grpc(code, content_type, ended)
            return
        if ended:
            self.initial = []
            self._finish_with(status, message, metadata)
            return
        self.initial = metadata
        self._deframer = Deframer(self.max_message, encoding)
        if not self.unary:
            self._wake()

    def on_data(self, data: bytes, flow: int) -> None:
        deframer = self._deframer
        if self.unary or self.status is not None or deframer is None:
            self.conn.acknowledge(self.stream_id, flow)
        else:
            self._held += flow
        if self.status is not None:
            return
        if deframer is None:
            self.fail(Status.INTERNAL, "the upstream sent data before response headers")
            return
        try:
            messages = deframer.feed(data)
        except WireError as error:
            self.fail(error.status, error.message)
            return
        if messages:
            self._received(messages)

    def on_trailers(self, headers: Headers) -> None:
        _, _, status, message, _, metadata = _read(headers)
        if self._deframer is not None and self._deframer.pending:
            self._finish(Status.INTERNAL, "the upstream ended the call inside a message", metadata)
        else:
            self._finish_with(status, message, metadata)

    def on_end(self) -> None:
        if self.status is None:
            self._finish(Status.UNKNOWN, "the upstream closed the stream without trailers", [])

    def on_reset(self, code: int) -> None:
        if self.status is None:
            self.refused = code == ErrorCodes.REFUSED_STREAM and self.initial is None
            self._finish(RESET_STATUS.get(code, Status.INTERNAL), f"the upstream reset the stream (error {code})", [])

    def on_lost(self, refused: bool) -> None:
        if self.status is None:
            self.refused = refused and self.initial is None
            self._finish(Status.UNAVAILABLE, "the connection to the upstream closed", [])

    def expire(self) -> None:
        self.conn.abandon(self.stream_id)
        if self.status is None:
            self._finish(Status.DEADLINE_EXCEEDED, "Deadline Exceeded", [])

    # inside

    def _received(self, messages: list[bytes]) -> None:
        if self.unary:
            if self._reply_message is not None or len(messages) > 1:
                self.fail(Status.INTERNAL, "the upstream sent several messages for a unary call")
                return
            self._reply_message = messages[0]
            return
        queue = self._messages
        for message in messages[:-1]:
            queue.append((message, 0))
        queue.append((messages[-1], self._held))
        self._held = 0
        self._wake()

    def _finish_with(self, status: str | None, message: str, metadata: Metadata) -> None:
        """The backend's own ending; without a grpc-status it is UNKNOWN (PROTOCOL-HTTP2.md)."""
        if status is None:
            self._finish(Status.UNKNOWN, message or "the upstream ended the call without a grpc-status", metadata)
        else:
            self._finish(STATUS_TEXT.get(status, Status.UNKNOWN), message, metadata)

    def _not_grpc(self, code: str, content_type: str | None, ended: bool) -> None:
        """A non-gRPC answer (a proxy's error page, a plain HTTP server): its status by the spec's table."""
        status = status_from_http(int(code)) if code.isdigit() else Status.UNKNOWN
        if not ended:
            self.conn.abandon(self.stream_id)
        self.initial = []
        self._finish(status, f"the upstream answered HTTP {code} ({content_type or 'no content-type'})", [])

    def _finish(self, status: Status, message: str, trailers: Metadata) -> None:
        if self.status is not None:
            return
        self.status = status
        self.message = message
        self.trailers = trailers
        pump = self.pump
        if pump is not None:
            self.pump = None
            pump.cancel()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _ReplyMessages:
    """A streamed reply's body: the backend's messages; once they end, the call's ending goes into the reply."""

    __slots__ = ("_exchange", "_reply")

    def __init__(self, exchange: _Exchange, reply: Reply) -> None:
        self._exchange = exchange
        self._reply = reply

    def __aiter__(self) -> _ReplyMessages:
        return self

    async def __anext__(self) -> bytes:
        exchange = self._exchange
        while True:
            message = exchange.take()
            if message is not None:
                return message
            status = exchange.status
            if status is not None:
                reply = self._reply
                reply.status = status
                reply.http_status = http_status(status)
                reply.message = exchange.message
                reply.trailers = exchange.trailers
                raise StopAsyncIteration
            try:
                await exchange.wait()
            except BaseException:
                exchange.discard()
                raise

    async def aclose(self) -> None:
        self._exchange.discard()


def _read(headers: Headers) -> tuple[str, str | None, str | None, str, str | None, Metadata]:
    """A response header block: `:status`, content-type, grpc-status, grpc-message, grpc-encoding, metadata."""
    code = ""
    content_type = status = encoding = None
    message = ""
    metadata: Metadata = []
    for name, value in headers:
        if name in RESPONSE_RESERVED:
            if name == "grpc-status":
                status = value
            elif name == "grpc-message":
                message = unquote_message(value)
            elif name == "content-type":
                content_type = value
            elif name == "grpc-encoding":
                encoding = value
        elif name.startswith(":"):
            if name == ":status":
                code = value
        elif name.endswith("-bin"):
            try:
                metadata.append((name, decode_value(name, value)))
            except WireError:
                log.info("dropped response metadata %s: not base64", name)
        else:
            metadata.append((name, value))
    return code, content_type, status, message, encoding, metadata
