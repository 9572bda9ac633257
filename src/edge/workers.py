"""`edge serve --workers N`: N gateway processes sharing the listening ports.

Each worker is a plain `edge serve` process binding with SO_REUSEPORT, so the
kernel spreads connections and the workers share nothing but Redis (quota,
audit). This process only supervises: it forwards SIGHUP and SIGTERM, and a
worker that dies unasked is restarted after a short pause. Each worker is its
own audit instance (its own chain): give file sinks a per-worker path such as
`audit-${EDGE_WORKER:-0}.jsonl`.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

log = logging.getLogger("edge.workers")


def _start(command: list[str], index: int) -> subprocess.Popen[bytes]:
    """A worker knows its index as EDGE_WORKER: its audit instance id, and `${EDGE_WORKER}` in config."""
    return subprocess.Popen(command, env={**os.environ, "EDGE_WORKER": str(index)})


def supervise(config: Path | None, count: int, log_level: str) -> int:
    command = [sys.executable, "-m", "edge", "--log-level", log_level, "serve", "--reuse-port"]
    if config is not None:
        command += ["-c", str(config)]
    workers = [_start(command, i) for i in range(count)]
    stopping = False

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = stopping or signum in (signal.SIGTERM, signal.SIGINT)
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM if signum == signal.SIGINT else signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    while not stopping:
        time.sleep(0.2)
        for i, worker in enumerate(workers):
            if worker.poll() is not None and not stopping:
                log.error("worker %d exited with %s; restarting it", worker.pid, worker.returncode)
                time.sleep(0.5)
                workers[i] = _start(command, i)
    return max(worker.wait() for worker in workers)
