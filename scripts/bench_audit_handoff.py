"""What handing audit records to the writer costs the gateway process: no audit, writer thread, sealing process.

A controlled stand-in for `bench_audit_doors.py` (whose figures move by
±20 us on a shared machine): one event loop makes calls at a fixed rate, each
a fresh `Call`, a 200-byte round trip over a socket pair (system calls that
let go of the GIL, as a gateway's I/O does) and `AuditLog.record`, with audit
to a file through `AuditLog.from_config`. The variants alternate over rounds;
the figure is this process's CPU (all its threads: `time.process_time`) per
call, and the sealing child's CPU (from /proc) per call beside it.
Usage: `.venv/bin/python scripts/bench_audit_handoff.py [--rate 2000]
[--seconds 4] [--rounds 4] [--coalesce 0.005]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

from bench_audit import sample_call

from edge.call import Reply
from edge.config.audit import Audit
from edge.pipeline.audit import AuditLog
from edge.pipeline.audit.sealer import fork_is_safe

TICKS = os.sysconf("SC_CLK_TCK")
VARIANTS = ("none", "thread", "process")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def audit_log(variant: str, folder: Path, coalesce: float) -> AuditLog:
    if variant == "none":
        return AuditLog(None)
    section = Audit.model_validate(
        {"sinks": [{"type": "file", "path": str(folder / f"audit-{variant}.jsonl")}], "spool": {"path": str(folder)}}
    )
    built = AuditLog.from_config(section, f"bench-{variant}")
    return AuditLog(built.writer, section.queue_size, built.instance, built._tick, coalesce, variant == "process")


async def run(variant: str, folder: Path, rate: int, seconds: float, coalesce: float) -> tuple[float, float]:
    """CPU microseconds per call: this process, and the sealing child."""
    audit = audit_log(variant, folder, coalesce)
    for _ in range(100):  # a joined thread of the last variant is gone from /proc a moment after `join`
        if fork_is_safe():
            break
        await asyncio.sleep(0.01)
    await audit.start()
    if variant == "process" and audit._sealer is None:
        raise RuntimeError("this process has threads: the writer fell back to a thread, the figure would be wrong")
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_unix_connection(sock=ours)
    echo_reader, echo_writer = await asyncio.open_unix_connection(sock=theirs)

    async def echo() -> None:
        while data := await echo_reader.read(65536):
            echo_writer.write(data)

    echoing = asyncio.create_task(echo())
    reply, per_tick, calls = Reply(http_status=200), max(1, rate // 1000), 0
    child = audit._sealer.pid if audit._sealer is not None else 0
    loop = asyncio.get_running_loop()
    started, child_started = time.process_time(), cpu_seconds(child) if child else 0.0
    until = loop.time() + seconds
    while loop.time() < until:
        for _ in range(per_tick):
            call = sample_call()
            writer.write(b"x" * 200)
            await reader.readexactly(200)
            audit.record(call, reply)
        calls += per_tick
        await asyncio.sleep(0.001)
    used = time.process_time() - started
    child_used = cpu_seconds(child) - child_started if child else 0.0
    await audit.aclose()
    writer.close()
    echo_writer.close()
    echoing.cancel()
    return used / calls * 1e6, child_used / calls * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=2000, help="calls per second")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--coalesce", type=float, default=0.005)
    args = parser.parse_args()
    figures: dict[str, list[tuple[float, float]]] = {variant: [] for variant in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="edge-audit-handoff-") as tmp:
        for _ in range(args.rounds):
            for variant in VARIANTS:
                figures[variant].append(await run(variant, Path(tmp), args.rate, args.seconds, args.coalesce))
    print(
        f"CPU per call at {args.rate} calls/s, coalesce {args.coalesce * 1000:.0f} ms (median of {args.rounds} rounds)"
    )
    base = statistics.median(us for us, _ in figures["none"])
    for variant, samples in figures.items():
        own = statistics.median(us for us, _ in samples)
        child = statistics.median(us for _, us in samples)
        rounds = ", ".join(f"{us:.1f}" for us, _ in samples)
        print(
            f"  {variant:8} {own:6.1f} us/call in this process (audit {own - base:5.1f}), +{child:5.1f} in the child  ({rounds})"
        )


if __name__ == "__main__":
    asyncio.run(main())
