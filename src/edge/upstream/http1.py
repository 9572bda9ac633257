"""A lean HTTP/1.1 client for one origin: keep-alive pool, streamed bodies both ways.

`HttpUpstream` sends every proxied call through one `OriginPool` per endpoint.
It replaces aiohttp's `ClientSession.request`, which the benchmark showed to
be the largest single cost of a proxied call (URL objects, cookie and redirect
machinery, tracing hooks, header multidicts and a body-writer task per
request: 261 us of CPU per proxied call against 145-170 us with a client of
our own on asyncio streams). This version drops the streams too: each
connection is an `asyncio.Protocol` feeding httptools' response parser
(llhttp, the parser of the HTTP door's httptools engine), so a small answer
costs one `data_received`, a few parser callbacks and one future, and the
client side of a proxied call went from ~28 us to ~11 us of CPU
(docs/performance.md, "Upstream client on a protocol").

What it does and no more: the request head (and a bytes body) leaves in one
write, with the other requests of the loop's pass (`coalescing.py`); a streamed request body is sent with the caller's `Content-Length`,
else chunked, waiting on the transport's write backpressure. Responses are
framed by `Content-Length`, chunked encoding or the end of the connection
(llhttp checks the framing, including conflicting lengths); 1xx interim
responses are skipped; a body up to `SMALL_BODY` is collected whole so the
connection is back in the pool before the caller's reply is written, a
larger one streams with flow control (`http1_body.BodyStream`: the socket is
not read while more than `BODY_BUFFER` bytes wait). A reused connection that ends before any byte of
an answer is retried once on a fresh one when the body can be sent again.
httptools cannot be told that a response answers HEAD, so the connection of
a HEAD response is closed instead of reused.

Errors are plain `OSError`s, `TimeoutError`, `ConnectFailed` (nothing was
sent) and `ProtocolFailure` (`http1_errors.py`); `upstream/http.py` maps them, except a streamed
body breaking off, which `BodyStream` reports as UNAVAILABLE where it happens.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import AsyncIterable
from dataclasses import dataclass
from typing import cast

import httptools

from edge.backpressure import WriteBackpressure
from edge.coalescing import WriteCoalescer
from edge.upstream.http1_body import BodyStream
from edge.upstream.http1_errors import ConnectFailed, ProtocolFailure, StaleConnection

HEAD_LIMIT = 64 * 1024
SMALL_BODY = 64 * 1024
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
NO_BODY_STATUSES = frozenset({204, 304})
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)


class _HeadTooLarge(Exception):
    """Raised inside a parser callback; httptools re-raises it as the context of a callback error."""


@dataclass(slots=True)
class Response:
    """Status, end-to-end headers and the connection's own (hop-by-hop, RFC 9110 7.6.1), names lower-cased.

    `body` is the whole body when it was small, else a stream. The two kinds
    of header are told apart as they are parsed, so a proxy forwarding
    `headers` need not look at each one again.
    """

    status: int
    headers: list[tuple[str, str]]
    body: bytes | BodyStream
    hop: list[tuple[str, str]]


class Connection(asyncio.Protocol):
    """One connection to the origin, answering one request at a time.

    The parser's callbacks fill in the answer; `_answer` resolves once the
    head (and a small body) is in. The slot of the pool is held from
    `exchange` until the response ends at the protocol level, or the
    connection is closed.
    """

    def __init__(self, pool: OriginPool) -> None:
        self._pool = pool
        self._loop = asyncio.get_running_loop()  # once: in Python 3.11 every call makes a getpid system call
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self.lost = False
        self._retired = False
        self._busy = False
        self._answer: asyncio.Future[Response] | None = None
        self._method = ""
        self._in_head = False
        self._head_fed = 0  # bytes fed, in earlier chunks, while the head was unfinished
        self._feeding = 0  # bytes of the chunk being parsed
        self._received = False
        self._interim = False
        self._status = 0
        self._headers: list[tuple[str, str]] = []
        self._hop: list[tuple[str, str]] = []
        self._parts: list[bytes] | None = None
        self._stream: BodyStream | None = None
        self._close_delimited = False
        self._writes = WriteBackpressure(self._loop)
        self._coalescer = pool.coalescer(self._loop)

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._writes.fail(ConnectionResetError("the upstream closed the connection"))
        if not self._busy:
            return
        stream = self._stream
        if stream is not None and self._close_delimited and exc is None:
            stream.finish()
            self._release(keep=False)
        elif self._answer is not None and not self._answer.done():
            if not self._received:
                self._answer.set_exception(StaleConnection("the upstream closed the connection before answering"))
            else:
                self._answer.set_exception(ConnectionResetError("the upstream closed the connection mid-answer"))
            self._release(keep=False)
        elif stream is not None:
            stream.fail(ConnectionResetError("the upstream closed the connection mid-body"))
            self._release(keep=False)

    def data_received(self, data: bytes) -> None:
        if not self._busy:
            self.close()  # bytes nobody asked for: this connection cannot be trusted again
            return
        self._received = True
        self._feeding = len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._deliver(b"")
            self._release(keep=False)
            return
        except httptools.HttpParserError as error:
            if isinstance(error.__context__, _HeadTooLarge):
                self._fail(ProtocolFailure(f"response head larger than {HEAD_LIMIT} bytes"))
            else:
                self._fail(ProtocolFailure(f"unreadable response from the upstream: {error}"))
            return
        if self._in_head:  # a head still unfinished: llhttp holds a partial header line in memory
            self._head_fed += len(data)
            if self._head_fed > HEAD_LIMIT:
                self._fail(ProtocolFailure(f"response head larger than {HEAD_LIMIT} bytes"))

    def pause_writing(self) -> None:
        self._writes.pause()

    def resume_writing(self) -> None:
        self._writes.resume()

    # httptools callbacks

    def on_message_begin(self) -> None:
        if not self._busy:
            self.close()  # an answer nobody asked for: this connection cannot be trusted again
            return
        self._in_head = True
        self._head_fed = 0
        self._headers = []
        self._hop = []

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        (self._hop if key in HOP_BY_HOP else self._headers).append((key, value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        """The head is in; its size is only added up when the bytes fed for it could exceed the limit."""
        if self._head_fed + self._feeding > HEAD_LIMIT and _head_size(self._headers, self._hop) > HEAD_LIMIT:
            raise _HeadTooLarge
        self._in_head = False
        status = self._parser.get_status_code()
        self._interim = 100 <= status < 200 and status != 101
        if self._interim:
            return
        self._status = status
        if self._method == "HEAD":
            self._deliver(b"")
            self._release(keep=False)
            return
        length, chunked = _framing(status, self._headers, self._hop)
        if length is not None and length <= SMALL_BODY:
            self._parts = []
            return
        self._close_delimited = length is None and not chunked
        self._stream = BodyStream(self)
        self._deliver(self._stream)

    def on_body(self, body: bytes) -> None:
        if self._parts is not None:
            self._parts.append(body)
        elif self._stream is not None:
            self._stream.feed(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if not self._busy:
            return
        keep = self._parser.should_keep_alive()
        if self._parts is not None:
            self._deliver(b"".join(self._parts))
        elif self._stream is not None:
            self._stream.finish()
        self._release(keep)

    # used by the pool

    def exchange(self, method: str, head: bytes, body: bytes | AsyncIterable[bytes]) -> asyncio.Future[Response]:
        """Send the request head, and a bytes body with it; the future resolves once the answer's head is in.

        A plain method, not a coroutine: a proxied call awaits the future and
        nothing else. A streamed body follows with `send_body`.
        """
        answer: asyncio.Future[Response] = self._loop.create_future()
        self._answer = answer
        self._busy = True
        self._method = method
        self._received = False
        self._parts = None
        self._stream = None
        self._close_delimited = False
        transport = self._transport
        assert transport is not None
        if isinstance(body, bytes):
            self._coalescer.write(transport, head + body if body else head)
        else:
            transport.write(head)
        return answer

    async def send_body(self, body: AsyncIterable[bytes], chunked: bool) -> None:
        transport = self._transport
        assert transport is not None
        async for piece in body:
            if not piece:
                continue
            transport.write(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
            await self.drain()
        if chunked:
            transport.write(b"0\r\n\r\n")
        await self.drain()

    async def drain(self) -> None:
        if self.lost:
            raise ConnectionResetError("the upstream closed the connection")
        await self._writes.wait()

    def usable(self, now: float, keepalive: float) -> bool:
        return not (self.lost or self._retired or self._busy) and now - self.idle_since < keepalive

    def pause_reading(self) -> None:
        if self._transport is not None and not self.lost:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and not self.lost:
            self._transport.resume_reading()

    def abandon(self) -> None:
        """The caller stopped reading the body before its end: close, and free the slot if still held."""
        self.close()
        self._release(keep=False)

    def close(self) -> None:
        self._retired = True
        self._coalescer.flush()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def _deliver(self, body: bytes | BodyStream) -> None:
        answer = self._answer
        if answer is not None and not answer.done():
            answer.set_result(Response(self._status, self._headers, body, self._hop))

    def _fail(self, error: OSError) -> None:
        answer = self._answer
        if answer is not None and not answer.done():
            answer.set_exception(error)
        elif self._stream is not None:
            self._stream.fail(error)
        self.close()
        self._release(keep=False)

    def _release(self, keep: bool) -> None:
        if not self._busy:
            return
        self._busy = False
        self._answer = None
        self._parts = None
        self._pool.finish(self, keep)


class Slots:
    """The pool's connection limit. A free slot is taken without a coroutine (`asyncio.Semaphore.acquire`
    is one, and its `locked()` walks the waiters with a generator, on every proxied call); callers of a
    full pool wait in order on futures.
    """

    __slots__ = ("_free", "_waiters")

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._waiters: deque[asyncio.Future[None]] = deque()

    def take(self) -> asyncio.Future[None] | None:
        """None when a slot was free and is now the caller's; else a future to pass to `wait`."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return None
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return waiter

    async def wait(self, waiter: asyncio.Future[None]) -> None:
        """Wait until `release` hands a slot over; one handed over as the caller gives up goes to the next."""
        try:
            await waiter
        except asyncio.CancelledError:
            if not waiter.cancelled():
                self.release()
            raise

    def release(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1


class OriginPool:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        server_hostname: str | None,
        limit: int,
        keepalive: float,
        connect_timeout: float,
    ) -> None:
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname if ssl_context is not None else None
        self.keepalive = keepalive
        self.connect_timeout = connect_timeout
        self._idle: deque[Connection] = deque()
        self._slots = Slots(limit)
        self._coalescer: WriteCoalescer | None = None
        self.opened = 0

    def coalescer(self, loop: asyncio.AbstractEventLoop) -> WriteCoalescer:
        """The pool's connections queue their request heads in one coalescer (made on the serving loop)."""
        if self._coalescer is None:
            self._coalescer = WriteCoalescer(loop)
        return self._coalescer

    async def request(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes | AsyncIterable[bytes],
        read_timeout: float,
    ) -> Response:
        """Send one request; return once the response head (and a small body) is in."""
        head, chunked = _head(method, target, headers, body)
        for attempt in (1, 2):
            waiter = self._slots.take()
            if waiter is not None:
                await self._slots.wait(waiter)
            connection: Connection | None = None
            try:
                connection = self._idle_connection() if attempt == 1 else None
                reused = connection is not None
                if connection is None:
                    connection = await self._open()
                answer = connection.exchange(method, head, body)
                if not isinstance(body, bytes):
                    await connection.send_body(body, bool(chunked))
                response = await answer
            except StaleConnection:
                assert connection is not None
                connection.abandon()
                if attempt == 1 and reused and chunked is None:
                    continue
                raise
            except BaseException:
                if connection is None:
                    self._slots.release()
                else:
                    connection.abandon()
                raise
            if isinstance(response.body, BodyStream):
                response.body.read_timeout = read_timeout
            return response
        raise AssertionError("unreachable")

    def _idle_connection(self) -> Connection | None:
        """The most recently used idle connection still fit for a request (a plain method: no coroutine per call)."""
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if connection.usable(now, self.keepalive):
                return connection
            connection.close()
        return None

    async def _open(self) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, protocol = await loop.create_connection(
                    lambda: Connection(self),
                    self.host,
                    self.port,
                    ssl=self.ssl_context,
                    server_hostname=self.server_hostname,
                )
        except (OSError, TimeoutError, ssl.SSLError) as error:
            raise ConnectFailed(f"cannot connect to {self.host}:{self.port}: {error}") from error
        self.opened += 1
        return protocol

    def finish(self, connection: Connection, keep: bool) -> None:
        """The response ended (or broke off): free the slot; keep the connection for the next request, or close it."""
        self._slots.release()
        if keep and connection.usable(0.0, float("inf")):
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection.close()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


def _head(
    method: str, target: str, headers: dict[str, str], body: bytes | AsyncIterable[bytes]
) -> tuple[bytes, bool | None]:
    """The request line and headers, and whether a streamed body goes chunked (None for a bytes body).

    No line may hold a CR or LF of its own (header injection): the lines are
    searched joined without their line ends, where `in` is a `memchr`, before
    they are joined with them. Counting the line breaks of the head instead
    walks it character by character, and a bearer token makes it ~1 KB.
    """
    lines = [f"{method} {target} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    chunked: bool | None = None
    if not isinstance(body, bytes):
        chunked = "content-length" not in headers
        if chunked:
            lines.append("transfer-encoding: chunked")
    elif "content-length" not in headers and (body or method in BODY_METHODS):
        lines.append(f"content-length: {len(body)}")
    bare = "".join(lines)
    if "\n" in bare or "\r" in bare:
        raise ValueError("a header name or value holds a line break")
    lines += ("", "")  # the head ends with an empty line
    text = "\r\n".join(lines)
    try:
        return text.encode("latin-1"), chunked
    except UnicodeEncodeError:
        return text.encode(), chunked


def _head_size(*lists: list[tuple[str, str]]) -> int:
    return sum(len(name) + len(value) + 4 for headers in lists for name, value in headers)


def _framing(status: int, headers: list[tuple[str, str]], hop: list[tuple[str, str]]) -> tuple[int | None, bool]:
    """(Content-Length, chunked) of a response body; (0, False) when it has none. llhttp has checked the values."""
    if status in NO_BODY_STATUSES:
        return 0, False
    for name, value in hop:
        if name == "transfer-encoding" and value.lower().rsplit(",", 1)[-1].strip() == "chunked":
            return None, True
    length: int | None = None
    for name, value in headers:
        if name == "content-length":
            length = int(value)
    return length, False
