"""The httptools connection's request-body flow control, against a recording transport."""

from __future__ import annotations

import asyncio
from typing import Any

from edge.config.gateway import Limits
from edge.errors import Status
from edge.frontends.h1_body import BODY_BUFFER
from edge.frontends.h1_server import H1Connection, H1Listener, H1Request


class RecordingTransport:
    def __init__(self) -> None:
        self.paused = False
        self.written = b""
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    abort = close

    def is_closing(self) -> bool:
        return self.closed


def error_reply(status: int, code: Status, message: str, connection: H1Connection) -> bytes:
    return f"HTTP/1.1 {status} x\r\n\r\n{message}".encode()


async def test_reading_pauses_while_the_body_waits_and_resumes_when_it_is_read() -> None:
    started = asyncio.Event()
    received: list[bytes] = []
    proceed = asyncio.Event()

    async def handler(request: H1Request, connection: H1Connection) -> None:
        started.set()
        await proceed.wait()
        assert request.body is not None
        async for chunk in request.body:
            received.append(chunk)
        connection.write(b"HTTP/1.1 204 No Content\r\n\r\n")

    connection = H1Connection(H1Listener(handler, Limits(), error_reply))
    transport = RecordingTransport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    size = 3 * BODY_BUFFER
    connection.data_received(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
    await asyncio.wait_for(started.wait(), 5)
    connection.data_received(b"a" * (BODY_BUFFER // 2))
    assert not transport.paused
    connection.data_received(b"a" * BODY_BUFFER)
    assert transport.paused
    proceed.set()
    for _ in range(100):
        await asyncio.sleep(0)
        if not transport.paused:
            break
    assert not transport.paused
    connection.data_received(b"a" * (size - BODY_BUFFER * 3 // 2))
    for _ in range(100):
        await asyncio.sleep(0)
        if transport.written:
            break
    assert sum(map(len, received)) == size
    assert transport.written == b"HTTP/1.1 204 No Content\r\n\r\n" and not transport.closed
    connection.connection_lost(None)


async def test_head_over_the_limits_is_431_and_malformed_is_400() -> None:
    async def handler(request: H1Request, connection: H1Connection) -> None:
        raise AssertionError("no request should reach the door")

    limits = Limits(max_header_line=64, max_headers=4)
    cases = [
        (b"GET /" + b"a" * 100 + b" HTTP/1.1\r\n\r\n", b"431"),
        (b"GET / HTTP/1.1\r\nX: " + b"v" * 100 + b"\r\n\r\n", b"431"),
        (b"GET / HTTP/1.1\r\n" + b"X: v\r\n" * 5 + b"\r\n", b"431"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", b"400"),
        (b"NOT HTTP\r\n\r\n", b"400"),
    ]
    for data, status in cases:
        connection = H1Connection(H1Listener(handler, limits, error_reply))
        transport = RecordingTransport()
        connection.connection_made(transport)  # type: ignore[arg-type]
        connection.data_received(data)
        for _ in range(10):
            await asyncio.sleep(0)
        assert transport.written.split(b" ")[1] == status, data
        assert transport.closed
        connection.connection_lost(None)


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_a_kept_alive_connection_is_idle_between_requests_and_closes_on_shutdown_or_loss() -> None:
    """One serving task answers request after request; between them the connection counts as idle."""
    release = asyncio.Event()
    served: list[str] = []

    async def handler(request: H1Request, connection: H1Connection) -> None:
        served.append(request.target)
        if request.target == "/slow":
            await release.wait()
        connection.write(b"HTTP/1.1 204 No Content\r\n\r\n")

    now = asyncio.get_running_loop().time() + 1000
    for ending in ("shutdown", "loss", "malformed"):
        connection = H1Connection(H1Listener(handler, Limits(), error_reply))
        transport = RecordingTransport()
        connection.connection_made(transport)  # type: ignore[arg-type]
        for target in ("/a", "/b"):
            connection.data_received(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % target.encode())
            await settle()
            assert connection.idle_for(now) > 0
        connection.data_received(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        await settle()
        assert connection.idle_for(now) == 0  # in flight: never swept
        release.set()
        await settle()
        release.clear()
        assert transport.written == b"HTTP/1.1 204 No Content\r\n\r\n" * 3 and not transport.closed
        if ending == "shutdown":
            connection.shut_down()
            assert transport.closed
            connection.connection_lost(None)
        elif ending == "loss":
            connection.connection_lost(None)
        else:
            connection.data_received(b"NOT HTTP\r\n\r\n")
            await settle()
            assert transport.written.endswith(b"HTTP/1.1 400 x\r\n\r\nmalformed request: Invalid method encountered")
            assert transport.closed
            connection.connection_lost(None)
        await settle()
        assert connection._task is None  # no task is left waiting for a request that cannot come
    assert served == ["/a", "/b", "/slow"] * 3
