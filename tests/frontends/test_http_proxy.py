"""The HTTP door proxies to real aiohttp backends: paths, queries, headers, streaming bodies."""

from __future__ import annotations

import asyncio
import hashlib
import os

import aiohttp
from aiohttp import web

from tests.conftest import GatewayFiles, StartBackend


def echo_app() -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "path": request.raw_path,
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "header_list": [[k.lower(), v] for k, v in request.headers.items()],
                "body": body.decode(errors="replace"),
            },
            headers={
                "X-Backend": "echo",
                "Connection": "keep-alive, X-Hop",
                "X-Hop": "secret",
                "Keep-Alive": "timeout=5",
            },
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


async def test_refill_example_returns_backend_json(edge: GatewayFiles, start_backend: StartBackend) -> None:
    async def refill(request: web.Request) -> web.Response:
        return web.json_response({"status": "QUEUED", "pickup": "03-Oct-2024", "rx": request.query["rx"]})

    app = web.Application()
    app.router.add_get("/refill", refill)
    backend = await start_backend(app)
    await edge.start(
        {
            "routes": [
                {
                    "name": "refill",
                    "match": {"path": "/v1/prescriptions/refill"},
                    "upstream": "pharmacy",
                    "rewrite": "/refill",
                }
            ]
        },
        upstreams={"pharmacy": {"endpoints": [backend]}},
    )
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{edge.url}/v1/prescriptions/refill?rx=RX-42") as response,
    ):
        assert response.status == 200
        assert await response.json() == {"status": "QUEUED", "pickup": "03-Oct-2024", "rx": "RX-42"}
        assert len(response.headers["x-request-id"]) == 32


async def test_shorthand_prefix_route_rewrites_and_keeps_query(edge: GatewayFiles, start_backend: StartBackend) -> None:
    backend = await start_backend(echo_app())
    await edge.start({"/v1/voting/ballots": f"{backend}/ballots"})
    async with aiohttp.ClientSession() as session:
        for path, expected in [
            ("/v1/voting/ballots?state=VA&x=%20y", "/ballots?state=VA&x=%20y"),
            ("/v1/voting/ballots/7/tally", "/ballots/7/tally"),
            ("/v1/voting/ballots/a%20b", "/ballots/a%20b"),
        ]:
            async with session.get(edge.url + path) as response:
                assert response.status == 200, path
                assert (await response.json())["path"] == expected
        async with session.get(f"{edge.url}/v1/voting/ballotsx") as response:
            assert response.status == 404


async def test_request_headers_forwarded_and_hop_by_hop_removed(
    edge: GatewayFiles, start_backend: StartBackend
) -> None:
    backend = await start_backend(echo_app())
    await edge.start({"routes": [{"match": {"prefix": "/"}, "upstream": backend}]})
    headers = {
        "X-Request-Id": "req-123",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "Connection": "keep-alive, X-Private",
        "X-Private": "hop",
        "TE": "trailers",
        "X-Custom": "kept",
        "X-Forwarded-For": "203.0.113.9",
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{edge.url}/things?q=1", data=b"hello", headers=headers) as response,
    ):
        assert response.status == 200
        seen = await response.json()
        assert response.headers["x-request-id"] == "req-123"
        assert response.headers["x-backend"] == "echo"
        for hop in ("x-hop", "keep-alive"):
            assert hop not in response.headers
    got = seen["headers"]
    assert seen["method"] == "POST" and seen["path"] == "/things?q=1" and seen["body"] == "hello"
    assert got["x-request-id"] == "req-123"
    assert got["traceparent"] == headers["traceparent"]
    assert got["x-custom"] == "kept"
    assert got["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert got["x-forwarded-proto"] == "http"
    assert got["x-forwarded-host"] == edge.url.removeprefix("http://")
    assert got["host"] == backend.removeprefix("http://")
    assert "x-private" not in got and "te" not in got


async def test_traceparent_created_when_absent(edge: GatewayFiles, start_backend: StartBackend) -> None:
    backend = await start_backend(echo_app())
    await edge.start({"routes": [{"match": {"prefix": "/"}, "upstream": backend}]})
    async with aiohttp.ClientSession() as session, session.get(f"{edge.url}/x") as response:
        got = (await response.json())["headers"]
    version, trace, span, flags = got["traceparent"].split("-")
    assert (version, len(trace), len(span), flags) == ("00", 32, 16, "01")
    assert got["x-request-id"] == response.headers["x-request-id"]


async def test_large_download_streams_through(edge: GatewayFiles, start_backend: StartBackend) -> None:
    """50 MB pass through; the first chunk reaches the client before the backend has sent the rest."""
    first_chunk_seen = asyncio.Event()
    chunk = os.urandom(1 << 20)
    expected = hashlib.sha256(chunk * 50).hexdigest()

    async def download(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        await response.write(chunk)
        await asyncio.wait_for(first_chunk_seen.wait(), 10)
        for _ in range(49):
            await response.write(chunk)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/big", download)
    backend = await start_backend(app)
    await edge.start({"routes": [{"match": {"path": "/big"}, "upstream": backend}]})
    digest = hashlib.sha256()
    received = 0
    async with aiohttp.ClientSession() as session, session.get(f"{edge.url}/big") as response:
        async for data in response.content.iter_chunked(1 << 16):
            digest.update(data)
            received += len(data)
            first_chunk_seen.set()
    assert received == 50 << 20
    assert digest.hexdigest() == expected
    await asyncio.sleep(0.3)
    record = edge.audit_records()[-1]
    assert record["bytes_out"] == 50 << 20 and record["status"] == 200


async def test_large_upload_streams_through(edge: GatewayFiles, start_backend: StartBackend) -> None:
    """The backend reads the first part of an upload while the client is still holding back the rest."""
    backend_got_first = asyncio.Event()
    part = os.urandom(1 << 20)

    async def upload(request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        total = 0
        async for data in request.content.iter_chunked(1 << 16):
            digest.update(data)
            total += len(data)
            if total >= len(part):
                backend_got_first.set()
        return web.json_response({"bytes": total, "sha256": digest.hexdigest()})

    async def body():  # type: ignore[no-untyped-def]
        yield part
        await asyncio.wait_for(backend_got_first.wait(), 10)
        for _ in range(19):
            yield part

    app = web.Application(client_max_size=1 << 30)
    app.router.add_post("/up", upload)
    backend = await start_backend(app)
    await edge.start({"routes": [{"match": {"path": "/up"}, "upstream": backend}]}, limits={"max_body": "64MiB"})
    async with aiohttp.ClientSession() as session, session.post(f"{edge.url}/up", data=body()) as response:
        assert response.status == 200
        assert await response.json() == {"bytes": 20 << 20, "sha256": hashlib.sha256(part * 20).hexdigest()}


async def test_keepalive_connections_to_upstream_are_reused(edge: GatewayFiles, start_backend: StartBackend) -> None:
    ports: set[int] = set()

    async def who(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        ports.add(peer[1] if peer else 0)
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/who", who)
    backend = await start_backend(app)
    await edge.start({"routes": [{"match": {"path": "/who"}, "upstream": backend}]})
    async with aiohttp.ClientSession() as session:
        for _ in range(20):
            async with session.get(f"{edge.url}/who") as response:
                assert response.status == 200
    assert len(ports) == 1


async def test_audit_record_per_call_without_query_or_tokens(edge: GatewayFiles, start_backend: StartBackend) -> None:
    backend = await start_backend(echo_app())
    await edge.start({"routes": [{"name": "echo", "match": {"prefix": "/v1"}, "upstream": backend}]})
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{edge.url}/v1/a?token=SECRET", data=b"12345", headers={"Authorization": "Bearer SECRET"}
        ) as response:
            assert response.status == 200
            request_id = response.headers["x-request-id"]
        async with session.get(f"{edge.url}/nowhere?token=SECRET") as response:
            assert response.status == 404
    await edge.stop()
    records = edge.audit_records()
    assert [r["status"] for r in records] == [200, 404]
    ok, missing = records
    assert ok["request_id"] == request_id
    assert ok["path"] == "/v1/a" and ok["route"] == "echo" and ok["method"] == "POST"
    assert ok["bytes_in"] == 5 and ok["bytes_out"] > 0 and ok["client_ip"] == "127.0.0.1"
    assert ok["upstream"] == backend and ok["endpoint"] == backend
    assert ok["time"].endswith("Z") and ok["latency_ms"] >= 0
    assert missing["route"] is None and missing["grpc_status"] == "UNIMPLEMENTED"
    assert "SECRET" not in edge.audit_path.read_text()
