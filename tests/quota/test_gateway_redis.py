"""A gateway counting in a private Redis: the HTTP door's replies, Redis dying and coming back mid-run."""

from __future__ import annotations

import asyncio
import gc
import os
import time
from typing import Any

import aiohttp
from aiohttp import web

from edge.call import Call, Denial
from edge.server import Gateway
from tests.conftest import GatewayFiles, StartBackend
from tests.redis_server import RedisServer


def ok_app() -> web.Application:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/{tail:.*}", ok)
    return app


async def start(
    edge: GatewayFiles, start_backend: StartBackend, redis: RedisServer, rule: dict[str, Any], **redis_options: Any
) -> Gateway:
    backend = await start_backend(ok_app())
    quota = {
        "store": redis.url,
        "redis": {"key_prefix": f"edge:quota-test-{os.urandom(4).hex()}", **redis_options},
        "rules": [{"name": "per-ip", "key": "client_ip", **rule}],
    }
    return await edge.start({"routes": [{"name": "api", "match": {"prefix": "/"}, "upstream": backend}]}, quota=quota)


def capture_modes(gateway: Gateway) -> list[str]:
    modes: list[str] = []

    async def capture(call: Call) -> Denial | None:
        modes.extend(r["mode"] for r in call.decisions["quota"]["rules"])
        return None

    gateway.pipeline.stages = (*gateway.pipeline.stages, capture)
    return modes


async def timed_get(session: aiohttp.ClientSession, url: str) -> tuple[int, float, dict[str, str]]:
    started = time.monotonic()
    async with session.get(url) as response:
        await response.read()
        return response.status, time.monotonic() - started, {k.lower(): v for k, v in response.headers.items()}


async def test_redis_counts_and_headers_through_the_http_door(
    edge: GatewayFiles, start_backend: StartBackend, redis_server: RedisServer
) -> None:
    gateway = await start(edge, start_backend, redis_server, {"limit": 3, "period": "1h", "algorithm": "sliding"})
    modes = capture_modes(gateway)
    async with aiohttp.ClientSession() as session:
        replies = [await timed_get(session, f"{edge.url}/x") for _ in range(4)]
    assert [r[0] for r in replies] == [200, 200, 200, 429]
    assert [r[2]["ratelimit-remaining"] for r in replies] == ["2", "1", "0", "0"]
    assert replies[3][2]["ratelimit-policy"] == "3;w=3600"
    assert 3598 <= int(replies[3][2]["retry-after"]) <= 3600
    assert modes == ["redis"] * 3


async def test_a_hung_redis_delays_no_call_more_than_100ms(
    edge: GatewayFiles, start_backend: StartBackend, stoppable_redis: RedisServer
) -> None:
    gateway = await start(
        edge,
        start_backend,
        stoppable_redis,
        {"limit": 1000, "period": "1h"},
        breaker={"failures": 3, "open_for": "300ms"},
    )
    modes = capture_modes(gateway)
    url = f"{edge.url}/x"
    # This process carries the heap of every earlier test; a full collection of it can pause the
    # loop for longer than the bound under test. A gateway's own process has no such heap.
    gc.collect()
    gc.freeze()
    async with aiohttp.ClientSession() as session:
        # the same concurrency with Redis healthy: what 20 calls at once cost in this one event loop
        healthy = await asyncio.gather(*[timed_get(session, url) for _ in range(20)])
        baseline = max(r[1] for r in healthy)
        stoppable_redis.freeze()
        try:
            down = await asyncio.gather(*[timed_get(session, url) for _ in range(20)])
            down += [await timed_get(session, url) for _ in range(10)]
        finally:
            stoppable_redis.thaw()
        assert [r[0] for r in down] == [200] * 30
        slowest = max(r[1] for r in down)
        assert slowest < baseline + 0.1, f"slowest {slowest * 1000:.0f} ms, baseline {baseline * 1000:.0f} ms"
        assert modes[20:] == ["degraded"] * 30
        assert all(r[2]["ratelimit-limit"] == "1000" for r in down), "the local fallback counts the same rule"
        await asyncio.sleep(0.35)
        await timed_get(session, url)
        assert modes[-1] == "redis", "the breaker probed, found Redis back, and closed"
    gc.unfreeze()


async def test_redis_killed_then_back_resumes_shared_counting(
    edge: GatewayFiles, start_backend: StartBackend, stoppable_redis: RedisServer
) -> None:
    gateway = await start(
        edge, start_backend, stoppable_redis, {"limit": 2, "period": "1h"}, breaker={"failures": 1, "open_for": "100ms"}
    )
    modes = capture_modes(gateway)
    url = f"{edge.url}/x"
    async with aiohttp.ClientSession() as session:
        assert (await timed_get(session, url))[0] == 200
        await stoppable_redis.astop()
        local = [await timed_get(session, url) for _ in range(3)]
        assert [r[0] for r in local] == [200, 200, 429], "the local fallback starts its own count of the same rule"
        assert all(r[1] < 0.1 for r in local)
        await stoppable_redis.astart()
        await asyncio.sleep(0.15)
        back = [await timed_get(session, url) for _ in range(3)]
    assert [r[0] for r in back] == [200, 200, 429], "the restarted (empty) Redis counts again"
    assert modes == ["redis", "degraded", "degraded", "redis", "redis"]
    metrics = {(m["result"], m["mode"]): m["count"] for m in gateway.quota.metrics.snapshot()}
    assert metrics[("allowed", "degraded")] == 2 and metrics[("denied", "degraded")] == 1


async def test_unreachable_store_fails_closed_or_open_per_rule(edge: GatewayFiles, start_backend: StartBackend) -> None:
    backend = await start_backend(ok_app())
    closed_port = RedisServer(edge.folder / "none").port
    rules = [
        {
            "name": "strict",
            "key": "client_ip",
            "limit": 10,
            "period": "1h",
            "on_store_error": "deny",
            "match": {"routes": ["strict"]},
        },
        {
            "name": "lenient",
            "key": "client_ip",
            "limit": 1,
            "period": "1h",
            "on_store_error": "allow",
            "match": {"routes": ["lenient"]},
        },
    ]
    routes = [
        {"name": "strict", "match": {"prefix": "/strict"}, "upstream": backend},
        {"name": "lenient", "match": {"prefix": "/lenient"}, "upstream": backend},
    ]
    await edge.start({"routes": routes}, quota={"store": f"redis://127.0.0.1:{closed_port}/0", "rules": rules})
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{edge.url}/strict") as response:
            body = await response.json()
            assert (response.status, response.headers["Retry-After"]) == (503, "1")
            assert body["error"]["status"] == "UNAVAILABLE" and "strict" in body["error"]["message"]
        for _ in range(3):
            async with session.get(f"{edge.url}/lenient") as response:
                assert response.status == 200 and "RateLimit-Limit" not in response.headers
