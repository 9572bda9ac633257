"""HTTP/1.1 connections on httptools (llhttp): the `engine: httptools` server core of the HTTP door.

aiohttp's low-level server costs ~30 us of CPU per request on the bench
machine before the gateway does anything; an `asyncio.Protocol` feeding
llhttp costs ~5 us. This module is only the protocol: it parses requests,
enforces the head limits (431) and answers malformed ones (400), keeps
connections alive, answers pipelined requests in order (one at a time per
connection), streams request bodies with flow control (reading pauses while
more than `h1_body.BODY_BUFFER` bytes wait), and offers `write`/`drain` with
the transport's write backpressure; writes leave at the end of the loop's
pass, with the other connections' (`coalescing.py`). What a request means
and how a reply is rendered is `h1_door.py`'s business; `H1Listener` owns
the listening server, idle keep-alive timeouts and the drain on shutdown.

A request head must arrive whole within `limits.header_timeout` of its first
byte (nginx's `client_header_timeout`, 60 s by default there too): a client
trickling its head a byte at a time (slowloris) keeps the connection busy,
so the keep-alive timeout never sees it idle. It is answered 408 and closed
by the same sweep that closes idle connections. A stalled request body is
bounded by the route's upstream timeout, which covers the body sent upstream.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import cast

import httptools

from edge.backpressure import WriteBackpressure
from edge.coalescing import WriteCoalescer
from edge.config.gateway import Limits
from edge.errors import BadRequest, Status
from edge.frontends.h1_body import PAUSED_BODY, RequestStream
from edge.frontends.open_connections import OpenConnections

log = logging.getLogger("edge.http")

KEEPALIVE_TIMEOUT = 75.0  # seconds an idle connection stays open, as aiohttp's server
SWEEP_INTERVAL = 5.0

_PAUSED_QUEUE = 2

ErrorReply = Callable[[int, Status, str, "H1Connection"], bytes]  # also audits the refusal


class _HeadTooLarge(Exception):
    """Raised inside a parser callback; httptools re-raises it as the context of a callback error."""


class H1Request:
    """One parsed request head; `headers` have lower-cased names, `target` is the raw request target."""

    __slots__ = ("body", "complete", "content_length", "headers", "keep_alive", "method", "target", "version")

    def __init__(
        self,
        method: str,
        target: str,
        version: str,
        headers: list[tuple[str, str]],
        keep_alive: bool,
        content_length: int | None,
        body: RequestStream | None,
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.content_length = content_length
        self.body = body
        self.complete = False  # the whole message (head and body) has been parsed


Handler = Callable[["H1Request", "H1Connection"], Awaitable[None]]


class H1Connection(asyncio.Protocol):
    """One client connection: parse, queue, answer in order, keep alive or close."""

    def __init__(self, listener: H1Listener) -> None:
        self._listener = listener
        self._handler = listener.handler
        self._max_line = listener.limits.max_header_line
        self._max_headers = listener.limits.max_headers
        self._head_limit = (listener.limits.max_headers + 2) * (listener.limits.max_header_line + 4)
        self._parser = httptools.HttpRequestParser(self)
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._queue: deque[H1Request | bytes] = deque()
        self._task: asyncio.Task[None] | None = None
        self._parsing: H1Request | None = None
        self._in_head = False
        self._head_started = 0.0
        self._head_bytes = 0
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._content_length: int | None = None
        self._chunked = False
        self._expect_continue = False
        self._host_seen = False
        self._read_paused = 0
        self._writes = WriteBackpressure(self._loop)
        self._coalescer = listener.coalescer or WriteCoalescer(self._loop)
        self._stopped = False  # no more requests are read on this connection
        self._lost = False
        self._closing = False  # shutting down: finish the current reply, then close
        self.last_active = self._loop.time()
        self.peer: tuple[str, int] = ("unknown", 0)
        self.host = ""  # the listener's address, for requests without a Host header
        self.ssl_object: ssl.SSLObject | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport subclasses
        self._transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = (str(peer[0]), int(peer[1]))
        local = transport.get_extra_info("sockname")
        if local:
            self.host = f"{local[0]}:{local[1]}" if ":" not in str(local[0]) else f"[{local[0]}]:{local[1]}"
        self.ssl_object = transport.get_extra_info("ssl_object")
        self._listener.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._stopped = True
        self._listener.forget(self)
        gone = ConnectionResetError("the client went away")
        for item in (self._parsing, *self._queue):
            if isinstance(item, H1Request) and item.body is not None:
                item.body.fail(gone)
        self._writes.fail(gone)
        if self._task is not None:
            self._task.cancel()

    def data_received(self, data: bytes) -> None:
        if self._stopped:
            return
        self.last_active = self._loop.time()
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > self._head_limit:
                self._reject(431, Status.RESOURCE_EXHAUSTED, "request line or headers too large")
                return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._stop_reading()
        except httptools.HttpParserError as error:
            if isinstance(error.__context__, _HeadTooLarge):
                self._reject(431, Status.RESOURCE_EXHAUSTED, "request line or headers too large")
            else:
                reason = str(error.__context__ or error) or type(error).__name__
                self._reject(400, Status.INVALID_ARGUMENT, f"malformed request: {reason}")

    def pause_writing(self) -> None:
        self._writes.pause()

    def resume_writing(self) -> None:
        self._writes.resume()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_started = self._loop.time()
        self._head_bytes = 0
        self._url = b""
        self._headers = []
        self._content_length = None
        self._chunked = False
        self._expect_continue = False
        self._host_seen = False

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._max_line:
            raise _HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self._headers) >= self._max_headers or len(name) + len(value) + 2 > self._max_line:
            raise _HeadTooLarge
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        if key == "content-length":
            self._content_length = int(text)
        elif key == "transfer-encoding":
            self._chunked = True
        elif key == "expect":
            self._expect_continue = text.lower() == "100-continue"
        elif key == "host":
            if self._host_seen:
                raise ValueError("duplicate Host header")
            self._host_seen = True
        self._headers.append((key, text))

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self._parser
        version = parser.get_http_version()
        has_body = self._chunked or bool(self._content_length)
        expect = self._expect_continue and version == "1.1"
        request = H1Request(
            parser.get_method().decode("ascii"),
            self._url.decode("latin-1"),
            version,
            self._headers,
            parser.should_keep_alive() and not parser.should_upgrade(),
            self._content_length,
            RequestStream(self, expect) if has_body else None,
        )
        self._parsing = request
        self._queue.append(request)
        if self._task is None:
            self._task = self._loop.create_task(self._serve())
        else:
            self.pause_reading(_PAUSED_QUEUE)

    def on_body(self, data: bytes) -> None:
        request = self._parsing
        if request is not None and request.body is not None:
            request.body.feed(data)

    def on_message_complete(self) -> None:
        request = self._parsing
        if request is not None:
            request.complete = True
            if request.body is not None:
                request.body.finish()
            self._parsing = None

    # what the door uses

    def write(self, data: bytes) -> None:
        if self._lost or self._transport is None:
            raise ConnectionResetError("the client went away")
        self._coalescer.write(self._transport, data)

    async def drain(self) -> None:
        """Wait while the transport's write buffer is above its high-water mark."""
        if self._lost:
            raise ConnectionResetError("the client went away")
        self._coalescer.flush()
        await self._writes.wait()

    def keeps_alive(self, request: H1Request) -> bool:
        """Whether the reply being written may leave the connection open for the next request."""
        return request.keep_alive and request.complete and not self._closing and not self._stopped

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # flow control and lifetime

    def pause_reading(self, reason: int) -> None:
        if not self._read_paused and self._transport is not None and not self._lost:
            self._transport.pause_reading()
        self._read_paused |= reason

    def resume_reading(self, reason: int) -> None:
        if not self._read_paused & reason:
            return
        self._read_paused &= ~reason
        if not self._read_paused and self._transport is not None and not self._lost:
            self._transport.resume_reading()

    def idle_for(self, now: float) -> float:
        """Seconds without a byte read or a request in flight (0 while one is in flight)."""
        return 0.0 if self._task is not None else now - self.last_active

    def head_overdue(self, now: float, limit: float) -> bool:
        """Whether a request head has been arriving for longer than `limit` seconds."""
        return self._in_head and now - self._head_started > limit

    def time_out_head(self, limit: float) -> None:
        self._reject(408, Status.DEADLINE_EXCEEDED, f"the request head did not arrive within {limit:g}s")

    def shut_down(self) -> None:
        """Stop taking requests: an idle connection closes now, a busy one after its current reply."""
        self._closing = True
        if self._task is None and self._parsing is None:
            self._close()

    async def _serve(self) -> None:
        """Answer queued requests in order; one task per burst of requests, not per request."""
        queue = self._queue
        try:
            while queue:
                item = queue.popleft()
                if not queue:  # the next request's head (and this one's body) may be read now
                    self.resume_reading(_PAUSED_QUEUE)
                if isinstance(item, bytes):  # a 400/431 for a request that could not be parsed
                    self.write(item)
                    self._close()
                    return
                await self._handler(item, self)
                if not self.keeps_alive(item):
                    self._close()
                    return
                parsing = self._parsing
                if parsing is None or parsing.body is None or not parsing.body.full:
                    self.resume_reading(PAUSED_BODY)  # an unread, complete body no longer holds reading
        except (asyncio.CancelledError, ConnectionError):
            self.abort()
        except Exception:
            log.exception("unexpected error answering an HTTP request; closing the connection")
            self.abort()
        finally:
            self._task = None
            self.last_active = self._loop.time()

    def _close(self) -> None:
        """Close after what was written has been sent."""
        self._stopped = True
        self._coalescer.flush()
        if self._transport is not None:
            self._transport.close()

    def _stop_reading(self) -> None:
        """An upgrade request: it is answered as a plain request, then the connection closes."""
        self._stopped = True
        for item in self._queue:
            if isinstance(item, H1Request):
                item.keep_alive = False

    def _reject(self, status: int, code: Status, message: str) -> None:
        self._stopped = True
        self._in_head = False
        request = self._parsing
        if request is not None:  # the head was fine, its body is not: that request's reply says so
            if request.body is not None:
                request.body.fail(BadRequest(message))
            request.keep_alive = False
            self._parsing = None
            return
        self._queue.append(self._listener.error_reply(status, code, message, self))
        if self._task is None:
            self._task = self._loop.create_task(self._serve())


class H1Listener:
    """The listening server: its connections, idle timeouts, and a drain on shutdown."""

    def __init__(self, handler: Handler, limits: Limits, error_reply: ErrorReply) -> None:
        self.handler = handler
        self.limits = limits
        self.error_reply = error_reply
        self.connections: OpenConnections[H1Connection] = OpenConnections()
        self.coalescer: WriteCoalescer | None = None
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, sock: socket.socket, ssl_context: ssl.SSLContext | None) -> None:
        loop = asyncio.get_running_loop()
        self.coalescer = WriteCoalescer(loop)
        self._server = await loop.create_server(lambda: H1Connection(self), sock=sock, ssl=ssl_context)
        self._sweeper = loop.create_task(self._sweep(), name="http-keepalive-sweeper")

    def forget(self, connection: H1Connection) -> None:
        self.connections.forget(connection)

    async def aclose(self, drain_timeout: float) -> None:
        """Stop accepting, let in-flight requests finish for up to `drain_timeout`, then cut the rest."""
        if self._server is None:
            return
        self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with suppress(asyncio.CancelledError):
                await self._sweeper
        await self.connections.drain(drain_timeout)
        await self._server.wait_closed()
        self._server = None

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        head_timeout = self.limits.header_timeout
        interval = min(SWEEP_INTERVAL, head_timeout / 2)
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for connection in self.connections:
                if connection.idle_for(now) > KEEPALIVE_TIMEOUT:
                    connection.shut_down()
                elif connection.head_overdue(now, head_timeout):
                    connection.time_out_head(head_timeout)
