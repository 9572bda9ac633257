"""A sink's durable spool: the records it has not taken yet, in order, on local disk.

One folder per sink holds segment files of `<seq>\\t<line>` lines and a
`cursor` file naming the first record not yet delivered. Appends are fsynced
(the spool only fills while a sink is down, so this is not the hot path); the
cursor is not, because a record delivered twice after a crash is skipped by
the sink (sinks drop sequence numbers they already hold). When everything is
delivered the folder is emptied, so an idle spool costs nothing.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from edge.pipeline.audit.chain import Entry, Head, line_hash

log = logging.getLogger("edge.audit")

SEGMENT_BYTES = 8 * 2**20


@dataclass(frozen=True, slots=True)
class Position:
    """Where reading stopped: a segment, a byte offset in it, and the bytes consumed to get there."""

    segment: int
    offset: int
    consumed: int


class Spool:
    def __init__(self, folder: Path, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.folder = folder
        self.segment_bytes = segment_bytes
        self.size = 0
        self._segments: list[Path] = []
        self._cursor = Position(0, 0, 0)
        self._fd = -1
        self._tail_bytes = 0

    @property
    def empty(self) -> bool:
        return self.size == 0

    def open(self) -> Head | None:
        """Load what an earlier run left; say where the newest spooled record ends the chain."""
        self._segments = sorted(self.folder.glob("*.spool"))
        cursor = self._read_cursor()
        if self._segments:
            _cut_torn_tail(self._segments[-1])
        self.size = sum(p.stat().st_size for p in self._segments) - cursor.offset
        self._cursor = cursor
        if self.size <= 0:
            if self._segments:
                self._reset()
            self.size = 0
            return None
        return self._last_head()

    def _read_cursor(self) -> Position:
        try:
            data = json.loads((self.folder / "cursor").read_text())
            name, offset = str(data["segment"]), int(data["offset"])
        except (OSError, ValueError, KeyError, TypeError):
            return Position(0, 0, 0)
        names = [p.name for p in self._segments]
        if name not in names:
            return Position(0, 0, 0)
        for stale in self._segments[: names.index(name)]:
            stale.unlink()
        self._segments = self._segments[names.index(name) :]
        return Position(0, offset, 0)

    def _last_head(self) -> Head | None:
        with open(self._segments[-1], "rb") as file:
            lines = file.read().splitlines()
        if not lines:
            return None
        seq, _, line = lines[-1].decode().partition("\t")
        return Head(int(seq), line_hash(line))

    def append(self, entries: list[Entry]) -> None:
        """Add entries at the end, durably; OSError when the disk will not take them."""
        data = "".join(f"{entry.seq}\t{entry.line}\n" for entry in entries).encode()
        if self._fd < 0 or self._tail_bytes >= self.segment_bytes:
            self._start_segment(entries[0].seq)
        written = 0
        try:
            while written < len(data):
                written += os.write(self._fd, data[written:])
            os.fsync(self._fd)
        except OSError:
            if written:
                os.ftruncate(self._fd, self._tail_bytes)
            raise
        self._tail_bytes += len(data)
        self.size += len(data)

    def _start_segment(self, first_seq: int) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{first_seq:016d}.spool"
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._tail_bytes = os.fstat(self._fd).st_size
        if path not in self._segments:
            self._segments.append(path)

    def peek(self, limit: int) -> tuple[list[Entry], Position]:
        """Up to `limit` entries from the oldest on, and the position after them (for `commit`)."""
        entries: list[Entry] = []
        segment, offset, consumed = self._cursor.segment, self._cursor.offset, 0
        while len(entries) < limit and segment < len(self._segments):
            with open(self._segments[segment], "rb") as file:
                file.seek(offset)
                for raw in file:
                    if not raw.endswith(b"\n"):
                        break
                    seq, _, line = raw[:-1].decode().partition("\t")
                    entries.append(Entry(int(seq), line))
                    offset += len(raw)
                    consumed += len(raw)
                    if len(entries) >= limit:
                        break
            if len(entries) < limit and segment + 1 < len(self._segments):
                segment, offset = segment + 1, 0
            else:
                break
        return entries, Position(segment, offset, consumed)

    def commit(self, position: Position) -> None:
        """Forget everything before `position`: it was delivered (or dropped)."""
        self.size -= position.consumed
        if self.size <= 0:
            self._reset()
            return
        for done in self._segments[: position.segment]:
            done.unlink()
        self._segments = self._segments[position.segment :]
        self._cursor = Position(0, position.offset, 0)
        tmp = self.folder / "cursor.tmp"
        tmp.write_text(json.dumps({"segment": self._segments[0].name, "offset": position.offset}))
        tmp.replace(self.folder / "cursor")

    def drop_oldest(self, nbytes: int) -> list[Entry]:
        """Drop the oldest entries until at least `nbytes` are freed (or the spool is empty)."""
        dropped: list[Entry] = []
        while nbytes > 0 and not self.empty:
            entries, position = self.peek(256)
            if not entries:
                break
            cut, freed = 0, 0
            for entry in entries:
                cut += 1
                freed += len(str(entry.seq)) + len(entry.line.encode()) + 2
                if freed >= nbytes:
                    break
            if cut < len(entries):
                entries, position = self.peek(cut)
            self.commit(position)
            dropped.extend(entries)
            nbytes -= position.consumed
        return dropped

    def _reset(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        for path in self._segments:
            path.unlink(missing_ok=True)
        (self.folder / "cursor").unlink(missing_ok=True)
        self._segments = []
        self._cursor = Position(0, 0, 0)
        self._tail_bytes = 0
        self.size = 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _cut_torn_tail(path: Path) -> None:
    """A crash mid-append leaves a partial line; it was never acknowledged, so it goes."""
    with open(path, "rb+") as file:
        data = file.read()
        keep = data.rfind(b"\n") + 1
        if keep < len(data):
            log.warning("audit spool %s: dropping a torn last line (%d bytes)", path, len(data) - keep)
            file.truncate(keep)
