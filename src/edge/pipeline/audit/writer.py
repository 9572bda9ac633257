"""The writer's side: seal records into the chain, sign checkpoints, hand entries to each sink.

`ChainWriter` is only ever called from one place, one batch at a time (the
gateway's sealing process, or the audit thread when it is given directly),
so sealing order is queue order and needs no lock. It continues the
chain where the sinks and spools left it (the newest head any of them
holds), adds a signed checkpoint every `every` records and every `interval`
seconds even when idle, and turns whatever could not be delivered or
spooled into a `loss` record, itself chained, naming the sink and the range.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from edge.pipeline.audit.chain import Chain, Entry
from edge.pipeline.audit.checkpoint import CHECKPOINT, Signer
from edge.pipeline.audit.delivery import Delivery
from edge.pipeline.audit.record import CallRecord, finish, utc_text
from edge.pipeline.audit.sinks.file import FileSink
from edge.pipeline.audit.tally import CallTally

log = logging.getLogger("edge.audit")

MARKER_ROUNDS = 3


class ChainWriter:
    def __init__(
        self,
        instance: str,
        deliveries: Sequence[Delivery],
        signer: Signer | None = None,
        every: int = 1000,
        interval: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.instance = instance
        self.deliveries = tuple(deliveries)
        self.signer = signer
        self.every = every
        self.interval = interval
        self.written = 0
        self.tally = CallTally()  # calls by route and status, for metrics: counted here, off the event loop
        self.counts_calls = True  # False in the sealing process: the gateway counts before the hand-off
        self.chain = Chain()
        self._clock = clock
        self._since_checkpoint = 0
        self._checkpoint_at = clock()

    @property
    def accepting(self) -> bool:
        return all(delivery.accepting for delivery in self.deliveries)

    def open(self) -> None:
        """Find where this instance's chain ends, and record a crash that tore its last line."""
        heads = [head for delivery in self.deliveries for head in delivery.open()]
        newest = max(heads, key=lambda head: head.seq, default=None)
        self.chain = Chain(newest)
        self._checkpoint_at = self._clock()
        if newest is not None:
            log.info("audit chain of %s resumes after seq %d", self.instance, newest.seq)
        torn = [
            {"sink": d.sink.name, "file": d.sink.torn.file, "offset": d.sink.torn.offset, "bytes": d.sink.torn.length}
            for d in self.deliveries
            if isinstance(d.sink, FileSink) and d.sink.torn is not None
        ]
        if torn:
            now = self._clock()
            self._deliver([self._event({"kind": "start", "torn": torn}, now)], now)

    def write(self, batch: list[CallRecord], unsequenced_lost: int = 0) -> None:
        """Seal a batch from the queue (possibly empty: a tick) and deliver it."""
        now = self._clock()
        if self.counts_calls:
            self.tally.count(batch)
        entries: list[Entry] = []
        for record in batch:
            try:
                entries.append(self.chain.seal(finish(record)))
            except (TypeError, ValueError, KeyError):
                log.exception("audit record cannot be sealed; counted as lost")
                unsequenced_lost += 1
                continue
            self._since_checkpoint += 1
            if self.signer is not None and self._since_checkpoint >= self.every:
                entries.append(self._checkpoint(now))
        if unsequenced_lost:
            loss = {"kind": "loss", "sink": None, "count": unsequenced_lost, "reason": "not queued or not sealable"}
            entries.append(self._event(loss, now))
        if self.signer is not None and now - self._checkpoint_at >= self.interval:
            entries.append(self._checkpoint(now))
        self.written += len(batch)
        self._deliver(entries, now)
        losses = [loss for delivery in self.deliveries for loss in delivery.tick(now)]
        if losses:
            self._deliver([self._event(loss, now) for loss in losses], now, markers=True)

    def _deliver(self, entries: list[Entry], now: float, markers: bool = False) -> None:
        """Send entries, then the loss records they caused; loss records go past a full spool's bound."""
        for attempt in range(MARKER_ROUNDS + 1):
            losses = [loss for d in self.deliveries for loss in d.send(entries, now, force=markers or attempt > 0)]
            if not losses:
                return
            if attempt == MARKER_ROUNDS:
                for loss in losses:
                    log.error("audit loss of %d records at sink %s not declared yet", loss["count"], loss["sink"])
                return
            entries = [self._event(loss, now) for loss in losses]

    def _event(self, record: dict[str, Any], now: float) -> Entry:
        self._since_checkpoint += 1
        return self.chain.seal({**record, "instance": self.instance, "time": utc_text(now)})

    def _checkpoint(self, now: float) -> Entry:
        assert self.signer is not None
        record = {
            "kind": CHECKPOINT,
            "instance": self.instance,
            "time": utc_text(now),
            "key": self.signer.key_id,
            "records": self._since_checkpoint,
        }
        self._since_checkpoint = 0
        self._checkpoint_at = now
        return self.chain.seal(record, self.signer.sign)

    def close(self) -> None:
        """A last checkpoint over everything written, then close every sink."""
        now = self._clock()
        losses = [loss for delivery in self.deliveries for loss in delivery.pending_losses()]
        if losses:
            self._deliver([self._event(loss, now) for loss in losses], now, markers=True)
        if self.signer is not None and self._since_checkpoint:
            self._deliver([self._checkpoint(now)], now)
        for delivery in self.deliveries:
            delivery.close(now)

    def stats(self) -> dict[str, Any]:
        return {
            "seq": self.chain.seq,
            "written": self.written,
            "sinks": {
                d.sink.name: {
                    "down": d.down,
                    "spooled_bytes": d.spool.size if d.spool is not None else 0,
                    "dropped": d.dropped,
                    "accepting": d.accepting,
                }
                for d in self.deliveries
            },
        }
