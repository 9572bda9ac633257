"""Two gateway processes sharing one Redis count exactly: 500 concurrent calls, a limit of 100, 100 pass.

The rule fails closed (`on_store_error: deny`), so a store failure shows up
as a 503 rather than as a count that is silently local. The store timeout is
raised to 1 s here: this test is about exact shared counting, and on the
2-core test machine the burst (two gateways, the client, the backend and
Redis) keeps each gateway's event loop busier than 50 ms. The 50 ms bound is
what tests/quota/test_gateway_redis.py checks, with Redis hung.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web

from tests.conftest import StartBackend
from tests.net import free_port, wait_listening
from tests.redis_server import RedisServer

BURST_TIMEOUT = "1s"


def write_config(folder: Path, name: str, port: int, backend: str, redis_url: str, prefix: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "routes.yaml").write_text(
        yaml.safe_dump(
            {"routes": [{"name": "refill", "match": {"prefix": "/v1/prescriptions/refill"}, "upstream": backend}]}
        )
    )
    config = {
        "listeners": {"http": {"host": "127.0.0.1", "port": port}, "admin": None},
        "routes_file": "routes.yaml",
        "server": {"instance_id": name, "drain_timeout": "1s"},
        "quota": {
            "store": redis_url,
            "redis": {"key_prefix": prefix, "timeout": BURST_TIMEOUT},
            "rules": [
                {"name": "route-total", "key": "route", "limit": 100, "period": "1h", "on_store_error": "deny"},
            ],
        },
    }
    path = folder / "edge.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def spawn_gateway(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "edge", "--log-level", "warning", "serve", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


@pytest.fixture
async def two_gateways(
    tmp_path: Path, start_backend: StartBackend, redis_server: RedisServer
) -> AsyncIterator[list[str]]:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"status": "QUEUED"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", ok)
    backend = await start_backend(app)
    prefix = f"edge:quota-test-{os.urandom(4).hex()}"
    ports = [free_port(), free_port()]
    processes = []
    try:
        for index, port in enumerate(ports):
            config = write_config(tmp_path / f"gw{index}", f"gw{index}", port, backend, redis_server.url, prefix)
            processes.append(spawn_gateway(config, tmp_path / f"gw{index}.log"))
        await asyncio.gather(*(wait_listening(port, p) for port, p in zip(ports, processes, strict=True)))
        yield [f"http://127.0.0.1:{port}" for port in ports]
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                await asyncio.to_thread(process.wait, 10)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait, 5)


@pytest.mark.timeout(90)
async def test_500_concurrent_calls_across_two_gateways_allow_exactly_100(two_gateways: list[str]) -> None:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def get(index: int) -> int:
            url = f"{two_gateways[index % 2]}/v1/prescriptions/refill?rx=RX-{index}"
            async with session.get(url) as response:
                await response.read()
                return response.status

        statuses = Counter(await asyncio.gather(*(get(i) for i in range(500))))
    assert statuses == {200: 100, 429: 400}
