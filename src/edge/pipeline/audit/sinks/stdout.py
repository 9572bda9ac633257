"""The `stdout` sink: JSON Lines on standard output, for a collector reading the process's output."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence

from edge.pipeline.audit.chain import Entry, Head
from edge.pipeline.audit.sinks import SinkDown


class StdoutSink:
    durable = False

    def __init__(self, name: str = "stdout") -> None:
        self.name = name

    def open(self) -> Head | None:
        return None

    def write(self, entries: Sequence[Entry]) -> None:
        try:
            sys.stdout.write("".join(f"{entry.line}\n" for entry in entries))
            sys.stdout.flush()
        except (OSError, ValueError) as error:
            raise SinkDown(f"stdout: {error}") from None

    def tick(self, now: float) -> None:
        return None

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
