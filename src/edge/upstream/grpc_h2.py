"""gRPC upstream client on h2: one multiplexed HTTP/2 connection per endpoint, raw message bytes both ways.

A drop-in for `GrpcUpstream` (upstream/grpc.py) with the same contract: a
unary call's reply is complete when `send` returns; any other call returns
once the backend's response headers are in, and the reply's body iterator
fills in `status`, `message` and `trailers` when it is exhausted. Why h2:
grpc.aio hands every call through its C core, a poller thread and several
completion-queue wake-ups; the same call driven from Python over h2 costs
the gateway roughly half the CPU (docs/performance.md, "gRPC door").

What grpcio kept in C is written here, kept small: the gRPC call over one
HTTP/2 stream (`GrpcExchange`: headers, length-prefixed messages, status from
trailers or a trailers-only answer, the spec's mapping of HTTP answers and
RST_STREAM codes to statuses), connecting and endpoint choice (`_Origin`),
retrying a stream the server never saw (GOAWAY, REFUSED_STREAM: up to
`REFUSED_RETRIES` times, as grpc-core retries such streams transparently;
grpc-core servers refuse streams for a moment after the limit freed up, a
moment that grows with their load, so each retry waits twice as long as the
one before from `REFUSED_BACKOFF`, within the call's deadline), and
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
from collections.abc import AsyncIterable
from urllib.parse import urlsplit

from edge import __version__
from edge.call import Call, Reply
from edge.config.gateway import Limits
from edge.config.gateway import Upstream as UpstreamConfig
from edge.errors import EdgeError, Status, UpstreamTimeout, UpstreamUnavailable, http_status
from edge.grpc_wire import (
    ACCEPT_ENCODING,
    encode_metadata,
    format_timeout,
    frame,
)
from edge.http2 import StreamClosed
from edge.tls import client_context
from edge.upstream import NO_MESSAGES
from edge.upstream.endpoints import Endpoints
from edge.upstream.grpc_call import GrpcExchange, ReplyMessages
from edge.upstream.grpc_metadata import request_metadata
from edge.upstream.h2_client import ConnectionFull, H2ClientConnection, header_field

log = logging.getLogger("edge.upstream.grpc")

USER_AGENT = f"edge/{__version__}"
PATH_CACHE_SIZE = 4096
REFUSED_RETRIES = 5
REFUSED_BACKOFF = 0.005  # seconds before the first retry of a refused stream; doubled for each next one


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
        for attempt in range(REFUSED_RETRIES + 1):
            origin, conn = await self._connection(call, when)
            timeout = header_field("grpc-timeout", format_timeout(when - loop.time()))
            headers = path + origin.head + timeout + metadata
            exchange = GrpcExchange(conn, when, self._max_message, call.unary and isinstance(body, bytes))
            if exchange.unary:
                reply = await self._unary(conn, exchange, headers, body)  # type: ignore[arg-type]
            else:
                reply = await self._streaming(conn, exchange, headers, body)
            if not (exchange.refused and attempt < REFUSED_RETRIES and isinstance(body, bytes)):
                return reply
            log.debug("upstream %s refused a stream before answering; retrying it", self.name)
            await asyncio.sleep(min(REFUSED_BACKOFF * 2**attempt, max(0.0, when - loop.time())))
        raise AssertionError("unreachable")

    async def _unary(self, conn: H2ClientConnection, exchange: GrpcExchange, headers: bytes, body: bytes) -> Reply:
        try:
            await _request(conn, exchange, headers, body)
            while exchange.status is None:
                await exchange.wait()
        except BaseException:
            exchange.cancel()
            raise
        return exchange.unary_reply()

    async def _streaming(
        self, conn: H2ClientConnection, exchange: GrpcExchange, headers: bytes, body: bytes | AsyncIterable[bytes]
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
        reply.body = ReplyMessages(exchange, reply)
        return reply

    def _pump(self, conn: H2ClientConnection, exchange: GrpcExchange, body: AsyncIterable[bytes]) -> None:
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


async def _request(conn: H2ClientConnection, exchange: GrpcExchange, headers: bytes, message: bytes) -> None:
    """One request message: HEADERS and DATA with END_STREAM, in one write when the windows allow."""
    exchange.stream_id = conn.open_stream(exchange, headers, end_stream=False)
    try:
        await conn.send_data(exchange.stream_id, frame(message), end_stream=True)
    except StreamClosed:
        exchange.lost_stream()
        return
    exchange.sent_end = True


async def _send_messages(conn: H2ClientConnection, exchange: GrpcExchange, body: AsyncIterable[bytes]) -> None:
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
