"""The spool keeps a down sink's records on disk in order; its bound drops oldest or rejects, never silently."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from edge.pipeline.audit.chain import Entry, Head
from edge.pipeline.audit.sinks import SinkDown
from edge.pipeline.audit.spool import Spool
from edge.pipeline.audit.verify import Line, verify_lines
from tests.audit.conftest import Clock, call_record, writer_over


def entries(first: int, count: int) -> list[Entry]:
    return [Entry(seq, f'{{"seq":{seq},"pad":"{"x" * 40}"}}') for seq in range(first, first + count)]


def test_append_peek_commit_survive_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", segment_bytes=200)
    assert spool.open() is None
    spool.append(entries(1, 4))
    spool.append(entries(5, 4))
    spool.append(entries(9, 4))
    assert len(list((tmp_path / "s").glob("*.spool"))) == 3
    got, position = spool.peek(6)
    assert [e.seq for e in got] == [1, 2, 3, 4, 5, 6]
    spool.commit(position)
    spool.close()
    again = Spool(tmp_path / "s", segment_bytes=200)
    head = again.open()
    assert head is not None and head.seq == 12
    got, position = again.peek(100)
    assert [e.seq for e in got] == [7, 8, 9, 10, 11, 12]
    assert again.size == sum(len(f"{e.seq}\t{e.line}\n") for e in got)
    again.commit(position)
    assert again.empty and list((tmp_path / "s").iterdir()) == []


def test_a_torn_spool_line_is_cut_at_open(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s")
    spool.open()
    spool.append(entries(1, 3))
    spool.close()
    segment = next((tmp_path / "s").glob("*.spool"))
    with segment.open("ab") as file:
        file.write(b'4\t{"seq":4,"pa')
    again = Spool(tmp_path / "s")
    assert again.open() == Head(3, again.peek(3)[0][-1] and _hash(entries(3, 1)[0]))
    assert [e.seq for e in again.peek(10)[0]] == [1, 2, 3]


def _hash(entry: Entry) -> str:
    from edge.pipeline.audit.chain import line_hash

    return line_hash(entry.line)


class Flaky:
    """A sink that is up or down on command and keeps what it took."""

    durable = True

    def __init__(self) -> None:
        self.name = "flaky"
        self.up = True
        self.lines: list[str] = []
        self._last = 0

    def open(self) -> Head | None:
        return None

    def write(self, batch: Sequence[Entry]) -> None:
        if not self.up:
            raise SinkDown("down on purpose")
        for entry in batch:
            if entry.seq > self._last:
                self.lines.append(entry.line)
                self._last = entry.seq

    def tick(self, now: float) -> None:
        return None

    def close(self) -> None:
        return None


def verify_sink(sink: Flaky) -> list[str]:
    report = verify_lines([Line(f"flaky:{n}", text, False, True) for n, text in enumerate(sink.lines, 1)])
    assert report.ok, report.render()
    return [w.message for w in report.warnings if "lost" in w.message]


def test_drop_oldest_keeps_the_bound_and_chains_loss_markers(tmp_path: Path) -> None:
    clock = Clock()
    sink = Flaky()
    writer = writer_over([sink], tmp_path / "spool", clock=clock, max_bytes=4000, on_full="drop_oldest", retry=1.0)
    writer.open()
    writer.write([call_record(0)])
    sink.up = False
    for n in range(1, 60, 3):
        writer.write([call_record(i) for i in range(n, n + 3)])
        assert writer.accepting
    delivery = writer.deliveries[0]
    assert delivery.spool is not None and delivery.spool.size <= 4000 + 1500
    assert delivery.dropped > 0
    sink.up = True
    clock.now += 2
    writer.write([])
    seqs = [int(line.split('"seq":')[1].split(",")[0]) for line in sink.lines]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
    losses = verify_sink(sink)
    assert losses and all("declared by a loss record" in message for message in losses)
    markers = [json.loads(line) for line in sink.lines if '"kind":"loss"' in line]
    assert max(markers, key=lambda m: m["to_seq"])["count"] == delivery.dropped


def test_reject_stops_accepting_before_the_bound_and_recovers(tmp_path: Path) -> None:
    clock = Clock()
    sink = Flaky()
    writer = writer_over([sink], tmp_path / "spool", clock=clock, max_bytes=3000, on_full="reject", retry=1.0)
    writer.open()
    sink.up = False
    accepting = []
    for n in range(0, 40, 2):
        writer.write([call_record(n), call_record(n + 1)])
        accepting.append(writer.accepting)
    delivery = writer.deliveries[0]
    assert accepting[0] and not accepting[-1]
    assert delivery.spool is not None and delivery.spool.size <= 3000 + 2000
    assert delivery.dropped > 0
    sink.up = True
    clock.now += 2
    writer.write([])
    assert writer.accepting
    losses = verify_sink(sink)
    assert losses and all("declared by a loss record" in message for message in losses)


@pytest.mark.parametrize("on_full", ["reject", "drop_oldest"])
def test_a_spool_that_cannot_be_written_is_a_declared_loss(tmp_path: Path, on_full: str) -> None:
    blocker = tmp_path / "spool"
    blocker.write_text("a file where the spool folder should be")
    sink = Flaky()
    clock = Clock()
    writer = writer_over([sink], blocker, clock=clock, on_full=on_full, retry=1.0)
    writer.open()
    sink.up = False
    writer.write([call_record(1), call_record(2)])
    assert writer.accepting is (on_full == "drop_oldest")
    sink.up = True
    clock.now += 2
    writer.write([call_record(3)])
    assert verify_sink(sink) == []
    declared = [json.loads(line) for line in sink.lines if '"kind":"loss"' in line]
    assert declared and declared[-1]["from_seq"] == 1 and declared[-1]["reason"] == "spool write failed"
