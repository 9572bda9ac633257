"""The lean HTTP/1.1 client against raw loopback servers that answer with exact bytes.

Each case is one scripted answer: framing (length, chunked, end of connection),
interim 1xx heads, HEAD replies, `Connection: close`, and a kept-alive
connection the server closes while idle (the next request is retried once on a
fresh connection).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from edge.upstream.http1 import BodyStream, OriginPool

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def answering(*replies: bytes, close: bool = False) -> Answer:
    """Read one request per reply, write the reply; optionally close after the last."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for reply in replies:
            await read_request(reader)
            writer.write(reply)
            await writer.drain()
        if close:
            writer.close()
        else:
            await reader.read()

    return answer


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Answer], Awaitable[tuple[OriginPool, list[int]]]]]:
    servers: list[asyncio.Server] = []
    pools: list[OriginPool] = []

    async def start(answer: Answer) -> tuple[OriginPool, list[int]]:
        connections: list[int] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections.append(1)
            try:
                await answer(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        pool = OriginPool(
            "127.0.0.1", port, ssl_context=None, server_hostname=None, limit=4, keepalive=30, connect_timeout=2
        )
        pools.append(pool)
        return pool, connections

    yield start
    for pool in pools:
        pool.close()
    for server in servers:
        server.close()


async def body_of(body: bytes | BodyStream) -> bytes:
    if isinstance(body, bytes):
        return body
    return b"".join([piece async for piece in body])


@pytest.mark.parametrize(
    ("reply", "method", "status", "expected"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "GET", 200, b"hello"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\nT: v\r\n\r\n",
            "GET",
            200,
            b"hello",
        ),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok", "POST", 201, b"ok"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", "HEAD", 200, b""),
        (b"HTTP/1.1 204 No Content\r\n\r\n", "DELETE", 204, b""),
        (b"HTTP/1.0 200 OK\r\n\r\nuntil the end", "GET", 200, b"until the end"),
    ],
)
async def test_framing(serve, reply: bytes, method: str, status: int, expected: bytes) -> None:  # type: ignore[no-untyped-def]
    pool, _ = await serve(answering(reply, close=reply.startswith(b"HTTP/1.0")))
    response = await pool.request(method, "/x", {"host": "backend"}, b"", 2)
    assert response.status == status
    assert await body_of(response.body) == expected


async def test_a_connection_is_reused_unless_the_upstream_says_close(serve) -> None:  # type: ignore[no-untyped-def]
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1"
    pool, connections = await serve(answering(ok, ok))
    for _ in range(2):
        assert await body_of((await pool.request("GET", "/", {"host": "b"}, b"", 2)).body) == b"1"
    assert len(connections) == 1

    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n1"
    pool, connections = await serve(answering(closing, closing, closing))
    for _ in range(2):
        assert await body_of((await pool.request("GET", "/", {"host": "b"}, b"", 2)).body) == b"1"
    assert len(connections) == 2


async def test_an_idle_connection_the_upstream_closed_is_retried_on_a_fresh_one(serve) -> None:  # type: ignore[no-untyped-def]
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    async def answer_once_then_drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok)
        await writer.drain()
        await read_request(reader)  # takes the next request on this connection and hangs up unanswered

    pool, connections = await serve(answer_once_then_drop)
    assert await body_of((await pool.request("POST", "/", {"host": "b"}, b"x", 2)).body) == b"ok"
    assert await body_of((await pool.request("POST", "/", {"host": "b"}, b"x", 2)).body) == b"ok"
    assert len(connections) == 2


async def test_a_body_cut_short_is_an_error_and_the_connection_is_not_kept(serve) -> None:  # type: ignore[no-untyped-def]
    pool, connections = await serve(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\npartial", close=True))
    response = await pool.request("GET", "/", {"host": "b"}, b"", 2)
    with pytest.raises(Exception, match="broke off"):
        await body_of(response.body)
    assert len(connections) == 1


async def test_a_streamed_request_body_goes_chunked_without_a_length(serve) -> None:  # type: ignore[no-untyped-def]
    seen: list[bytes] = []

    async def echo_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_request(reader)
        seen.append(head)
        seen.append(await reader.readuntil(b"0\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    async def parts() -> AsyncIterator[bytes]:
        yield b"ab"
        yield b"cde"

    pool, _ = await serve(echo_chunked)
    response = await pool.request("PUT", "/up", {"host": "b"}, parts(), 2)
    assert response.status == 200
    assert b"transfer-encoding: chunked\r\n" in seen[0]
    assert seen[1] == b"2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"


async def test_a_header_value_with_a_line_break_is_refused(serve) -> None:  # type: ignore[no-untyped-def]
    pool, connections = await serve(answering())
    with pytest.raises(ValueError, match="line break"):
        await pool.request("GET", "/", {"host": "b", "x-bad": "a\r\nx-injected: 1"}, b"", 2)
    assert connections == []
