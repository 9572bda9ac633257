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

from edge.errors import UpstreamUnavailable
from edge.upstream.http1 import HEAD_LIMIT, OriginPool
from edge.upstream.http1_body import BODY_BUFFER, BodyStream
from edge.upstream.http1_errors import ProtocolFailure

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
async def serve() -> AsyncIterator[Callable[..., Awaitable[tuple[OriginPool, list[int]]]]]:
    servers: list[asyncio.Server] = []
    pools: list[OriginPool] = []

    async def start(answer: Answer, limit: int = 4) -> tuple[OriginPool, list[int]]:
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
            "127.0.0.1", port, ssl_context=None, server_hostname=None, limit=limit, keepalive=30, connect_timeout=2
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


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        ("/", {"host": "b", "x-bad": "a\r\nx-injected: 1"}),
        ("/", {"host": "b", "x-bad": "a\nx-injected: 1"}),
        ("/", {"host": "b", "x-bad": "a\rx-injected: 1"}),
        ("/", {"host": "b", "x-bad": "ends with a CR\r"}),
        ("/", {"host": "b", "x-bad\r\nx-injected": "1"}),
        ("/a HTTP/1.1\r\nx-injected: 1\r\n", {"host": "b"}),
    ],
)
async def test_a_line_break_in_the_head_is_refused(serve, target: str, headers: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    pool, connections = await serve(answering())
    with pytest.raises(ValueError, match="line break"):
        await pool.request("GET", target, headers, b"", 2)
    assert connections == []


async def test_a_head_answer_is_complete_without_its_body_and_its_connection_is_not_reused(serve) -> None:  # type: ignore[no-untyped-def]
    async def by_method(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while request := await read_request(reader):
            if request.startswith(b"HEAD"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    pool, connections = await serve(by_method)
    response = await asyncio.wait_for(pool.request("HEAD", "/", {"host": "b"}, b"", 2), 2)
    assert (response.status, response.body) == (200, b"")
    assert dict(response.headers)["content-length"] == "99"
    assert await body_of((await pool.request("GET", "/", {"host": "b"}, b"", 2)).body) == b"ok"
    assert len(connections) == 2


async def test_a_large_body_read_slowly_leaves_the_connection_reusable(serve) -> None:  # type: ignore[no-untyped-def]
    size = 4 * BODY_BUFFER
    big = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    pool, connections = await serve(answering(big, ok))
    response = await pool.request("GET", "/big", {"host": "b"}, b"", 2)
    assert isinstance(response.body, BodyStream)
    await asyncio.sleep(0.2)  # everything the socket holds arrives while nobody reads: reading pauses
    received = 0
    async for piece in response.body:
        received += len(piece)
    assert received == size
    second = await asyncio.wait_for(pool.request("GET", "/", {"host": "b"}, b"", 2), 2)
    assert await body_of(second.body) == b"ok"
    assert len(connections) == 1


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (b"SMTP ready\r\n\r\n", "unreadable response"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nok", "unreadable response"),
        (b"HTTP/1.1 200 OK\r\n" + b"x-filler: " + b"a" * HEAD_LIMIT + b"\r\n\r\n", "response head larger"),
    ],
)
async def test_an_answer_that_is_not_http_is_a_protocol_failure(serve, reply: bytes, message: str) -> None:  # type: ignore[no-untyped-def]
    pool, _ = await serve(answering(reply))
    with pytest.raises(ProtocolFailure, match=message):
        await asyncio.wait_for(pool.request("GET", "/", {"host": "b"}, b"", 2), 2)


async def test_a_stalled_body_breaks_off_after_the_read_timeout(serve) -> None:  # type: ignore[no-untyped-def]
    pool, _ = await serve(answering(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"))
    response = await pool.request("GET", "/", {"host": "b"}, b"", 0.2)
    assert isinstance(response.body, BodyStream)
    assert await anext(response.body) == b"abc"
    with pytest.raises(UpstreamUnavailable, match="broke off"):
        await asyncio.wait_for(anext(response.body), 2)
    await response.body.aclose()


async def test_bytes_sent_while_idle_retire_the_connection(serve) -> None:  # type: ignore[no-untyped-def]
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    async def answer_with_junk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok + b"HTTP/1.1 200 OK\r\n")
        await writer.drain()
        await reader.read()

    pool, connections = await serve(answer_with_junk)
    for _ in range(2):
        response = await asyncio.wait_for(pool.request("GET", "/", {"host": "b"}, b"", 2), 2)
        assert await body_of(response.body) == b"ok"
    assert len(connections) == 2


class InFlight:
    """A test backend's requests being answered at once, and the most there were."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0

    async def answer(self, writer: asyncio.StreamWriter, delay: float) -> None:
        """A 200 after `delay`, the request counted as in flight meanwhile."""
        self.now += 1
        self.most = max(self.most, self.now)
        await asyncio.sleep(delay)
        self.now -= 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()


async def test_a_retried_request_holds_one_slot_of_the_pool(serve) -> None:  # type: ignore[no-untyped-def]
    in_flight = InFlight()

    async def answer_then_drop_the_next(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await in_flight.answer(writer, 0.01)
        await read_request(reader)  # the next request on this connection is dropped unanswered

    pool, _ = await serve(answer_then_drop_the_next, limit=1)
    await pool.request("POST", "/", {"host": "b"}, b"x", 2)
    replies = await asyncio.wait_for(
        asyncio.gather(*(pool.request("POST", "/", {"host": "b"}, b"x", 2) for _ in range(4))), 5
    )
    assert [reply.body for reply in replies] == [b"ok"] * 4
    assert in_flight.most == 1


async def test_callers_of_a_full_pool_wait_in_turn_and_one_giving_up_frees_no_extra_slot(serve) -> None:  # type: ignore[no-untyped-def]
    in_flight = InFlight()

    async def slowly(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader):
            await in_flight.answer(writer, 0.02)

    pool, _ = await serve(slowly, limit=2)
    calls = [asyncio.create_task(pool.request("GET", "/", {"host": "b"}, b"", 2)) for _ in range(6)]
    await asyncio.sleep(0.005)
    calls[3].cancel()  # waiting for a slot
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 5)
    assert isinstance(results[3], asyncio.CancelledError)
    assert [r.body for i, r in enumerate(results) if i != 3] == [b"ok"] * 5  # type: ignore[union-attr]
    assert in_flight.most == 2
    more = await asyncio.wait_for(
        asyncio.gather(*(pool.request("GET", "/", {"host": "b"}, b"", 2) for _ in range(4))), 5
    )
    assert [r.body for r in more] == [b"ok"] * 4
    assert in_flight.most == 2
