"""A lean HTTP/1.1 client for one origin: keep-alive pool, streamed bodies both ways.

`HttpUpstream` sends every proxied call through one `OriginPool` per endpoint.
It replaces aiohttp's `ClientSession.request`, which the benchmark showed to
be the largest single cost of a proxied call: URL objects, cookie and
redirect machinery, tracing hooks, header multidicts and a body-writer task
built per request. On the 2-core bench machine a proxied small JSON call
spent ~155 us of ~550 us (cProfile) in `ClientSession._request` alone; this
client writes the request head (and a bytes body) in one `write`, reads the
response head with one `readuntil`, and for a response with a small
`Content-Length` reads the body whole, so the connection is back in the pool
before the reply is written to the caller. Measured with one pinned gateway
process: 261 us of CPU per proxied call with aiohttp's client, 145-170 us with
this one (3.7k -> 5.7-6k calls/s); aiohttp's server plus this client alone is
~70 us (scripts/bench, docs/performance.md).

What it does and no more: asyncio streams (so the socket is read only as fast
as the caller takes the body, and writes wait on `drain`), request bodies as
bytes or as an async iterator (sent with the caller's `Content-Length`, else
chunked), responses framed by `Content-Length`, chunked encoding or the end of
the connection, 1xx interim responses skipped, and a reused connection that
turns out to be closed before any byte of an answer retried once on a fresh
one when the body can be sent again. Errors are plain `OSError`s,
`TimeoutError`, `ConnectFailed` (nothing was sent) and `ProtocolFailure`;
`upstream/http.py` maps them, except a streamed body breaking off, which
`BodyStream` reports as UNAVAILABLE where it happens.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator
from dataclasses import dataclass

from edge.errors import UpstreamUnavailable

HEAD_LIMIT = 64 * 1024
CHUNK = 64 * 1024
SMALL_BODY = 64 * 1024
NO_BODY_STATUSES = frozenset({204, 304})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class ConnectFailed(OSError):
    """The connection could not be made: nothing reached the upstream."""


class StaleConnection(OSError):
    """A kept-alive connection ended before any byte of an answer: the upstream closed it while idle."""


class ProtocolFailure(OSError):
    """The upstream's answer is not HTTP/1.1 this client can read."""


class Connection:
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def usable(self, now: float, keepalive: float) -> bool:
        return (
            not self.writer.is_closing()
            and not self.reader.at_eof()
            and not self.reader._buffer  # type: ignore[attr-defined]  # bytes nobody asked for: not reusable
            and now - self.idle_since < keepalive
        )

    def close(self) -> None:
        self.writer.close()


@dataclass(slots=True)
class Response:
    """Status and headers (names lower-cased); `body` is the whole body when it was small, else a stream."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes | BodyStream


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
        self._slots = asyncio.Semaphore(limit)
        self.opened = 0

    async def request(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes | AsyncIterable[bytes],
        read_timeout: float,
    ) -> Response:
        """Send one request; return once the response head (and a small body) is in."""
        head, streamed = _head(method, target, headers, body)
        await self._slots.acquire()
        try:
            connection, reused = await self._connection()
            try:
                return await self._exchange(connection, method, head, body, streamed, read_timeout)
            except BaseException as error:
                connection.close()
                if not (reused and isinstance(error, StaleConnection) and streamed is None):
                    raise
            connection, _ = await self._connection(fresh=True)
            try:
                return await self._exchange(connection, method, head, body, streamed, read_timeout)
            except BaseException:
                connection.close()
                raise
        except BaseException:
            self._slots.release()
            raise

    async def _connection(self, fresh: bool = False) -> tuple[Connection, bool]:
        now = time.monotonic()
        while self._idle and not fresh:
            connection = self._idle.pop()
            if connection.usable(now, self.keepalive):
                return connection, True
            connection.close()
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    self.host, self.port, ssl=self.ssl_context, server_hostname=self.server_hostname, limit=HEAD_LIMIT
                )
        except (OSError, TimeoutError, ssl.SSLError) as error:
            raise ConnectFailed(f"cannot connect to {self.host}:{self.port}: {error}") from error
        self.opened += 1
        return Connection(reader, writer), False

    async def _exchange(
        self,
        connection: Connection,
        method: str,
        head: bytes,
        body: bytes | AsyncIterable[bytes],
        streamed: str | None,
        read_timeout: float,
    ) -> Response:
        writer, reader = connection.writer, connection.reader
        if isinstance(body, bytes):
            writer.write(head + body if body else head)
        else:
            writer.write(head)
            await _send_stream(writer, body, chunked=streamed == "chunked")
        raw = await _first_head(reader)
        while True:  # the caller's timeout covers the head and a small body
            status, headers, keep = _parse_head(raw)
            if status >= 200 or status == 101:
                break
            raw = await _read_head(reader)
        length, chunked = _framing(method, status, headers)
        if length is not None and length <= SMALL_BODY:
            whole = await reader.readexactly(length) if length else b""
            self._finish(connection, keep)
            return Response(status, headers, whole)
        return Response(status, headers, BodyStream(self, connection, length, chunked, keep, read_timeout))

    async def body(
        self, connection: Connection, length: int | None, chunked: bool, keep: bool, read_timeout: float
    ) -> AsyncGenerator[bytes, None]:
        """The rest of a response body; the connection goes back to the pool once it is read to its end."""
        done = False
        reader = connection.reader
        try:
            if chunked:
                async for piece in _chunked(reader, read_timeout):
                    yield piece
            elif length is not None:
                async for piece in _sized(reader, length, read_timeout):
                    yield piece
            else:
                keep = False
                while True:
                    async with asyncio.timeout(read_timeout):
                        piece = await reader.read(CHUNK)
                    if not piece:
                        break
                    yield piece
            done = True
        finally:
            if done:
                self._finish(connection, keep)
            else:
                self.abandon(connection)

    def abandon(self, connection: Connection) -> None:
        """The body was not read to its end: the connection cannot be reused."""
        connection.close()
        self._slots.release()

    def _finish(self, connection: Connection, keep: bool) -> None:
        """The response was read to its end: the connection goes back to the pool, or is closed."""
        self._slots.release()
        if keep and not connection.writer.is_closing():
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection.close()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


class BodyStream:
    """A streamed response body that frees its connection even when nobody started reading it.

    The read errors are mapped here, where they happen: a body that breaks off
    is UNAVAILABLE, like a reset before the head.
    """

    def __init__(
        self, pool: OriginPool, connection: Connection, length: int | None, chunked: bool, keep: bool, timeout: float
    ) -> None:
        self._pool = pool
        self._connection = connection
        self._pieces = pool.body(connection, length, chunked, keep, timeout)
        self._started = False
        self._closed = False

    def __aiter__(self) -> BodyStream:
        return self

    async def __anext__(self) -> bytes:
        if self._closed:
            raise StopAsyncIteration
        self._started = True
        try:
            return await self._pieces.__anext__()
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as error:
            raise UpstreamUnavailable(f"upstream response broke off: {type(error).__name__}") from None

    async def aclose(self) -> None:
        if not self._started and not self._closed:
            self._pool.abandon(self._connection)
        self._closed = True
        await self._pieces.aclose()


def _head(
    method: str, target: str, headers: dict[str, str], body: bytes | AsyncIterable[bytes]
) -> tuple[bytes, str | None]:
    """The request line and headers, and how a streamed body is framed (None for a bytes body)."""
    lines = [f"{method} {target} HTTP/1.1\r\n"]
    lines += [f"{name}: {value}\r\n" for name, value in headers.items()]
    streamed: str | None = None
    if not isinstance(body, bytes):
        streamed = "length" if "content-length" in headers else "chunked"
        if streamed == "chunked":
            lines.append("transfer-encoding: chunked\r\n")
    elif "content-length" not in headers and (body or method in BODY_METHODS):
        lines.append(f"content-length: {len(body)}\r\n")
    lines.append("\r\n")
    text = "".join(lines)
    if text.count("\n") != len(lines) or "\r\r" in text:
        raise ValueError("a header name or value holds a line break")
    try:
        return text.encode("latin-1"), streamed
    except UnicodeEncodeError:
        return text.encode(), streamed


async def _send_stream(writer: asyncio.StreamWriter, body: AsyncIterable[bytes], chunked: bool) -> None:
    async for piece in body:
        if not piece:
            continue
        writer.write(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
        await writer.drain()
    if chunked:
        writer.write(b"0\r\n\r\n")
    await writer.drain()


async def _first_head(reader: asyncio.StreamReader) -> bytes:
    """The first response head; StaleConnection when the connection ended before any byte of it."""
    try:
        return await _read_head(reader)
    except asyncio.IncompleteReadError as error:
        if error.partial:
            raise
        raise StaleConnection("the upstream closed the connection before answering") from None
    except ConnectionResetError:
        if reader._buffer:  # type: ignore[attr-defined]
            raise
        raise StaleConnection("the upstream reset the connection before answering") from None


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise ProtocolFailure(f"response head larger than {HEAD_LIMIT} bytes") from None


def _parse_head(raw: bytes) -> tuple[int, list[tuple[str, str]], bool]:
    """Status, headers (lower-cased names) and whether the connection may be kept."""
    lines = raw[:-4].decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise ProtocolFailure(f"not an HTTP/1.x status line: {lines[0][:60]!r}")
    headers = []
    keep = version == "HTTP/1.1"
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name[-1] in " \t":
            raise ProtocolFailure("malformed response header line")
        name = name.lower()
        value = value.strip(" \t")
        if name == "connection":
            tokens = {t.strip().lower() for t in value.split(",")}
            keep = "keep-alive" in tokens if not keep else "close" not in tokens
        headers.append((name, value))
    return int(code), headers, keep


def _framing(method: str, status: int, headers: list[tuple[str, str]]) -> tuple[int | None, bool]:
    """(Content-Length, chunked) of the response body; (0, False) when it has none."""
    if method == "HEAD" or status in NO_BODY_STATUSES or status < 200:
        return 0, False
    length: int | None = None
    for name, value in headers:
        if name == "transfer-encoding":
            if value.lower().rsplit(",", 1)[-1].strip() == "chunked":
                return None, True
        elif name == "content-length":
            if not value.isdigit() or (length is not None and int(value) != length):
                raise ProtocolFailure("bad Content-Length in the response")
            length = int(value)
    return length, False


async def _chunked(reader: asyncio.StreamReader, read_timeout: float) -> AsyncIterator[bytes]:
    while True:
        async with asyncio.timeout(read_timeout):
            line = await reader.readuntil(b"\r\n")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ProtocolFailure("bad chunk size in the response") from None
        if size == 0:
            async with asyncio.timeout(read_timeout):
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
            return
        async for piece in _sized(reader, size, read_timeout):
            yield piece
        async with asyncio.timeout(read_timeout):
            if await reader.readexactly(2) != b"\r\n":
                raise ProtocolFailure("chunk not followed by CRLF")


async def _sized(reader: asyncio.StreamReader, size: int, read_timeout: float) -> AsyncGenerator[bytes]:
    """Exactly `size` bytes, as they arrive; IncompleteReadError when the connection ends first."""
    left = size
    while left:
        async with asyncio.timeout(read_timeout):
            piece = await reader.read(min(CHUNK, left))
        if not piece:
            raise asyncio.IncompleteReadError(b"", left)
        left -= len(piece)
        yield piece
