"""The sealing process: the audit writer run in a forked child of the gateway, off the gateway's GIL.

Sealing in a thread of the gateway process cost the gateway far more CPU than
the sealing itself (18-40 us per call on the HTTP door, 65-108 us on the gRPC
door, for ~12 us of work): the thread holds the GIL in short stretches, and
every system call of the event loop or of grpc's threads then hands the GIL
over and back. `SealerProcess` runs the same `ChainWriter` in a child process
instead. The child is forked, not spawned: it starts in milliseconds, with the
writer already built, and imports nothing. A fork is only clean from a
single-threaded process, as `edge serve` is when the audit trail starts
(before grpc or any executor has a thread); a process that already has
threads (a test run, an embedding application) gets the writer thread
instead. The child closes every descriptor it inherited but its socket and
stdio (a listening socket or a backend connection held by the child would
outlive the gateway closing it), ignores
the signals meant for the gateway (SIGTERM reaches it as the gateway's own
flush and close), and dies with the gateway (PR_SET_PDEATHSIG), so a kill -9
leaves the trail as it did with the thread. The loop sends each batch over a
socket pair (marshal: about 1 us a record) and awaits the reply (any error the
writer raised, its stats, whether it accepts more), as it awaited the thread:
one batch at a time, in queue order. If the child dies, the writer goes on
in a thread (a fork now would not be clean), resuming the chain where the
sinks hold it; the batch in flight is counted lost and declared. Calls are
tallied for metrics on the loop side, before the hand-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import marshal
import os
import pickle
import signal
import socket
import struct
import sys
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any, BinaryIO, NoReturn

from edge.pipeline.audit.record import CallRecord
from edge.pipeline.audit.writer import ChainWriter

log = logging.getLogger("edge.audit")

_LENGTH = struct.Struct("<I")
_MARSHAL, _PICKLE, _CLOSE = b"m", b"p", b"c"
_PR_SET_PDEATHSIG = 1
_REAP_SECONDS = 5.0


class SealerDied(RuntimeError):
    """The sealing process ended without being asked to; the writer goes on in a thread."""


def fork_is_safe() -> bool:
    """Only a single-threaded process forks cleanly: another thread's locks, or grpc's fork handlers, would not."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


class SealerProcess:
    def __init__(self, writer: ChainWriter) -> None:
        self.writer = writer
        self.accepting = True
        self.pid = 0
        self._stats = writer.stats()
        self._reader: asyncio.StreamReader | None = None
        self._stream: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        """Fork the child; it opens the sinks and says where the chain resumes, or raises what `open` raised."""
        ours, theirs = socket.socketpair()
        parent = os.getpid()
        for stream in (sys.stdout, sys.stderr):  # else the child would write the parent's buffered text again
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork of a threaded process; see the docstring
            pid = os.fork()
        if pid == 0:
            _child(self.writer, theirs, parent)
        theirs.close()
        self.pid = pid
        self._reader, self._stream = await asyncio.open_unix_connection(sock=ours)
        try:
            await self._reply()
        except BaseException:
            await self._reap()
            raise

    async def write(self, batch: list[CallRecord], unsequenced_lost: int) -> None:
        if self._stream is None:
            raise SealerDied("the audit sealing process is not running")
        self.writer.tally.count(batch)
        try:
            frame = _MARSHAL + marshal.dumps((batch, unsequenced_lost))
        except ValueError:  # a value marshal does not know (a decision holding an object): pickle keeps it exact
            frame = _PICKLE + pickle.dumps((batch, unsequenced_lost), pickle.HIGHEST_PROTOCOL)
        self._send(frame)
        await self._reply()

    async def close(self) -> None:
        """The writer's last checkpoint and the sinks' close, in the child; then the child exits."""
        if self._stream is None:
            return
        self._send(_CLOSE)
        try:
            await self._reply()
        finally:
            await self._reap()

    def stats(self) -> dict[str, Any]:
        return self._stats

    def _send(self, frame: bytes) -> None:
        assert self._stream is not None
        self._stream.write(_LENGTH.pack(len(frame)) + frame)

    async def _reply(self) -> None:
        assert self._reader is not None
        try:
            (size,) = _LENGTH.unpack(await self._reader.readexactly(_LENGTH.size))
            error, self._stats, self.accepting = pickle.loads(await self._reader.readexactly(size))
        except (asyncio.IncompleteReadError, ConnectionError):
            pid = self.pid
            await self._reap()
            raise SealerDied(f"the audit sealing process {pid} ended") from None
        if error is not None:
            raise error

    async def _reap(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = self._reader = None
        if not self.pid:
            return
        loop = asyncio.get_running_loop()
        until, killed = loop.time() + _REAP_SECONDS, False
        while not _exited(self.pid):
            if not killed and loop.time() > until:
                log.error("audit sealing process %d did not exit; killing it", self.pid)
                os.kill(self.pid, signal.SIGKILL)
                killed = True
            await asyncio.sleep(0.005)
        self.pid = 0


def _exited(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] != 0
    except ChildProcessError:
        return True


def _child(writer: ChainWriter, channel: socket.socket, parent: int) -> NoReturn:
    """The forked child: never returns into the gateway's code (its loop, its sockets are the parent's)."""
    code = 1
    try:
        _detach(channel.fileno(), parent)
        code = _serve(writer, channel)
    except BaseException:  # the child ends here whatever happens
        with contextlib.suppress(BaseException):
            log.exception("audit sealing process failed")
    finally:
        os._exit(code)


def _detach(keep: int, parent: int) -> None:
    gc.freeze()  # the gateway's objects stay untouched: no collection walks them, no page is copied for it
    with contextlib.suppress(ValueError):  # only the main thread may set handlers; the loop runs there
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(0)
    needed = _still_needed(keep)
    for fd in _open_descriptors():
        if fd > 2 and fd not in needed:
            with contextlib.suppress(OSError):  # the listing's own descriptor is gone already
                os.close(fd)


def _open_descriptors() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return list(range(3, os.sysconf("SC_OPEN_MAX")))


def _still_needed(channel: int) -> set[int]:
    """The socket, and where the stdout sink and the log handlers write (not always fds 1 and 2)."""
    streams: list[Any] = [sys.stdout, sys.stderr]
    for logger in (logging.getLogger(), log):
        streams += [getattr(handler, "stream", None) for handler in logger.handlers]
    needed = {channel}
    for stream in streams:
        with contextlib.suppress(AttributeError, OSError, ValueError):
            needed.add(stream.fileno())
    return needed


def _serve(writer: ChainWriter, channel: socket.socket) -> int:
    """Open, then one reply per request until `close`; the gateway gone without a close ends it like a crash."""
    writer.counts_calls = False
    stream = channel.makefile("rb")
    if not _answer(channel, writer, writer.open):
        return 1
    while True:
        frame = _frame(stream)
        if frame is None:
            return 0
        kind, payload = frame[:1], memoryview(frame)[1:]
        if kind == _CLOSE:
            _answer(channel, writer, writer.close)
            return 0
        _answer(channel, writer, partial(_write, writer, kind, payload))


def _write(writer: ChainWriter, kind: bytes, payload: memoryview) -> None:
    """Unpack and write a batch; it is freed on return, before the reply, while its memory is still in cache.

    Kept until the next batch came, it was freed after the gateway had run on
    the core in between, and the frees missed the cache: under load that cost
    the sealing process ~3 us a record.
    """
    batch, lost = marshal.loads(payload) if kind == _MARSHAL else pickle.loads(payload)
    writer.write(batch, lost)


def _frame(stream: BinaryIO) -> bytes | None:
    header = stream.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(header)
    payload = stream.read(size)
    return payload if len(payload) == size else None


def _answer(channel: socket.socket, writer: ChainWriter, work: Callable[[], None]) -> bool:
    error: BaseException | None = None
    try:
        work()
    except Exception as raised:  # sent to the gateway, which raises it where the thread raised it
        error = raised
    try:
        reply = pickle.dumps((error, writer.stats(), writer.accepting))
    except (pickle.PicklingError, TypeError, AttributeError):
        reply = pickle.dumps((RuntimeError(repr(error)), writer.stats(), writer.accepting))
    channel.sendall(_LENGTH.pack(len(reply)) + reply)
    return error is None
