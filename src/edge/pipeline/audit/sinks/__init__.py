"""Where sealed records go: one small class per destination, all called from the one writer.

A sink writes entries in order and raises `SinkDown` when it cannot (disk
full, Redis gone); the writer then spools for it. `open` says where the
chain the sink holds ends, so a restarted gateway continues it, and `write`
skips entries it already holds, so replaying a spool never writes one twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from edge.pipeline.audit.chain import Entry, Head


class SinkDown(Exception):
    """The sink cannot take records now; they are kept for it and tried again later."""


class Sink(Protocol):
    name: str
    durable: bool  # worth spooling for: a sink that can be down and come back

    def open(self) -> Head | None: ...
    def write(self, entries: Sequence[Entry]) -> None: ...
    def tick(self, now: float) -> None: ...
    def close(self) -> None: ...
