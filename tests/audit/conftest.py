"""Audit test fixtures: signing keys, a writer over real sinks, a Redis that keeps what it acknowledged.

The shared private Redis (tests/redis_server.py) runs without persistence, so
a killed server comes back empty; the Redis-outage tests need it to come back
with everything it acknowledged, as a production Redis does, so they use
`durable_redis`: the same server with an append-only file fsynced per write.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.config.audit import Spool as SpoolConfig
from edge.pipeline.audit.checkpoint import Signer
from edge.pipeline.audit.delivery import Delivery
from edge.pipeline.audit.record import RECORD_FIELDS, CallRecord
from edge.pipeline.audit.sinks import Sink
from edge.pipeline.audit.sinks.file import FileSink
from edge.pipeline.audit.spool import Spool
from edge.pipeline.audit.writer import ChainWriter
from tests.redis_server import REDIS_SERVER, RedisServer, ping


@dataclass(frozen=True)
class Keys:
    private: Path
    public: Path
    key: Ed25519PrivateKey


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    key = Ed25519PrivateKey.generate()
    private = tmp_path / "audit.key"
    public = tmp_path / "audit.pub"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return Keys(private, public, key)


class Clock:
    """A clock tests move by hand, for rotation ages, fsync intervals and idle checkpoints."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def call_record(n: int, **fields: Any) -> CallRecord:
    """What `build_record` queues, for writer-level tests that need no gateway."""
    values: dict[str, Any] = {
        "time": 1_700_000_000.0 + n,
        "instance": "gw-1",
        "request_id": f"req-{n}",
        "ingress": "http",
        "path": f"/v1/things/{n}",
        "decisions": {"operation": "things.get"},
        "status": 200,
        "grpc_status": "OK",
        "latency_ms": 1.5,
        **fields,
    }
    return tuple(values.get(name) for name in RECORD_FIELDS)


def writer_over(
    sinks: list[Sink],
    spool_root: Path | None = None,
    signer: Signer | None = None,
    every: int = 10,
    clock: Clock | None = None,
    **policy: Any,
) -> ChainWriter:
    config = SpoolConfig(**{"path": spool_root or Path("unused"), **policy})
    deliveries = [
        Delivery(sink, Spool(config.path / sink.name) if spool_root and sink.durable else None, config)
        for sink in sinks
    ]
    return ChainWriter("gw-1", deliveries, signer, every=every, interval=3600.0, clock=clock or Clock())


def write_chain(path: Path, count: int, signer: Signer | None = None, every: int = 10, **sink: Any) -> FileSink:
    """A closed audit file of `count` call records (plus checkpoints when signed)."""
    file_sink = FileSink(path, **{"max_age": 0.0, **sink})
    writer = writer_over([file_sink], signer=signer, every=every)
    writer.open()
    for start in range(0, count, 7):
        writer.write([call_record(n) for n in range(start, min(count, start + 7))])
    writer.close()
    return file_sink


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait for `condition`, checking every 20 ms, failing the test after `seconds`."""
    async with asyncio.timeout(seconds):
        while True:
            if condition():
                return
            await asyncio.sleep(0.02)


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in read_lines(path)]


class DurableRedis(RedisServer):
    """The private test Redis with `appendfsync always`: a SIGKILL loses nothing it acknowledged."""

    def start(self, timeout: float = 5.0) -> None:
        if self.running:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [
                *(REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder)),
                *("--save", "", "--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "no"),
                *("--logfile", str(self.folder / "redis.log")),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not ping("127.0.0.1", self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer PING on port {self.port} within {timeout}s")
            time.sleep(0.02)


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[DurableRedis]:
    server = DurableRedis(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()
