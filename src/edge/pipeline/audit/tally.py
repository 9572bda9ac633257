"""Calls counted by route and status, and their latency, once per audit batch.

Every call's record passes through the audit writer anyway, so counting a
batch at its hand-off costs the request path nothing: the loop only appends
the record, as before. `CallTally.count` runs once per batch, in the writer
thread, or on the loop just before a batch goes to the sealing process (whose
own copy of the tally the metrics endpoint cannot read); `snapshot` is read by
the metrics endpoint on the event loop, so both take a lock (held for a
batch, not per request). A record the queue dropped is not
counted here; `AuditLog.lost` counts those.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from edge.pipeline.audit.record import TALLIED, CallRecord

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
NO_ROUTE = ""

CallKey = tuple[str, str, int, str]  # ingress, route, HTTP status, gRPC status
LatencyKey = tuple[str, str]  # ingress, route


@dataclass(slots=True)
class Latency:
    """One route's latency histogram: counts per bucket (not cumulative; the last is +Inf) and the sum."""

    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def copy(self) -> Latency:
        return Latency(list(self.buckets), self.total)


@dataclass(slots=True)
class TallySnapshot:
    calls: dict[CallKey, int]
    latency: dict[LatencyKey, Latency]


class CallTally:
    def __init__(self) -> None:
        self._calls: Counter[CallKey] = Counter()
        self._latency: dict[LatencyKey, Latency] = {}
        self._lock = threading.Lock()

    def count(self, records: Iterable[CallRecord]) -> None:
        """Count call records as `build_record` made them (before `finish`)."""
        with self._lock:
            for ingress, route, status, grpc_status, latency_ms in map(TALLIED, records):
                route = route or NO_ROUTE
                self._calls[ingress, route, status, grpc_status] += 1
                latency = self._latency.get((ingress, route))
                if latency is None:
                    latency = self._latency[ingress, route] = Latency()
                latency.observe(latency_ms / 1000)

    def snapshot(self) -> TallySnapshot:
        with self._lock:
            return TallySnapshot(dict(self._calls), {key: value.copy() for key, value in self._latency.items()})
