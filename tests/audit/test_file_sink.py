"""The file sink: rotation by size and age, fsync policy, resuming the chain, torn tails, a full disk."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from edge.pipeline.audit.sinks.file import FileInUse, FileSink
from edge.pipeline.audit.verify import verify_files
from tests.audit.conftest import Clock, call_record, read_lines, records, write_chain, writer_over


def test_size_rotation_names_files_by_their_first_seq(tmp_path: Path) -> None:
    write_chain(tmp_path / "audit.jsonl", 50, max_size=1500)
    files = sorted(tmp_path.glob("audit*.jsonl"))
    assert len(files) > 3 and files[-1].name == "audit.jsonl"
    seqs = []
    for path in files:
        in_file = [r["seq"] for r in records(path)]
        if path.name != "audit.jsonl":
            assert path.name == f"audit-{in_file[0]:012d}.jsonl"
        seqs += in_file
    assert seqs == list(range(1, 51))
    assert verify_files(files).ok


def test_age_rotation_on_tick(tmp_path: Path) -> None:
    clock = Clock()
    sink = FileSink(tmp_path / "audit.jsonl", max_age=60.0, clock=clock)
    writer = writer_over([sink], clock=clock)
    writer.open()
    writer.write([call_record(1), call_record(2)])
    clock.now += 59
    writer.write([])
    assert sorted(p.name for p in tmp_path.glob("audit*.jsonl")) == ["audit.jsonl"]
    clock.now += 2
    writer.write([])
    writer.write([call_record(3)])
    writer.close()
    assert sorted(p.name for p in tmp_path.glob("audit*.jsonl")) == ["audit-000000000001.jsonl", "audit.jsonl"]
    assert [r["seq"] for r in records(tmp_path / "audit.jsonl")] == [3]


@pytest.mark.parametrize(("mode", "fsyncs"), [("always", 5), ("interval", 2), ("never", 0)])
def test_fsync_policy(tmp_path: Path, mode: str, fsyncs: int) -> None:
    clock = Clock()
    sink = FileSink(tmp_path / "audit.jsonl", fsync=mode, fsync_interval=1.0, clock=clock)  # type: ignore[arg-type]
    writer = writer_over([sink], clock=clock)
    writer.open()
    for n, at in enumerate([0.0, 0.3, 0.6, 1.2, 1.5]):
        clock.now += at - (clock.now - 1_700_000_000.0)
        writer.write([call_record(n)])
    clock.now += 1.0
    writer.write([])
    assert sink.fsyncs == fsyncs


def test_a_restarted_writer_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_chain(path, 10)
    write_chain(path, 5)
    assert [r["seq"] for r in records(path)] == list(range(1, 16))
    report = verify_files([path])
    assert report.ok and report.chains["gw-1"].seq == 15


def test_a_torn_tail_is_set_aside_and_the_chain_resumes_after_it(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_chain(path, 10)
    with path.open("ab") as file:
        file.write(b'{"kind":"call","seq":11,"pr')
    write_chain(path, 3)
    aside = tmp_path / "audit-000000000001.jsonl"
    assert read_lines(aside)[-1] == '{"kind":"call","seq":11,"pr'
    start, *rest = records(path)
    assert start["kind"] == "start" and start["seq"] == 11
    assert start["torn"] == [{"sink": "file", "file": aside.name, "offset": aside.stat().st_size - 27, "bytes": 27}]
    assert [r["seq"] for r in rest] == [12, 13, 14]
    report = verify_files([path, aside])
    assert report.ok
    assert [w.where for w in report.warnings if "torn" in w.message] == [f"{aside}:11"]


class FillingDisk(FileSink):
    """A disk that fills up mid-write: part of the data lands, then ENOSPC."""

    full = False

    def _write_some(self, data: bytes) -> int:
        if self.full:
            os.write(self._fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return super()._write_some(data)


def test_a_full_disk_spools_then_delivers_every_record_once_in_order(tmp_path: Path) -> None:
    clock = Clock()
    sink = FillingDisk(tmp_path / "audit.jsonl", clock=clock)
    writer = writer_over([sink], spool_root=tmp_path / "spool", clock=clock, retry=1.0)
    writer.open()
    writer.write([call_record(n) for n in range(5)])
    sink.full = True
    for n in range(5, 25, 5):
        writer.write([call_record(i) for i in range(n, n + 5)])
        clock.now += 0.4
    assert (tmp_path / "audit.jsonl").read_bytes().endswith(b"\n")
    assert [r["seq"] for r in records(tmp_path / "audit.jsonl")] == [1, 2, 3, 4, 5]
    assert writer.deliveries[0].down and writer.deliveries[0].spool is not None
    assert not writer.deliveries[0].spool.empty
    sink.full = False
    clock.now += 1.0
    writer.write([call_record(25)])
    writer.write([])
    assert [r["seq"] for r in records(tmp_path / "audit.jsonl")] == list(range(1, 27))
    assert not writer.deliveries[0].down and not list((tmp_path / "spool" / "file").glob("*"))
    assert verify_files([tmp_path / "audit.jsonl"]).ok
    assert json.loads(read_lines(tmp_path / "audit.jsonl")[-1])["request_id"] == "req-25"


def test_a_second_process_cannot_write_the_same_file(tmp_path: Path) -> None:
    first = FileSink(tmp_path / "audit.jsonl")
    first.open()
    with pytest.raises(FileInUse, match="written by another gateway process"):
        FileSink(tmp_path / "audit.jsonl").open()
    first.close()
    second = FileSink(tmp_path / "audit.jsonl")
    second.open()
    second.close()
