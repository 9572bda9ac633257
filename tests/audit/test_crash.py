"""`edge serve` as a real process under load: SIGKILL leaves a verifiable trail, SIGTERM flushes it all.

After kill -9 the files must verify as far as they were written, a torn last
line must be reported (a kill can cut a write short; when this one did not,
the test cuts the last line itself, as such a kill would have), and a
restarted gateway must continue the same chain after setting the torn file
aside.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web

from edge.cli import main
from edge.pipeline.audit.checkpoint import load_public_key
from edge.pipeline.audit.verify import verify_files
from tests.audit.conftest import Keys
from tests.conftest import StartBackend
from tests.net import free_port, wait_listening


def audit_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("audit*.jsonl"))


def write_config(folder: Path, backend: str, keys: Keys) -> int:
    port = free_port()
    (folder / "routes.yaml").write_text(yaml.safe_dump({"routes": [{"match": {"prefix": "/"}, "upstream": backend}]}))
    (folder / "edge.yaml").write_text(
        yaml.safe_dump(
            {
                "listeners": {"http": {"host": "127.0.0.1", "port": port}, "admin": None},
                "audit": {
                    "sinks": [{"type": "file", "path": "audit.jsonl", "fsync": "interval", "fsync_interval": "200ms"}],
                    "signing_key": str(keys.private),
                    "checkpoints": {"every": 100, "interval": "1s"},
                },
                "server": {"drain_timeout": "5s", "watch_interval": "10s", "instance_id": "gw-crash"},
            }
        )
    )
    return port


async def serve(folder: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge", "--log-level", "warning", "serve", "-c", str(folder / "edge.yaml"),
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def load(port: int, stop: asyncio.Event) -> int:
    done = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done
        while not stop.is_set():
            try:
                async with session.get(f"http://127.0.0.1:{port}/v1/x") as response:
                    await response.read()
                    done += response.status == 200
            except aiohttp.ClientError:
                return

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*[worker(session) for _ in range(8)])
    return done


@pytest.fixture
async def backend(start_backend: StartBackend) -> str:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/{tail:.*}", ok)
    return await start_backend(app)


async def test_kill_9_under_load_then_restart(
    tmp_path: Path, backend: str, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    port = write_config(tmp_path, backend, keys)
    process = await serve(tmp_path)
    try:
        await wait_listening(port)
        stop = asyncio.Event()
        traffic = asyncio.create_task(load(port, stop))
        await asyncio.sleep(1.5)
        process.kill()
        await asyncio.wait_for(process.wait(), 10)
        stop.set()
        await asyncio.wait_for(traffic, 10)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    audit = tmp_path / "audit.jsonl"
    data = audit.read_bytes()
    assert data.count(b"\n") > 50
    if data.endswith(b"\n"):
        last = data.splitlines()[-1]
        audit.write_bytes(data[: -len(last) // 2])
    assert main(["audit", "verify", str(audit), "--key", str(keys.public)]) == 0
    out = capsys.readouterr().out
    assert "torn last line" in out and "OK: the chain is intact" in out
    written = verify_files([audit]).chains["gw-crash"].seq

    process = await serve(tmp_path)
    try:
        await wait_listening(port)
        async with aiohttp.ClientSession() as session:
            for _ in range(5):
                async with session.get(f"http://127.0.0.1:{port}/v1/after") as response:
                    assert response.status == 200
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    files = audit_files(tmp_path)
    assert len(files) == 2
    report = verify_files(files, load_public_key(keys.public))
    assert report.ok, report.render()
    start, *after = [json.loads(line) for line in audit.read_text().splitlines()]
    assert start["kind"] == "start" and start["seq"] == written + 1 and start["torn"][0]["file"] == files[0].name
    assert [r["path"] for r in after if r["kind"] == "call"] == ["/v1/after"] * 5
    assert report.chains["gw-crash"].signed_through == report.chains["gw-crash"].seq


async def test_sigterm_under_load_flushes_every_record(tmp_path: Path, backend: str, keys: Keys) -> None:
    port = write_config(tmp_path, backend, keys)
    process = await serve(tmp_path)
    try:
        await wait_listening(port)
        stop = asyncio.Event()
        traffic = asyncio.create_task(load(port, stop))
        await asyncio.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 15) == 0
        stop.set()
        answered = await asyncio.wait_for(traffic, 10)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert answered > 50
    assert sum(r["kind"] == "call" and r["status"] == 200 for r in records) >= answered
    report = verify_files([tmp_path / "audit.jsonl"], load_public_key(keys.public))
    assert report.ok and report.warnings == [], report.render()
