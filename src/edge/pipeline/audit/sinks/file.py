"""The `file` sink: JSON Lines on a local disk, rotated by size and age, fsynced by policy.

The active file keeps its configured name (`audit.jsonl`); a full or old one
is renamed `audit-<first seq, 12 digits>.jsonl`, so `ls`, a shell glob and
`edge audit verify audit*.jsonl` all see the files in chain order. Writes go
straight to the file descriptor; a failed write is cut back to the last whole
line before `SinkDown` is raised, so a disk that fills up never leaves half a
record between two whole ones. A file whose last line was torn by a crash
is renamed aside at start, so the torn line stays as evidence and ends a file.
"""

from __future__ import annotations

import calendar
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge.config.audit import FsyncMode
from edge.pipeline.audit.chain import Entry, Head, head_of
from edge.pipeline.audit.sinks import SinkDown

log = logging.getLogger("edge.audit")

_TAIL_READ = 64 * 1024


class FileInUse(RuntimeError):
    """Another process holds the audit file."""


@dataclass(frozen=True, slots=True)
class TornTail:
    """The unfinished last line a crash left in a file, now the end of `file`."""

    file: str
    offset: int
    length: int


class FileSink:
    durable = True

    def __init__(
        self,
        path: Path,
        name: str = "file",
        max_size: int = 100 * 2**20,
        max_age: float = 86400.0,
        fsync: FsyncMode = "interval",
        fsync_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.name = name
        self.max_size = max_size
        self.max_age = max_age
        self.fsync = fsync
        self.fsync_interval = fsync_interval
        self.torn: TornTail | None = None
        self.fsyncs = 0
        self._clock = clock
        self._fd = -1
        self._lock_fd = -1
        self._size = 0
        self._first_seq: int | None = None
        self._opened_at = clock()
        self._last_seq = 0
        self._dirty = False
        self._synced_at = clock()

    def open(self) -> Head | None:
        """Open the active file; say where the chain in these files ends (the newest whole record)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock()
        head = None
        if self.path.exists() and self.path.stat().st_size > 0:
            head = self._inspect_active()
        if head is None:
            head = self._newest_rotated_head()
        self._open_fd()
        self._last_seq = head.seq if head else 0
        return head

    def _inspect_active(self) -> Head | None:
        last, torn_at, size = _tail(self.path)
        first = _first_record(self.path)
        try:
            head = head_of(last) if last is not None else None
        except ValueError:
            log.warning("audit file %s does not end in a sealed record; starting a new file", self.path)
            self._set_aside(first)
            return None
        if torn_at is not None:
            target = self._set_aside(first)
            self.torn = TornTail(target.name, torn_at, size - torn_at)
            log.warning("audit file %s ended in a torn line (crash); kept as %s", self.path, target.name)
        else:
            self._first_seq = first[0] if first else None
            self._opened_at = first[1] if first else self._clock()
        return head

    def _newest_rotated_head(self) -> Head | None:
        for rotated in reversed(self._rotated_files()):
            last, _, _ = _tail(rotated)
            if last is not None:
                try:
                    return head_of(last)
                except ValueError:
                    return None
        return None

    def _rotated_files(self) -> list[Path]:
        return sorted(self.path.parent.glob(f"{self.path.stem}-*{self.path.suffix}"))

    def write(self, entries: Sequence[Entry]) -> None:
        fresh = [entry for entry in entries if entry.seq > self._last_seq]
        if not fresh:
            return
        now = self._clock()
        try:
            if self._fd < 0:
                self._open_fd()
            if self._size and self._rotation_due(now):
                self._rotate()
        except OSError as error:
            raise SinkDown(f"{self.path}: {error.strerror or error}") from None
        self._append(("\n".join([entry.line for entry in fresh]) + "\n").encode())
        if self._first_seq is None:
            self._first_seq = fresh[0].seq
            self._opened_at = now
        self._last_seq = fresh[-1].seq
        self._dirty = True
        if self.fsync == "always" or (self.fsync == "interval" and now - self._synced_at >= self.fsync_interval):
            self._sync(now)

    def _append(self, data: bytes) -> None:
        written = 0
        try:
            while written < len(data):
                written += self._write_some(data[written:])
        except OSError as error:
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                log.exception("cannot cut %s back to its last whole record", self.path)
            raise SinkDown(f"{self.path}: {error.strerror or error}") from None
        self._size += written

    def _write_some(self, data: bytes) -> int:
        return os.write(self._fd, data)

    def tick(self, now: float) -> None:
        try:
            if self._dirty and self.fsync != "never" and now - self._synced_at >= self.fsync_interval:
                self._sync(now)
            if self._size and self._fd >= 0 and self.max_age and now - self._opened_at >= self.max_age:
                self._rotate()
        except OSError as error:
            log.error("audit file %s: %s", self.path, error)

    def _rotation_due(self, now: float) -> bool:
        return bool(
            (self.max_size and self._size >= self.max_size) or (self.max_age and now - self._opened_at >= self.max_age)
        )

    def _rotate(self) -> None:
        if self.fsync != "never":
            os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        target = self._rotated_name(self._first_seq)
        os.rename(self.path, target)
        _sync_folder(self.path.parent)
        self._open_fd()

    def _set_aside(self, first: tuple[int, float] | None) -> Path:
        target = self._rotated_name(first[0] if first else None)
        os.rename(self.path, target)
        _sync_folder(self.path.parent)
        return target

    def _rotated_name(self, first_seq: int | None) -> Path:
        label = f"{first_seq:012d}" if first_seq is not None else time.strftime("unknown-%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.path.with_name(f"{self.path.stem}-{label}{self.path.suffix}")
        n = 1
        while target.exists():
            target = self.path.with_name(f"{self.path.stem}-{label}.{n}{self.path.suffix}")
            n += 1
        return target

    def _open_fd(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._size = os.fstat(self._fd).st_size
        if self._size == 0:
            self._first_seq = None
            self._opened_at = self._clock()

    def _sync(self, now: float) -> None:
        os.fsync(self._fd)
        self.fsyncs += 1
        self._dirty = False
        self._synced_at = now

    def _lock(self) -> None:
        """One writer per file: a second process appending its own chain would break both."""
        lock = self.path.with_name(self.path.name + ".lock")
        self._lock_fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise FileInUse(
                f"audit file {self.path} is written by another gateway process; "
                "give each process its own audit path and instance_id (e.g. with ${EDGE_WORKER})"
            ) from None

    def close(self) -> None:
        try:
            if self._fd >= 0 and self._dirty and self.fsync != "never":
                self._sync(self._clock())
        finally:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1


def _tail(path: Path) -> tuple[str | None, int | None, int]:
    """The last whole line of a file, where a torn last line starts (None if none), and the size."""
    with open(path, "rb") as file:
        size = file.seek(0, os.SEEK_END)
        span = _TAIL_READ
        while True:
            start = max(0, size - span)
            file.seek(start)
            data = file.read(size - start)
            end = data.rfind(b"\n")
            torn_at = None if data.endswith(b"\n") else (start + end + 1 if end >= 0 else start)
            if end >= 0:
                begin = data.rfind(b"\n", 0, end)
                if begin >= 0 or start == 0:
                    return data[begin + 1 : end].decode("utf-8", "replace"), torn_at, size
            elif start == 0:
                return None, torn_at if size else None, size
            span *= 4


def _first_record(path: Path) -> tuple[int, float] | None:
    """The first record's sequence number and time, which name and age a file."""
    with open(path, "rb") as file:
        line = file.readline()
    try:
        record = json.loads(line)
        stamp = calendar.timegm(time.strptime(record["time"][:19], "%Y-%m-%dT%H:%M:%S"))
        return int(record["seq"]), float(stamp)
    except (ValueError, KeyError, TypeError):
        return None


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
