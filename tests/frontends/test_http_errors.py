"""Replies the HTTP door makes itself: the status table, in the Google error shape, never a 500."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import GatewayFiles, StartBackend
from tests.net import free_port


def ok_app() -> web.Application:
    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"ok": True, "path": request.raw_path})

    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/{tail:.*}", ok)
    return app


async def get_error(response: aiohttp.ClientResponse) -> dict[str, object]:
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers.get("x-request-id")
    body = await response.json()
    assert set(body) == {"error"}
    error: dict[str, object] = body["error"]
    assert error["code"] == response.status
    return error


async def raw_request(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(65536), 5)
    writer.close()
    return reply


async def test_no_route_is_404(edge: GatewayFiles, start_backend: StartBackend) -> None:
    backend = await start_backend(ok_app())
    await edge.start({"routes": [{"match": {"path": "/v1/known", "methods": ["GET"]}, "upstream": backend}]})
    async with aiohttp.ClientSession() as session:
        for method, path in [("GET", "/v1/unknown"), ("DELETE", "/v1/known")]:
            async with session.request(method, edge.url + path) as response:
                assert response.status == 404
                assert await get_error(response) == {
                    "code": 404,
                    "status": "UNIMPLEMENTED",
                    "message": "no route for this path",
                }


async def test_upstream_refused_is_502(edge: GatewayFiles) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    await edge.start(
        {"routes": [{"match": {"prefix": "/"}, "upstream": "dead"}]}, upstreams={"dead": {"endpoints": [dead]}}
    )
    async with aiohttp.ClientSession() as session, session.get(f"{edge.url}/x") as response:
        assert response.status == 502
        error = await get_error(response)
        assert error["status"] == "UNAVAILABLE" and "unreachable" in str(error["message"])


async def test_second_endpoint_used_when_first_refuses(edge: GatewayFiles, start_backend: StartBackend) -> None:
    backend = await start_backend(ok_app())
    dead = f"http://127.0.0.1:{free_port()}"
    await edge.start(
        {"routes": [{"match": {"prefix": "/"}, "upstream": "pair"}]}, upstreams={"pair": {"endpoints": [dead, backend]}}
    )
    async with aiohttp.ClientSession() as session:
        for _ in range(4):
            async with session.get(f"{edge.url}/x") as response:
                assert response.status == 200


async def test_upstream_reset_is_502(edge: GatewayFiles, start_backend: StartBackend) -> None:
    async def reset(request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.abort()
        await asyncio.sleep(1)
        return web.Response()

    app = web.Application()
    app.router.add_get("/reset", reset)
    backend = await start_backend(app)
    await edge.start({"routes": [{"match": {"path": "/reset"}, "upstream": backend}]})
    async with aiohttp.ClientSession() as session, session.get(f"{edge.url}/reset") as response:
        assert response.status == 502
        assert (await get_error(response))["status"] == "UNAVAILABLE"


async def test_slow_upstream_is_504_within_route_timeout(edge: GatewayFiles, start_backend: StartBackend) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response()

    app = web.Application()
    app.router.add_get("/slow", slow)
    backend = await start_backend(app)
    await edge.start({"routes": [{"match": {"path": "/slow"}, "upstream": backend, "timeout": "200ms"}]})
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with aiohttp.ClientSession() as session, session.get(f"{edge.url}/slow") as response:
        assert response.status == 504
        assert (await get_error(response))["status"] == "DEADLINE_EXCEEDED"
    assert loop.time() - started < 2


async def test_body_over_limit_is_413(edge: GatewayFiles, start_backend: StartBackend) -> None:
    backend = await start_backend(ok_app())
    await edge.start({"routes": [{"match": {"prefix": "/"}, "upstream": backend}]}, limits={"max_body": "1KiB"})

    async def chunked():  # type: ignore[no-untyped-def]
        for _ in range(8):
            yield b"x" * 512

    async with aiohttp.ClientSession() as session:
        async with session.post(f"{edge.url}/up", data=b"x" * 1024) as response:
            assert response.status == 200
        async with session.post(f"{edge.url}/up", data=b"x" * 1025) as response:
            assert response.status == 413
            assert (await get_error(response))["status"] == "RESOURCE_EXHAUSTED"
        async with session.post(f"{edge.url}/up", data=chunked()) as response:
            assert response.status == 413
            assert (await get_error(response))["status"] == "RESOURCE_EXHAUSTED"


async def test_headers_too_large_is_431(edge: GatewayFiles, start_backend: StartBackend) -> None:
    backend = await start_backend(ok_app())
    await edge.start(
        {"routes": [{"match": {"prefix": "/"}, "upstream": backend}]},
        limits={"max_header_line": 1024, "max_headers": 20},
    )
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{edge.url}/x", headers={"X-Big": "a" * 2000}) as response:
            assert response.status == 431
            assert (await get_error(response))["status"] == "RESOURCE_EXHAUSTED"
        async with session.get(f"{edge.url}/x", headers={f"X-H{i}": "v" for i in range(40)}) as response:
            assert response.status == 431
        async with session.get(f"{edge.url}/{'a' * 2000}") as response:
            assert response.status == 431


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/../etc/passwd", "path escapes the root"),
        ("/a/../../b", "path escapes the root"),
        ("/%2e%2e/x", "path escapes the root"),
        ("/a%00b", "percent-encoded control character in path"),
        ("/a%5cb", "backslash in path"),
        ("/a%zzb", "malformed percent escape in path"),
        ("/v1/a%2Fb", "encoded '/' (%2F) is only allowed inside a path template variable"),
    ],
)
async def test_bad_paths_are_400(edge: GatewayFiles, start_backend: StartBackend, path: str, message: str) -> None:
    backend = await start_backend(ok_app())
    await edge.start({"routes": [{"match": {"prefix": "/"}, "upstream": backend}]})
    reply = await raw_request(edge.gateway.ports["http"], f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())  # type: ignore[union-attr]
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), head
    assert message in body.decode()


async def test_encoded_slash_allowed_inside_template_variable(edge: GatewayFiles, start_backend: StartBackend) -> None:
    backend = await start_backend(ok_app())
    await edge.start(
        {"routes": [{"match": {"path": "/v1/files/{name}"}, "upstream": backend, "rewrite": "/files/{name}"}]}
    )
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{edge.url}/v1/files/a%2Fb", allow_redirects=False) as response,
    ):
        assert response.status == 200
        assert (await response.json())["path"] == "/files/a%2Fb"


async def test_dot_segments_resolved_before_routing(edge: GatewayFiles, start_backend: StartBackend) -> None:
    backend = await start_backend(ok_app())
    await edge.start({"routes": [{"match": {"prefix": "/public"}, "upstream": backend}]})
    reply = await raw_request(edge.gateway.ports["http"], b"GET /public/../admin HTTP/1.1\r\nHost: x\r\n\r\n")  # type: ignore[union-attr]
    assert reply.startswith(b"HTTP/1.1 404")
    reply = await raw_request(edge.gateway.ports["http"], b"GET /x/%2e%2e/public/a HTTP/1.1\r\nHost: x\r\n\r\n")  # type: ignore[union-attr]
    assert reply.startswith(b"HTTP/1.1 200") and b'"/public/a"' in reply


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header Name: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ],
)
async def test_malformed_requests_are_400_in_error_shape(
    edge: GatewayFiles, start_backend: StartBackend, request_bytes: bytes
) -> None:
    backend = await start_backend(ok_app())
    await edge.start({"routes": [{"match": {"prefix": "/"}, "upstream": backend}]})
    reply = await raw_request(edge.gateway.ports["http"], request_bytes)  # type: ignore[union-attr]
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400", reply
    assert b'"status":"INVALID_ARGUMENT"' in body


@pytest.mark.parametrize("engine", ["httptools"])  # aiohttp's parser answers these before any door code runs
@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
    ],
)
async def test_a_request_that_cannot_be_parsed_is_audited_under_its_reply_id(
    edge: GatewayFiles, start_backend: StartBackend, request_bytes: bytes, status: int, engine: str
) -> None:
    backend = await start_backend(ok_app())
    await edge.start({"routes": [{"match": {"prefix": "/"}, "upstream": backend}]})
    reply = await raw_request(edge.gateway.ports["http"], request_bytes)  # type: ignore[union-attr]
    head = reply.partition(b"\r\n\r\n")[0].decode()
    assert head.split(" ")[1] == str(status), reply
    request_id = next(line.split(": ", 1)[1] for line in head.split("\r\n") if line.startswith("x-request-id: "))
    for _ in range(100):
        if edge.audit_records():
            break
        await asyncio.sleep(0.02)
    records = [r for r in edge.audit_records() if r.get("request_id") == request_id]
    assert len(records) == 1, edge.audit_records()
    record = records[0]
    assert record["status"] == status and record["client_ip"] == "127.0.0.1"
    assert record["route"] is None and record["trace_id"]


@pytest.mark.parametrize("engine", ["httptools"])  # aiohttp's low-level server has no head timeout
async def test_a_head_trickled_slower_than_the_header_timeout_is_408_and_audited(
    edge: GatewayFiles, start_backend: StartBackend, engine: str
) -> None:
    backend = await start_backend(ok_app())
    await edge.start({"routes": [{"match": {"prefix": "/"}, "upstream": backend}]}, limits={"header_timeout": "0.4s"})
    port = edge.gateway.ports["http"]  # type: ignore[union-attr]

    async def trickled(head: bytes, pause: float) -> bytes:
        """Send the head a few bytes every `pause` seconds until the gateway answers; return the answer."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = asyncio.ensure_future(reader.read(65536))
        try:
            for at in range(0, len(head), 4):
                if answer.done():
                    break
                writer.write(head[at : at + 4])
                await asyncio.sleep(pause)
            return await asyncio.wait_for(answer, 5)
        finally:
            writer.close()

    slowloris = b"GET /x HTTP/1.1\r\nHost: x\r\nUser-Agent: " + b"a" * 200 + b"\r\n\r\n"
    started = asyncio.get_running_loop().time()
    reply = await trickled(slowloris, 0.02)  # ~1.1 s for the whole head: past the limit, though never idle
    assert asyncio.get_running_loop().time() - started < 2.5
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), reply
    assert b"connection: close" in head
    assert b'"status":"DEADLINE_EXCEEDED"' in body and b"did not arrive within 0.4s" in body
    request_id = next(
        line.split(b": ", 1)[1].decode() for line in head.split(b"\r\n") if line.startswith(b"x-request-id")
    )
    for _ in range(100):
        if any(r.get("request_id") == request_id for r in edge.audit_records()):
            break
        await asyncio.sleep(0.02)
    assert [r["status"] for r in edge.audit_records() if r.get("request_id") == request_id] == [408]
    quick = await trickled(b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 0.02)  # ~0.25 s: in time
    assert quick.startswith(b"HTTP/1.1 200"), quick
