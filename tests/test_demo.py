"""`edge demo` and `edge serve` with no -c, as the processes a person starts: what they print and serve."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from edge.pipeline.audit.checkpoint import load_public_key
from edge.pipeline.audit.verify import verify_files
from tests.net import wait_listening

JWT = re.compile(r"eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+")
SERVING = re.compile(r"edge is serving on (http://127\.0\.0\.1:\d+) \(admin (http://127\.0\.0\.1:\d+);")


async def read_until(stream: asyncio.StreamReader, marker: str, seconds: float = 30.0) -> list[str]:
    lines: list[str] = []
    async with asyncio.timeout(seconds):
        while not lines or marker not in lines[-1]:
            line = await stream.readline()
            if not line:
                raise AssertionError("the process ended early:\n" + "".join(lines))
            lines.append(line.decode())
    return lines


async def stop(process: asyncio.subprocess.Process) -> int:
    process.send_signal(signal.SIGINT)
    return await asyncio.wait_for(process.wait(), 15)


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, list[str]]]:
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "edge", "demo", "--port", "0", "--admin-port", "0", "--backend-port", "0"),
        *("--dir", str(tmp_path / "demo")),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        yield process, await read_until(process.stdout, "Ctrl-C to stop")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_demo_shows_200_then_429_then_401_and_keeps_serving(
    demo: tuple[asyncio.subprocess.Process, list[str]], tmp_path: Path
) -> None:
    process, lines = demo
    text = "".join(lines)
    assert "subject=veteran roles=Veteran" in text
    statuses = [line.split()[1] for line in lines if line.startswith("-> ")]
    assert statuses == ["200", "429", "401"], text
    replies = [line for line in lines if line.startswith("-> ")]
    assert '"status":"QUEUED"' in replies[0]
    assert "Retry-After: " in replies[1] and "WWW-Authenticate: Bearer" in replies[2]
    assert len(JWT.findall(text)) == 1, "a token is printed once, for the person to copy into curl"
    found = SERVING.search(text)
    assert found is not None, text
    url, admin = found.groups()
    token = JWT.findall(text)[0]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        refill = f"{url}/v1/prescriptions/refill?rx=RX-7"
        async with session.get(refill, headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 200, "the printed token is another veteran's, with a refill left"
        async with session.get(refill, headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 429 and int(response.headers["Retry-After"]) > 29 * 86400
        async with session.get(f"{admin}/metrics") as response:
            assert (
                'edge_quota_decisions_total{mode="memory",result="denied",rule="veteran-refills"} 2.0'
                in await response.text()
            )
    assert await stop(process) == 0
    assert process.stderr is not None
    logs = (await process.stderr.read()).decode()
    assert not JWT.search(logs), "no token in the logs"
    folder = tmp_path / "demo"
    report = verify_files([folder / "audit.jsonl"], load_public_key(folder / "audit.pub"))
    assert report.ok and not report.warnings, report.render()
    assert sum(chain.records for chain in report.chains.values()) >= 5


async def test_serve_without_config_starts_the_plain_example(tmp_path: Path) -> None:
    env = {**os.environ, "EDGE_HTTP_PORT": "0", "EDGE_ADMIN_PORT": "0"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge",
        "serve",
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        env=env,
        cwd=tmp_path,
    )
    assert process.stderr is not None
    try:
        logs = "".join(await read_until(process.stderr, "serving; ports"))
        ports = re.search(r"'http': (\d+), 'admin': (\d+)", logs)
        assert ports is not None, logs
        await wait_listening(int(ports.group(1)))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            async with session.get(f"http://127.0.0.1:{ports.group(2)}/readyz") as response:
                assert response.status == 200 and (await response.json())["routes"] == 3
            async with session.get(f"http://127.0.0.1:{ports.group(1)}/v1/prescriptions/refill?rx=1") as response:
                assert response.status != 401, "the plain example asks for no token"
        assert await stop(process) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
