"""A circuit breaker in front of a remote engine, so a dead policy service costs nothing per call.

After `failures` failed calls in a row the breaker opens: calls fail at once
(the caller applies fail-open or fail-closed) instead of each waiting out the
timeout. After `reset` seconds one trial call goes through (half-open); its
success closes the breaker, its failure opens it for another `reset`.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class CircuitBreaker:
    __slots__ = ("_clock", "_failed", "_opened_at", "_trial", "failures", "reset")

    def __init__(self, failures: int, reset: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.reset = reset
        self._clock = clock
        self._failed = 0
        self._opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "half-open" if self._trial or self._clock() >= self._opened_at + self.reset else "open"

    def allow(self) -> bool:
        """May a call go out now? In half-open, only the one trial call may."""
        if self._opened_at is None:
            return True
        if self._trial or self._clock() < self._opened_at + self.reset:
            return False
        self._trial = True
        return True

    def retry_in(self) -> float:
        return 0.0 if self._opened_at is None else max(0.0, self._opened_at + self.reset - self._clock())

    def success(self) -> None:
        self._failed = 0
        self._opened_at = None
        self._trial = False

    def abandon(self) -> None:
        """The call ended with neither answer (cancelled): let the next call be the trial."""
        self._trial = False

    def failure(self) -> None:
        self._failed += 1
        if self._trial or self._failed >= self.failures:
            self._opened_at = self._clock()
            self._trial = False
