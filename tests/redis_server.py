"""A private Redis for tests: `redis-server` on a free loopback port in a temp folder.

With `EDGE_TEST_REDIS_URL` set, tests use that Redis instead (it cannot be
stopped by a test, so tests that stop Redis mid-run skip). Otherwise each
test gets its own server, with persistence off; `stop()` and `start()` let a
test kill Redis mid-run and bring it back on the same port. Every wait is
bounded; the server is killed at the end whatever happened.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.net import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def ping(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    def __init__(self, folder: Path, port: int | None = None, external_url: str | None = None) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.external_url = external_url
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.external_url or f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.external_url is not None or (self._process is not None and self._process.poll() is None)

    def start(self, timeout: float = 5.0) -> None:
        """Start redis-server on `self.port` (the same port again after `stop`) and wait for PING."""
        if self.external_url is not None or self.running:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.folder),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--logfile",
                str(self.folder / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not ping("127.0.0.1", self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                log = (
                    (self.folder / "redis.log").read_text(errors="replace")[-2000:]
                    if (self.folder / "redis.log").exists()
                    else ""
                )
                self.stop()
                raise RuntimeError(f"redis-server did not answer PING on port {self.port} within {timeout}s\n{log}")
            time.sleep(0.02)

    def stop(self, timeout: float = 5.0) -> None:
        """Kill the server (SIGKILL: a crash, not a clean shutdown) and wait until it is gone."""
        if self.external_url is not None:
            raise RuntimeError("cannot stop the external Redis at EDGE_TEST_REDIS_URL")
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)
        process.kill()
        process.wait(timeout)

    def freeze(self) -> None:
        """SIGSTOP: Redis keeps its connections but answers nothing (a hung server, not a dead one)."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    async def astart(self) -> None:
        await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    external = os.environ.get("EDGE_TEST_REDIS_URL")
    if external is None and not os.path.exists(REDIS_SERVER):
        pytest.fail("redis-server is not installed (run ./scripts/system-packages) and EDGE_TEST_REDIS_URL is not set")
    server = RedisServer(tmp_path / "redis", external_url=external)
    server.start()
    try:
        yield server
    finally:
        if external is None:
            server.stop()


@pytest.fixture
def stoppable_redis(redis_server: RedisServer) -> RedisServer:
    if redis_server.external_url is not None:
        pytest.skip("stops Redis mid-run: needs the private redis-server, not EDGE_TEST_REDIS_URL")
    return redis_server
