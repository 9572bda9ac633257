"""The audit trail of a running gateway: one record per call through either door, one valid chain.

Real gateways from YAML, real aiohttp and grpc.aio backends on loopback. The
records are read back from the file sink after the gateway stopped (SIGTERM's
path: the queue is flushed and a last checkpoint signed) and checked with the
same verifier `edge audit verify` runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web
from grpc import aio

from edge.call import Call, Metadata, Peer, Principal, Reply
from edge.pipeline.audit import build_record
from edge.pipeline.audit.checkpoint import load_public_key
from edge.pipeline.audit.record import finish
from edge.pipeline.audit.verify import verify_files
from tests.audit.conftest import Keys
from tests.conftest import GatewayFiles, StartBackend

TRACE = "0af7651916cd43dd8448eb211c80319c"
SAY = "/edge.test.Echo/Say"


def echo_app() -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"traceparent": request.headers.get("traceparent")})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


@pytest.fixture
async def grpc_backend() -> AsyncIterator[str]:
    async def say(request: bytes, context: aio.ServicerContext) -> bytes:
        return b"heard:" + request

    handler = grpc.method_handlers_generic_handler("edge.test.Echo", {"Say": grpc.unary_unary_rpc_method_handler(say)})
    server = aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"grpc://127.0.0.1:{port}"
    await server.stop(None)


def audit_section(keys: Keys, **extra: Any) -> dict[str, Any]:
    return {"signing_key": str(keys.private), "checkpoints": {"every": 25, "interval": "1h"}, **extra}


async def test_record_fields_and_the_trace_id_the_backend_saw(
    edge: GatewayFiles, start_backend: StartBackend, keys: Keys
) -> None:
    backend = await start_backend(echo_app())
    await edge.start(
        {"routes": [{"name": "echo", "match": {"prefix": "/v1"}, "upstream": backend, "operation": "echo.call"}]},
        audit=audit_section(keys),
    )
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{edge.url}/v1/a/../b?token=SECRET", data=b"12345", headers={"Authorization": "Bearer SECRET"}
        ) as response:
            made = (await response.json())["traceparent"]
            request_id = response.headers["x-request-id"]
        async with session.get(
            f"{edge.url}/v1/c", headers={"traceparent": f"00-{TRACE}-b7ad6b7169203331-01"}
        ) as response:
            assert (await response.json())["traceparent"] == f"00-{TRACE}-b7ad6b7169203331-01"
        async with session.get(f"{edge.url}/nowhere?q=SECRET") as response:
            assert response.status == 404
    await edge.stop()
    assert "SECRET" not in edge.audit_path.read_text()
    calls = [r for r in map(json.loads, edge.audit_path.read_text().splitlines()) if r["kind"] == "call"]
    posted, traced, missing = calls
    assert posted["trace_id"] == made.split("-")[1] and traced["trace_id"] == TRACE
    assert {k: posted[k] for k in FIELDS} == {
        "kind": "call",
        "seq": 1,
        "instance": edge.gateway.audit.instance if edge.gateway else None,
        "request_id": request_id,
        "ingress": "http",
        "client_ip": "127.0.0.1",
        "method": "POST",
        "path": "/v1/b",
        "route": "echo",
        "operation": "echo.call",
        "upstream": backend,
        "endpoint": backend,
        "status": 200,
        "grpc_status": "OK",
        "bytes_in": 5,
    }
    assert posted["bytes_out"] > 0 and posted["latency_ms"] >= 0 and posted["time"].endswith("Z")
    assert set(posted["decisions"]) >= {"identity"} and "operation" not in posted["decisions"]
    assert (missing["status"], missing["grpc_status"], missing["reason"]) == (
        404,
        "UNIMPLEMENTED",
        "no route for this path",
    )
    report = verify_files([edge.audit_path], load_public_key(keys.public))
    assert report.ok and report.warnings == [], report.render()


FIELDS = (
    "kind", "seq", "instance", "request_id", "ingress", "client_ip", "method", "path", "route",
    "operation", "upstream", "endpoint", "status", "grpc_status", "bytes_in",
)  # fmt: skip


def test_principal_and_certificate_fingerprint_in_the_record() -> None:
    call = Call(
        ingress="grpc",
        method="POST",
        path="/hms.pharmacy.v1.Pharmacy/Refill",
        peer=Peer("10.0.0.7", 5000, certificate=b"DER bytes"),
        metadata=Metadata([("authorization", "Bearer SECRET")]),
        principal=Principal("veteran-1", ("patient",), issuer="https://idp", method="jwt", claims={"t": "SECRET"}),
    )
    record = finish(build_record(call, Reply(http_status=200), "gw-1"))
    assert record["principal"] == {
        "subject": "veteran-1",
        "roles": ["patient"],
        "method": "jwt",
        "issuer": "https://idp",
        "certificate_fingerprint": hashlib.sha256(b"DER bytes").hexdigest(),
    }
    assert "SECRET" not in json.dumps(record)


async def test_both_doors_under_concurrent_traffic_keep_one_valid_chain(
    tmp_path: Path, start_backend: StartBackend, grpc_backend: str, keys: Keys, edge: GatewayFiles
) -> None:
    backend = await start_backend(echo_app())
    gateway = await edge.start(
        {
            "routes": [
                {"name": "rest", "match": {"prefix": "/v1"}, "upstream": backend},
                {"name": "rpc", "match": {"grpc": "edge.test.Echo"}, "upstream": grpc_backend},
            ]
        },
        listeners={"grpc": {"host": "127.0.0.1", "port": 0}},
        audit=audit_section(keys),
    )

    async def http_calls(session: aiohttp.ClientSession, n: int) -> None:
        for i in range(n):
            async with session.get(f"{edge.url}/v1/items/{i}") as response:
                assert response.status == 200

    async def grpc_calls(channel: aio.Channel, n: int) -> None:
        say = channel.unary_unary(SAY)
        for i in range(n):
            assert await say(f"m{i}".encode(), timeout=5) == f"heard:m{i}".encode()

    async with (
        aiohttp.ClientSession() as session,
        aio.insecure_channel(f"127.0.0.1:{gateway.ports['grpc']}") as channel,
    ):
        async with asyncio.timeout(30):
            await asyncio.gather(
                *[http_calls(session, 25) for _ in range(4)], *[grpc_calls(channel, 25) for _ in range(4)]
            )
    await edge.stop()
    lines = edge.audit_path.read_text().splitlines()
    calls = [r for r in map(json.loads, lines) if r["kind"] == "call"]
    assert sorted(r["ingress"] for r in calls) == ["grpc"] * 100 + ["http"] * 100
    assert {r["route"] for r in calls} == {"rest", "rpc"}
    assert [json.loads(line)["seq"] for line in lines] == list(range(1, len(lines) + 1))
    report = verify_files([edge.audit_path], load_public_key(keys.public))
    assert report.ok and report.warnings == [], report.render()
    assert report.chains[gateway.audit.instance].checkpoints == 200 // 25
