"""`edge serve` as a real process: SIGHUP reloads, SIGTERM drains in-flight calls and flushes audit."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web

from tests.conftest import StartBackend
from tests.net import free_port, wait_listening


async def start_edge(tmp_path: Path, backend: str) -> tuple[asyncio.subprocess.Process, int]:
    port, admin = free_port(), free_port()
    (tmp_path / "routes.yaml").write_text(yaml.safe_dump({"routes": [{"match": {"prefix": "/"}, "upstream": backend}]}))
    (tmp_path / "edge.yaml").write_text(
        yaml.safe_dump(
            {
                "listeners": {
                    "http": {"host": "127.0.0.1", "port": port},
                    "admin": {"host": "127.0.0.1", "port": admin},
                },
                "audit": {"sinks": [{"type": "file", "path": "audit.jsonl"}]},
                "server": {"drain_timeout": "5s", "watch_interval": "10s"},
            }
        )
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge", "serve", "-c", str(tmp_path / "edge.yaml"), stderr=asyncio.subprocess.PIPE
    )
    await wait_listening(port)
    return process, port


async def test_sigterm_lets_in_flight_calls_finish(tmp_path: Path, start_backend: StartBackend) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.0)
        return web.json_response({"done": True})

    app = web.Application()
    app.router.add_get("/slow", slow)
    process, port = await start_edge(tmp_path, await start_backend(app))
    try:
        async with aiohttp.ClientSession() as session:
            in_flight = asyncio.create_task(session.get(f"http://127.0.0.1:{port}/slow"))
            await asyncio.sleep(0.3)
            process.send_signal(signal.SIGTERM)
            response = await asyncio.wait_for(in_flight, 5)
            assert response.status == 200 and await response.json() == {"done": True}
            response.release()
        await asyncio.sleep(0.2)
        refused = False
        try:
            await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            refused = True
        assert refused, "the listener still accepts after SIGTERM"
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(r["path"], r["status"]) for r in records] == [("/slow", 200)]
    assert process.stderr is not None
    said = (await asyncio.wait_for(process.stderr.read(), 5)).decode()
    compiled = os.environ.get("EDGE_COMPILE") != "0"
    assert ("modules compiled with mypyc" if compiled else "hot path: plain Python") in said


async def test_sighup_reloads_routes(tmp_path: Path, start_backend: StartBackend) -> None:
    async def where(request: web.Request) -> web.Response:
        return web.json_response({"path": request.path})

    app = web.Application()
    app.router.add_get("/{tail:.*}", where)
    process, port = await start_edge(tmp_path, await start_backend(app))
    try:
        backend = yaml.safe_load((tmp_path / "routes.yaml").read_text())["routes"][0]["upstream"]
        (tmp_path / "routes.yaml").write_text(
            yaml.safe_dump({"routes": [{"match": {"prefix": "/"}, "upstream": backend, "rewrite": "/moved"}]})
        )
        process.send_signal(signal.SIGHUP)
        async with aiohttp.ClientSession() as session, asyncio.timeout(5):
            while True:
                async with session.get(f"http://127.0.0.1:{port}/a") as response:
                    if (await response.json())["path"] == "/moved/a":
                        break
                await asyncio.sleep(0.05)
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0


async def test_serve_with_bad_config_exits_1_listing_problems(tmp_path: Path) -> None:
    (tmp_path / "edge.yaml").write_text("listeners: {http: {port: nope}}\nbogus: 1\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge", "serve", "-c", str(tmp_path / "edge.yaml"), stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 1
    text = stderr.decode()
    assert "edge.yaml: listeners.http.port:" in text and "edge.yaml: bogus: unknown key" in text
    assert "Traceback" not in text
