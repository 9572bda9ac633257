"""Audit: one JSON Lines record per call, written off the event loop.

`AuditLog.record` runs on the hot path, so it only builds a small dict and
puts it on a bounded queue; one writer task owned by the server drains the
queue in batches and hands each batch to a thread that encodes and writes it.
Records never hold tokens, bodies, query strings or raw headers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from edge.call import Call, Reply

log = logging.getLogger("edge.audit")


class Sink(Protocol):
    def write(self, lines: Sequence[str]) -> None: ...
    def close(self) -> None: ...


class FileSink:
    """Appends JSON lines to a file; the write and flush happen in a worker thread."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def write(self, lines: Sequence[str]) -> None:
        self._file.write("".join(lines))
        self._file.flush()

    def close(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


class StdoutSink:
    def write(self, lines: Sequence[str]) -> None:
        sys.stdout.write("".join(lines))
        sys.stdout.flush()

    def close(self) -> None:
        sys.stdout.flush()


def build_record(call: Call, reply: Reply | None, instance: str) -> dict[str, Any]:
    route = call.route
    principal = call.principal
    record: dict[str, Any] = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "instance": instance,
        "request_id": call.request_id,
        "ingress": call.ingress,
        "client_ip": call.peer.address,
        "method": call.method,
        "path": call.path,
        "route": route.name if route else None,
        "operation": call.decisions.get("operation"),
        "upstream": route.upstream if route else None,
        "endpoint": call.endpoint,
        "status": reply.http_status if reply else 500,
        "grpc_status": reply.status.name if reply else "INTERNAL",
        "latency_ms": round((time.monotonic() - call.started) * 1000, 3),
        "bytes_in": call.bytes_in,
        "bytes_out": call.bytes_out,
    }
    if principal is not None:
        record["principal"] = {"subject": principal.subject, "roles": list(principal.roles), "method": principal.method}
    if reply is not None and reply.denial is not None:
        record["reason"] = reply.denial.message
    return record


class AuditLog:
    """A bounded queue of records and the one task that writes them to every sink."""

    def __init__(self, sinks: Sequence[Sink], queue_size: int = 65536, instance: str = "") -> None:
        self.sinks = tuple(sinks)
        self.instance = instance
        self.dropped = 0
        self.written = 0
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(queue_size)
        self._task: asyncio.Task[None] | None = None

    def record(self, call: Call, reply: Reply | None) -> None:
        if not self.sinks:
            return
        try:
            self._queue.put_nowait(build_record(call, reply, self.instance))
        except asyncio.QueueFull:
            self.dropped += 1

    def start(self) -> None:
        if self.sinks and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="audit-writer")

    async def _run(self) -> None:
        """Write batches until the `None` that `aclose` queues after the last record."""
        running = True
        while running:
            batch: list[dict[str, Any]] = []
            item = await self._queue.get()
            while item is not None:
                batch.append(item)
                if self._queue.empty() or len(batch) >= 4096:
                    break
                item = self._queue.get_nowait()
            running = item is not None
            if batch:
                await self._write(batch)

    async def _write(self, batch: list[dict[str, Any]]) -> None:
        lines = await asyncio.to_thread(_encode, batch)
        for sink in self.sinks:
            try:
                await asyncio.to_thread(sink.write, lines)
            except OSError:
                log.exception("audit sink %s failed; %d records not written to it", type(sink).__name__, len(lines))
        self.written += len(batch)

    async def aclose(self) -> None:
        """Write what is queued, stop the writer, close the sinks."""
        if self._task is not None:
            await self._queue.put(None)
            await self._task
            self._task = None
        for sink in self.sinks:
            await asyncio.to_thread(sink.close)


def _encode(batch: list[dict[str, Any]]) -> list[str]:
    return [json.dumps(r, separators=(",", ":"), ensure_ascii=False) + "\n" for r in batch]
