"""The event-loop side: `record` never blocks, a full queue is counted and declared, close flushes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from edge.call import Call, Metadata, Peer, Reply
from edge.config.audit import Spool as SpoolConfig
from edge.pipeline.audit import AuditLog
from edge.pipeline.audit.delivery import Delivery
from edge.pipeline.audit.writer import ChainWriter
from tests.audit.conftest import until
from tests.audit.test_spool import Flaky, verify_sink


def a_call(n: int) -> Call:
    return Call(ingress="http", method="GET", path=f"/v1/{n}", peer=Peer("127.0.0.1"), metadata=Metadata())


async def test_a_full_queue_refuses_records_counts_them_and_the_writer_declares_them(tmp_path: Path) -> None:
    sink = Flaky()
    writer = ChainWriter("gw-1", [Delivery(sink, None, SpoolConfig(path=tmp_path))])
    audit = AuditLog(writer, queue_size=5, instance="gw-1", tick=0.05)
    await audit.start()
    for n in range(8):
        audit.record(a_call(n), Reply())
    assert audit.lost == 3 and not audit.accepting()
    await audit.aclose()
    records = [json.loads(line) for line in sink.lines]
    assert [r["path"] for r in records if r["kind"] == "call"] == [f"/v1/{n}" for n in range(5)]
    (loss,) = [r for r in records if r["kind"] == "loss"]
    assert (loss["sink"], loss["count"], loss["reason"]) == (None, 3, "not queued or not sealable")
    assert verify_sink(sink) == []
    assert audit.stats()["lost_queue_full"] == 3 and audit.stats()["seq"] == 6


async def test_idle_ticks_reach_the_writer(tmp_path: Path) -> None:
    ticks = []

    class Counting(ChainWriter):
        def write(self, batch: list[dict[str, object]], unsequenced_lost: int = 0) -> None:
            ticks.append(len(batch))

    audit = AuditLog(Counting("gw-1", []), tick=0.01)
    await audit.start()
    audit.record(a_call(1), Reply())
    await until(lambda: len(ticks) >= 5, 5)
    await audit.aclose()
    assert ticks[0] == 1 and set(ticks[1:]) == {0}


async def test_a_record_after_an_idle_spell_is_handed_off_at_once_and_a_burst_in_few_hand_offs() -> None:
    batches: list[int] = []

    class Counting(ChainWriter):
        def write(self, batch: list[dict[str, object]], unsequenced_lost: int = 0) -> None:
            if batch:
                batches.append(len(batch))

    audit = AuditLog(Counting("gw-1", []), tick=5.0, coalesce=0.5)
    await audit.start()
    audit.record(a_call(0), Reply())
    await until(lambda: batches == [1], 0.4)  # well inside the coalescing window: the first goes at once
    for n in range(1, 50):
        audit.record(a_call(n), Reply())
        await asyncio.sleep(0.001)
    await until(lambda: sum(batches) == 50, 5)
    await audit.aclose()
    assert batches == [1, 49]
