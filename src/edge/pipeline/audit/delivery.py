"""One sink's way out: straight to the sink while it is up, through its spool otherwise.

When a write fails the sink is marked down and every record after that goes
to its spool, in order, until a retry has drained the spool; only then do
records go straight to the sink again, so the sink always sees the chain in
order. At the spool's bound, `on_full` decides: `drop_oldest` makes room by
dropping the oldest spooled records, `reject` keeps the spool and drops the
newest. Either way the loss is declared by a `loss` record the writer chains
(sink, first and last seq, count, hash of the last lost record), so `verify`
can tell a declared loss from a deletion. Consecutive losses make one run:
with `drop_oldest` each new drop re-declares the whole run (an earlier
declaration may itself have been dropped since); with `reject` the run is
declared once the sink takes a record again. With `reject`, `accepting`
turns false at 90% of the bound, so regulated routes are refused while the
records of calls already in flight still fit.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from edge.config.audit import Spool as SpoolConfig
from edge.pipeline.audit.chain import Entry, Head, line_hash
from edge.pipeline.audit.sinks import Sink, SinkDown
from edge.pipeline.audit.spool import Spool

log = logging.getLogger("edge.audit")

DRAIN_BATCH = 1000
DRAIN_SECONDS = 0.25
REJECT_AT = 0.9
ACCEPT_BELOW = 0.75


@dataclass(slots=True)
class LossRun:
    """Consecutive records one sink lost."""

    first: int
    last: int
    count: int
    last_hash: str
    reason: str

    def record(self, sink: str) -> dict[str, Any]:
        return {
            "kind": "loss",
            "sink": sink,
            "from_seq": self.first,
            "to_seq": self.last,
            "count": self.count,
            "last_hash": self.last_hash,
            "reason": self.reason,
        }


class Delivery:
    def __init__(self, sink: Sink, spool: Spool | None, policy: SpoolConfig) -> None:
        self.sink = sink
        self.spool = spool
        self.policy = policy
        self.accepting = True
        self.down = False
        self.dropped = 0
        self._retry_at = 0.0
        self._run: LossRun | None = None
        self._spool_failed = False
        self._deferred = policy.on_full == "reject"

    def open(self) -> list[Head]:
        heads = [self.sink.open()]
        if self.spool is not None:
            heads.append(self.spool.open())
            self.down = not self.spool.empty
            self._update_accepting()
        return [head for head in heads if head is not None]

    def send(self, entries: list[Entry], now: float, force: bool = False) -> list[dict[str, Any]]:
        """Deliver or spool `entries`; returns the loss records to chain, if any were lost."""
        if not entries:
            return []
        if self.spool is None:
            try:
                self.sink.write(entries)
            except SinkDown as error:
                log.error("audit sink %s failed and has no spool: %s", self.sink.name, error)
                self.dropped += len(entries)
                return [
                    LossRun(
                        entries[0].seq,
                        entries[-1].seq,
                        len(entries),
                        line_hash(entries[-1].line),
                        "sink failed, no spool",
                    ).record(self.sink.name)
                ]
            return []
        if self.down and self.spool.empty and now >= self._retry_at:
            self.down = False
        if not self.down:
            try:
                self.sink.write(entries)
            except SinkDown as error:
                self._went_down(now, error)
            else:
                self._spool_failed = False
                self._update_accepting()
                return self._declare(force_eager=True)
        return self._keep(entries, force)

    def tick(self, now: float) -> list[dict[str, Any]]:
        """Retry a down sink, let the sink do its periodic work; a loss run the sink is past is declared."""
        if self.spool is not None and not self.spool.empty and now >= self._retry_at:
            self._drain(now)
        self.sink.tick(now)
        return self._declare() if self.spool is not None and self.spool.empty and not self.down else []

    def _drain(self, now: float) -> None:
        assert self.spool is not None
        until = time.monotonic() + DRAIN_SECONDS
        while not self.spool.empty and time.monotonic() < until:
            entries, position = self.spool.peek(DRAIN_BATCH)
            try:
                self.sink.write(entries)
            except SinkDown as error:
                self._went_down(now, error)
                return
            self.spool.commit(position)
        if self.spool.empty and self.down:
            self.down = False
            log.warning("audit sink %s is back; its spool is delivered", self.sink.name)
        self._update_accepting()

    def _went_down(self, now: float, error: SinkDown) -> None:
        if not self.down:
            log.error("audit sink %s is down (%s); spooling its records", self.sink.name, error)
        self.down = True
        self._retry_at = now + self.policy.retry

    def _keep(self, entries: list[Entry], force: bool) -> list[dict[str, Any]]:
        assert self.spool is not None
        out: list[dict[str, Any]] = []
        room = self.policy.max_bytes - self.spool.size
        dropped: list[Entry] = []
        if not force and _size(entries) > room:
            if self.policy.on_full == "drop_oldest":
                oldest = self.spool.drop_oldest(_size(entries) - room)
                if oldest:
                    out += self._lose(oldest, "spool full, oldest dropped")
                keep = _fitting(reversed(entries), self.policy.max_bytes - self.spool.size)
                if keep < len(entries):
                    out += self._lose(entries[: len(entries) - keep], "spool full, oldest dropped")
                entries = entries[len(entries) - keep :]
            else:
                keep = _fitting(entries, room)
                entries, dropped = entries[:keep], entries[keep:]
        if entries:
            try:
                self.spool.append(entries)
            except OSError as error:
                log.error("audit spool for %s cannot be written: %s", self.sink.name, error)
                self._spool_failed = True
                dropped = entries + dropped
            else:
                self._spool_failed = False
                out += self._declare()
        if dropped:
            out += self._lose(dropped, "spool full, newest dropped" if not self._spool_failed else "spool write failed")
        self._update_accepting()
        return out

    def _lose(self, entries: list[Entry], reason: str) -> list[dict[str, Any]]:
        self.dropped += len(entries)
        out: list[dict[str, Any]] = []
        run = self._run
        if run is not None and run.last + 1 == entries[0].seq:
            run.last, run.count, run.last_hash = entries[-1].seq, run.count + len(entries), line_hash(entries[-1].line)
        else:
            if run is not None and self._deferred:
                out.append(run.record(self.sink.name))
            run = self._run = LossRun(
                entries[0].seq, entries[-1].seq, len(entries), line_hash(entries[-1].line), reason
            )
        if not self._deferred:
            out.append(run.record(self.sink.name))
        return out

    def _declare(self, force_eager: bool = False) -> list[dict[str, Any]]:
        """A record after the run was kept: declare a deferred run (or, once delivered, any run) and end it."""
        run = self._run
        if run is None or not (self._deferred or force_eager):
            return []
        self._run = None
        return [run.record(self.sink.name)]

    def pending_losses(self) -> list[dict[str, Any]]:
        """At shutdown: a loss run not declared yet."""
        return self._declare()

    def _update_accepting(self) -> None:
        if self.spool is None or self.policy.on_full != "reject":
            self.accepting = True
            return
        used = self.spool.size / self.policy.max_bytes
        self.accepting = not self._spool_failed and (used < ACCEPT_BELOW or (self.accepting and used < REJECT_AT))

    def close(self, now: float) -> None:
        """Give a down sink one last chance, then close; what is left stays spooled for the next run."""
        if self.spool is not None and not self.spool.empty:
            self._drain(now)
            if not self.spool.empty:
                log.warning("audit sink %s: %d bytes stay spooled for the next start", self.sink.name, self.spool.size)
        if self.spool is not None:
            self.spool.close()
        self.sink.close()


def _size(entries: list[Entry]) -> int:
    return sum(len(entry.line) + 12 for entry in entries)


def _fitting(entries: Any, room: int) -> int:
    """How many entries, taken in the given order, fit in `room` bytes."""
    count = 0
    for entry in entries:
        room -= len(entry.line) + 12
        if room < 0:
            break
        count += 1
    return count
