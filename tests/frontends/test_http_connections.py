"""HTTP/1.1 connection handling of the door, on both server engines: keep-alive, pipelining, HEAD, 1.0, 100-continue."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from tests.conftest import GatewayFiles, StartBackend


def echo_app() -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(body=request.path.encode() + b":" + body, content_type="text/plain")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.5)
        return web.Response(text="slow done")

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(3):
            await response.write(b"x" * 100_000)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/slow", slow)
    app.router.add_get("/stream", stream)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


async def start(edge: GatewayFiles, start_backend: StartBackend) -> int:
    backend = await start_backend(echo_app())
    await edge.start({"routes": [{"match": {"prefix": "/"}, "upstream": backend}]})
    assert edge.gateway is not None
    return edge.gateway.ports["http"]


async def read_reply(reader: asyncio.StreamReader, head_only: bool = False) -> tuple[bytes, dict[str, str], bytes]:
    """One response: status line, headers (lower-cased names), body (Content-Length, chunked or to the end)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if head_only:
        return lines[0].encode(), headers, b""
    if "content-length" in headers:
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 5)
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)).strip(), 16)
            body += await asyncio.wait_for(reader.readexactly(size + 2), 5)
            if size == 0:
                break
            body = body[:-2]
    else:
        body = await asyncio.wait_for(reader.read(), 5)
    return lines[0].encode(), headers, body


async def test_keepalive_and_pipelined_requests_answered_in_order(
    edge: GatewayFiles, start_backend: StartBackend
) -> None:
    port = await start(edge, start_backend)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    replies = [await read_reply(reader) for _ in range(3)]
    assert [(status, body) for status, _, body in replies] == [
        (b"HTTP/1.1 200 OK", b"slow done"),
        (b"HTTP/1.1 200 OK", b"/a:hello"),
        (b"HTTP/1.1 200 OK", b"/b:"),
    ]
    assert all(headers.get("connection", "").lower() != "close" for _, headers, _ in replies)
    assert len({headers["x-request-id"] for _, headers, _ in replies}) == 3
    writer.write(b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    status, headers, body = await read_reply(reader)
    assert (status, body, headers["connection"].lower()) == (b"HTTP/1.1 200 OK", b"/c:", "close")
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_pipelined_request_body_sent_after_the_first_reply(
    edge: GatewayFiles, start_backend: StartBackend
) -> None:
    port = await start(edge, start_backend)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nPOST /late HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n")
    status, _, body = await read_reply(reader)
    assert (status, body) == (b"HTTP/1.1 200 OK", b"slow done")
    writer.write(b"data")
    status, _, body = await read_reply(reader)
    assert (status, body) == (b"HTTP/1.1 200 OK", b"/late:data")
    writer.close()


async def test_http10_closes_after_the_reply(edge: GatewayFiles, start_backend: StartBackend) -> None:
    port = await start(edge, start_backend)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /old HTTP/1.0\r\nHost: x\r\n\r\n")
    status, _, body = await read_reply(reader)
    assert status.split(b" ")[1] == b"200" and body == b"/old:"
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_streamed_reply_to_http10_is_delimited_by_close(edge: GatewayFiles, start_backend: StartBackend) -> None:
    port = await start(edge, start_backend)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /stream HTTP/1.0\r\nHost: x\r\n\r\n")
    status, headers, body = await read_reply(reader)
    assert status.split(b" ")[1] == b"200" and "transfer-encoding" not in headers
    assert body == b"x" * 300_000
    writer.close()


async def test_head_gets_headers_without_body(edge: GatewayFiles, start_backend: StartBackend) -> None:
    port = await start(edge, start_backend)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, _ = await read_reply(reader, head_only=True)
    assert status == b"HTTP/1.1 200 OK" and headers["content-length"] == "3"
    status, _, body = await read_reply(reader)
    assert body == b"/after:"
    writer.close()


@pytest.mark.parametrize("engine", ["httptools"])  # aiohttp's low-level server sends no 100 Continue
async def test_expect_100_continue_is_answered(edge: GatewayFiles, start_backend: StartBackend) -> None:
    port = await start(edge, start_backend)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim.startswith(b"HTTP/1.1 100")
    writer.write(b"data")
    status, _, body = await read_reply(reader)
    assert status == b"HTTP/1.1 200 OK" and body == b"/up:data"
    writer.close()


async def test_client_gone_mid_call_is_audited_as_cancelled(edge: GatewayFiles, start_backend: StartBackend) -> None:
    port = await start(edge, start_backend)
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.transport.abort()
    for _ in range(100):  # the record is written after the pipeline saw the cancellation
        if edge.audit_records():
            break
        await asyncio.sleep(0.05)
    record = edge.audit_records()[-1]
    assert record["status"] == 499 and record["path"] == "/slow"


async def test_shutdown_drains_the_call_in_flight(edge: GatewayFiles, start_backend: StartBackend) -> None:
    port = await start(edge, start_backend)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(0.1)
    stopping = asyncio.create_task(edge.stop())
    status, _, body = await read_reply(reader)
    assert (status, body) == (b"HTTP/1.1 200 OK", b"slow done")
    assert await asyncio.wait_for(idle_reader.read(), 5) == b""
    await asyncio.wait_for(stopping, 5)
    writer.close()
    idle_writer.close()
