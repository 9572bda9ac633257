"""A sink down long enough to fill its spool: `reject` refuses regulated routes, `drop_oldest` declares a loss.

The down sink is a Redis URL nobody listens on; the file sink stays up, so
the file shows what happened: every call, the 503s included, and the loss
records naming the Redis sink.
"""

from __future__ import annotations

import asyncio
import json
import socket

import aiohttp
from aiohttp import web

from edge.pipeline.audit.verify import verify_files
from tests.conftest import GatewayFiles, StartBackend


def dead_redis_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


def ok_app() -> web.Application:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/{tail:.*}", ok)
    return app


async def start(edge: GatewayFiles, backend: str, on_full: str) -> None:
    await edge.start(
        {
            "routes": [
                {"name": "records", "match": {"prefix": "/v1/records"}, "upstream": backend, "regulated": True},
                {"name": "weather", "match": {"prefix": "/v1/weather"}, "upstream": backend},
            ]
        },
        audit={
            "sinks": [
                {"type": "file", "path": str(edge.audit_path)},
                {"type": "redis", "url": dead_redis_url(), "timeout": "200ms"},
            ],
            "spool": {"path": str(edge.folder / "spool"), "max_bytes": "6KiB", "on_full": on_full, "retry": "1h"},
        },
    )


async def test_reject_answers_503_on_regulated_routes_only(edge: GatewayFiles, start_backend: StartBackend) -> None:
    await start(edge, await start_backend(ok_app()), "reject")
    assert edge.gateway is not None
    async with aiohttp.ClientSession() as session, asyncio.timeout(15):
        async with session.get(f"{edge.url}/v1/records/1") as response:
            assert response.status == 200
        while edge.gateway.audit.accepting():
            async with session.get(f"{edge.url}/v1/weather") as response:
                assert response.status == 200
            await asyncio.sleep(0.01)
        async with session.get(f"{edge.url}/v1/records/2") as response:
            assert response.status == 503
            error = (await response.json())["error"]
            assert error["status"] == "UNAVAILABLE" and "audit" in error["message"]
        async with session.get(f"{edge.url}/v1/weather") as response:
            assert response.status == 200
    await edge.stop()
    records = [json.loads(line) for line in edge.audit_path.read_text().splitlines()]
    refused = [r for r in records if r.get("route") == "records" and r["status"] == 503]
    assert len(refused) == 1 and refused[0]["grpc_status"] == "UNAVAILABLE"
    assert verify_files([edge.audit_path]).ok


async def test_drop_oldest_keeps_serving_and_chains_a_loss_record(
    edge: GatewayFiles, start_backend: StartBackend
) -> None:
    await start(edge, await start_backend(ok_app()), "drop_oldest")
    assert edge.gateway is not None
    stats = edge.gateway.audit.stats
    async with aiohttp.ClientSession() as session, asyncio.timeout(15):
        while stats()["sinks"]["redis"]["dropped"] == 0:
            async with session.get(f"{edge.url}/v1/records/1") as response:
                assert response.status == 200
            await asyncio.sleep(0.01)
    await edge.stop()
    records = [json.loads(line) for line in edge.audit_path.read_text().splitlines()]
    losses = [r for r in records if r["kind"] == "loss"]
    assert losses and {r["sink"] for r in losses} == {"redis"}
    assert losses[-1]["from_seq"] == 1 and losses[-1]["count"] == stats()["sinks"]["redis"]["dropped"]
    assert verify_files([edge.audit_path]).ok
