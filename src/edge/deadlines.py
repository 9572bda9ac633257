"""Deadlines for many concurrent calls on one shared, coarse timer.

`asyncio.timeout` arms and disarms an event-loop timer per use: on the bench
machine ~8-9 us per call (uvloop or asyncio), a measurable share of a
proxied call that costs ~70 us in all. A gateway's upstream timeouts are
seconds long and need no better than millisecond precision, so
`Deadlines` keeps the calls in flight in a set and checks them from one
timer that ticks every `resolution` seconds while any is pending (and not
at all while none is). A deadline fires up to one `resolution` late.

`with deadlines.after(seconds):` (a plain `with`, inside a task: entering
and leaving need no await) behaves as `asyncio.timeout`: the task is
cancelled when the deadline passes and the block raises `TimeoutError`; a
cancellation from elsewhere passes through untouched.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

RESOLUTION = 0.005


class Deadlines:
    """One event loop's deadlines: bound to the loop of its first use.

    The loop is looked up once: in Python 3.11 `asyncio.get_running_loop`
    (and `current_task` without a loop) makes a getpid system call each time.
    """

    def __init__(self, resolution: float = RESOLUTION) -> None:
        self.resolution = resolution
        self._pending: set[Deadline] = set()
        self._ticker: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def after(self, seconds: float) -> Deadline:
        return Deadline(self, seconds)

    def _add(self, deadline: Deadline, loop: asyncio.AbstractEventLoop) -> None:
        self._pending.add(deadline)
        if self._ticker is None:
            self._ticker = loop.call_later(self.resolution, self._tick, loop)

    def _discard(self, deadline: Deadline) -> None:
        self._pending.discard(deadline)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        expired = [deadline for deadline in self._pending if deadline.when <= now]
        for deadline in expired:
            self._pending.discard(deadline)
            deadline.expire()
        self._ticker = loop.call_later(self.resolution, self._tick, loop) if self._pending else None

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None


class Deadline:
    """One `with` block of a task, bounded in time; see the module docstring."""

    __slots__ = ("_cancelling", "_expired", "_owner", "_seconds", "_task", "when")

    def __init__(self, owner: Deadlines, seconds: float) -> None:
        self._owner = owner
        self._seconds = seconds
        self._task: asyncio.Task[object] | None = None
        self._cancelling = 0
        self._expired = False
        self.when = 0.0

    def __enter__(self) -> Deadline:
        owner = self._owner
        loop = owner.loop
        if loop is None:
            loop = owner.loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("a deadline must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self.when = loop.time() + self._seconds
        self._owner._add(self, loop)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._owner._discard(self)
        expired, task = self._expired, self._task
        if expired and task is not None and task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc

    def expire(self) -> None:
        if self._task is not None and not self._task.done():
            self._expired = True
            self._task.cancel()
