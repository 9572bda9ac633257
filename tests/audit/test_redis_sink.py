"""The Redis sink: exactly once and in order, across a Redis that dies and comes back under traffic."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import redis
from aiohttp import web

from edge.config.audit import RedisSink as RedisSinkConfig
from edge.pipeline.audit.chain import Chain, line_hash
from edge.pipeline.audit.record import finish
from edge.pipeline.audit.sinks.redis import RedisSink
from edge.pipeline.audit.verify import Line, verify_files, verify_lines
from tests.audit.conftest import DurableRedis, call_record, until
from tests.conftest import GatewayFiles, StartBackend


def sealed(count: int) -> list[Any]:
    chain = Chain()
    return [chain.seal(finish(call_record(n))) for n in range(count)]


def stream_records(url: str, stream: str = "edge:audit") -> list[dict[bytes, bytes]]:
    client = redis.Redis.from_url(url)
    try:
        return [fields for _, fields in client.xrange(stream)]
    finally:
        client.close()


def test_a_batch_sent_twice_is_added_once_and_the_head_is_kept(durable_redis: DurableRedis) -> None:
    sink = RedisSink(RedisSinkConfig(type="redis", url=durable_redis.url), "gw-1")
    entries = sealed(30)
    assert sink.open() is None
    sink.write(entries[:20])
    sink.write(entries[10:30])
    sink.write(entries[:30])
    got = stream_records(durable_redis.url)
    assert [int(f[b"seq"]) for f in got] == list(range(1, 31))
    assert [f[b"record"].decode() for f in got] == [e.line for e in entries]
    assert {f[b"instance"] for f in got} == {b"gw-1"}
    head = sink.open()
    assert head is not None and (head.seq, head.hash) == (30, line_hash(entries[-1].line))
    sink.close()


def test_maxlen_trims_the_stream(durable_redis: DurableRedis) -> None:
    sink = RedisSink(RedisSinkConfig(type="redis", url=durable_redis.url, maxlen=10, approximate=False), "gw-1")
    sink.write(sealed(30))
    got = stream_records(durable_redis.url)
    assert [int(f[b"seq"]) for f in got] == list(range(21, 31))
    sink.close()


async def test_redis_killed_and_restarted_under_traffic_gets_every_record_once_in_order(
    edge: GatewayFiles, start_backend: StartBackend, durable_redis: DurableRedis
) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/{tail:.*}", ok)
    backend = await start_backend(app)
    gateway = await edge.start(
        {"routes": [{"match": {"prefix": "/"}, "upstream": backend}]},
        audit={
            "sinks": [
                {"type": "file", "path": str(edge.audit_path)},
                {"type": "redis", "url": durable_redis.url, "timeout": "250ms", "batch": 50},
            ],
            "spool": {"path": str(edge.folder / "spool"), "retry": "100ms"},
        },
    )
    stop = asyncio.Event()
    sent = 0

    async def traffic(session: aiohttp.ClientSession) -> None:
        nonlocal sent
        while not stop.is_set():
            async with session.get(f"{edge.url}/x") as response:
                assert response.status == 200
                sent += 1

    sinks = gateway.audit.stats
    async with aiohttp.ClientSession() as session, asyncio.timeout(30):
        workers = [asyncio.create_task(traffic(session)) for _ in range(3)]
        await asyncio.sleep(0.4)
        await durable_redis.astop()
        await until(lambda: sinks()["sinks"]["redis"]["down"])
        await asyncio.sleep(0.5)
        assert sinks()["sinks"]["redis"]["spooled_bytes"] > 0
        await durable_redis.astart()
        await until(lambda: not sinks()["sinks"]["redis"]["down"])
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*workers)
    await edge.stop()
    lines = edge.audit_path.read_text().splitlines()
    assert len(lines) == sent and verify_files([edge.audit_path]).ok
    got = stream_records(durable_redis.url)
    assert [int(f[b"seq"]) for f in got] == list(range(1, sent + 1))
    assert [f[b"record"].decode() for f in got] == lines
    report = verify_lines([Line(f"stream:{n}", f[b"record"].decode(), False, True) for n, f in enumerate(got, 1)])
    assert report.ok
    assert not list((edge.folder / "spool" / gateway.audit.instance / "redis").glob("*.spool"))
    assert json.loads(lines[-1])["seq"] == sent
