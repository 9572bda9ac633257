"""The event loop's side of the audit trail: a bounded queue and the one task that empties it.

`AuditLog.record` is on the hot path of every call: it builds a flat tuple
(`record.py`) and appends it to a list, nothing else. The writer task, owned by the server,
takes the whole list at once and hands it to the one `ChainWriter`, where
records are sealed, signed, encoded and written, so the loop never waits on
hashing, disks or Redis, and the one writer keeps the chain in queue order.
On Linux a gateway runs the writer in a sealing process (`sealer.py`), off
this process's GIL; a writer given directly (tests, tools) runs in a thread.
Hand-offs are at least `coalesce` seconds apart: a record queued while the
loop is idle goes at once, but under load the records of a few milliseconds
go in one hand-off, since each one wakes the writer and then the loop again
(with a thread, beside grpc's own threads, a hand-off per call cost the gRPC
door ~270 us of CPU per call). With nothing queued the task still wakes
every tick so idle checkpoints, fsyncs and spool retries happen. A full
queue drops the record and counts it; the writer then chains a loss marker
with the count.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import Any

from edge.call import Call, Reply
from edge.config.audit import Audit, sink_names
from edge.pipeline.audit.checkpoint import Signer
from edge.pipeline.audit.delivery import Delivery
from edge.pipeline.audit.record import CallRecord, build_record
from edge.pipeline.audit.sealer import SealerDied, SealerProcess, fork_is_safe
from edge.pipeline.audit.sinks import Sink
from edge.pipeline.audit.sinks.file import FileSink
from edge.pipeline.audit.sinks.redis import RedisSink
from edge.pipeline.audit.sinks.stdout import StdoutSink
from edge.pipeline.audit.spool import Spool
from edge.pipeline.audit.writer import ChainWriter

log = logging.getLogger("edge.audit")

COALESCE = 0.005


class AuditLog:
    def __init__(
        self,
        writer: ChainWriter | None,
        queue_size: int = 65536,
        instance: str = "",
        tick: float = 0.5,
        coalesce: float = COALESCE,
        process: bool = False,
    ) -> None:
        self.instance = instance
        self.writer = writer
        self.lost = 0
        self._limit = queue_size
        self._tick = tick
        self._coalesce = coalesce
        self._pending: list[CallRecord] = []
        self._unsequenced = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._sealer = SealerProcess(writer) if writer is not None and process else None

    @classmethod
    def from_config(cls, audit: Audit, instance: str) -> AuditLog:
        if not audit.sinks:
            return cls(None, audit.queue_size, instance)
        deliveries = []
        for name, spec in zip(sink_names(audit.sinks), audit.sinks, strict=True):
            sink: Sink
            if spec.type == "file":
                sink = FileSink(spec.path, name, spec.max_size, spec.max_age, spec.fsync, spec.fsync_interval)
            elif spec.type == "redis":
                sink = RedisSink(spec, instance, name)
            else:
                sink = StdoutSink(name)
            spool = Spool(audit.spool.path / instance.replace("/", "_") / name) if sink.durable else None
            deliveries.append(Delivery(sink, spool, audit.spool))
        signer = Signer.from_file(audit.signing_key) if audit.signing_key else None
        if signer is None:
            log.warning("audit.signing_key is not set: records are chained, checkpoints are not written")
        checkpoints = audit.checkpoints
        writer = ChainWriter(instance, deliveries, signer, checkpoints.every, checkpoints.interval)
        fsyncs = [s.fsync_interval for s in audit.sinks if s.type == "file" and s.fsync == "interval"]
        tick = min([0.5, audit.spool.retry, checkpoints.interval, *fsyncs]) / 2
        return cls(writer, audit.queue_size, instance, tick, process=sys.platform == "linux")

    def record(self, call: Call, reply: Reply | None) -> None:
        """Queue the call's record; never blocks, never raises."""
        if self.writer is None:
            return
        if len(self._pending) >= self._limit:
            self._unsequenced += 1
            self.lost += 1
            return
        self._pending.append(build_record(call, reply, self.instance))
        self._wake.set()

    def accepting(self) -> bool:
        """False while a record might not be kept: the queue is full, or a spool is at its bound (`reject`)."""
        if self.writer is None:
            return True
        writer_accepts = self._sealer.accepting if self._sealer is not None else self.writer.accepting
        return writer_accepts and len(self._pending) < self._limit

    async def start(self) -> None:
        if self.writer is None or self._task is not None:
            return
        loop = asyncio.get_running_loop()
        if self._sealer is not None and not fork_is_safe():
            log.info("audit writer runs in a thread: this process has threads already, which a fork would not carry")
            self._sealer = None
        if self._sealer is not None:
            await self._sealer.open()
        else:
            await self._start_thread()
        self._task = loop.create_task(self._run(), name="audit-writer")

    async def _run(self) -> None:
        assert self.writer is not None
        loop = asyncio.get_running_loop()
        handed_at = -self._coalesce
        failures = 0
        while True:
            if not self._pending and not self._closing:
                self._wake.clear()
                with suppress(TimeoutError):
                    async with asyncio.timeout(self._tick):
                        await self._wake.wait()
            wait = handed_at + self._coalesce - loop.time()
            if wait > 0 and self._pending and not self._closing:
                await asyncio.sleep(wait)
            batch, self._pending = self._pending, []
            if batch:
                handed_at = loop.time()
            lost, self._unsequenced = self._unsequenced, 0
            try:
                await self._hand_off(batch, lost)
            except Exception:
                log.exception("audit writer failed on a batch of %d records", len(batch))
                self._unsequenced += len(batch) + lost
                self.lost += len(batch)
                failures += 1
            else:
                failures = 0
            if self._closing and not self._pending and (not self._unsequenced or failures > 1):
                return  # a batch lost at shutdown gets one more hand-off, to declare it

    async def _hand_off(self, batch: list[CallRecord], lost: int) -> None:
        assert self.writer is not None
        if self._sealer is None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self.writer.write, batch, lost)
            return
        try:
            await self._sealer.write(batch, lost)
        except SealerDied:
            log.error("audit sealing process ended; the writer goes on in a thread")
            self.writer.written = self._sealer.stats()["written"]
            self._sealer = None
            await self._start_thread()
            raise

    async def _start_thread(self) -> None:
        assert self.writer is not None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="audit-writer")
        await asyncio.get_running_loop().run_in_executor(self._thread, self.writer.open)

    async def aclose(self) -> None:
        """Write everything queued, a last checkpoint, and close the sinks (SIGTERM comes through here)."""
        if self._task is None or self.writer is None:
            return
        self._closing = True
        self._wake.set()
        await self._task
        self._task = None
        if self._sealer is not None:
            await self._sealer.close()
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self.writer.close)
        assert self._thread is not None
        self._thread.shutdown()

    def _writer_stats(self) -> dict[str, Any]:
        if self._sealer is not None:
            return self._sealer.stats()
        return self.writer.stats() if self.writer is not None else {}

    def stats(self) -> dict[str, Any]:
        """Counters for metrics: queued and lost records, and each sink's state."""
        sinks = self._writer_stats()
        return {"queued": len(self._pending), "lost_queue_full": self.lost, **sinks}
