"""A circuit breaker in front of the shared quota store, so a dead Redis costs nothing per call.

Closed: every decision goes to Redis; `failures` failures in a row open it.
Open: for `open_for` seconds no decision tries Redis (each fails over to the
rule's `on_store_error` at once). Then one decision is let through as a probe
(half-open): success closes the breaker, failure opens it again. Recovery
therefore needs no operator and costs at most one slow call per `open_for`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half_open"]


class Breaker:
    def __init__(self, failures: int = 3, open_for: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = failures
        self.open_for = open_for
        self.clock = clock
        self.state: State = "closed"
        self.failures = 0
        self.opened = 0
        self._retry_at = 0.0

    def allow(self) -> bool:
        """May this decision try the store? In half-open state only the one probe may."""
        if self.state == "closed":
            return True
        if self.state == "open" and self.clock() >= self._retry_at:
            self.state = "half_open"
            return True
        return False

    def success(self) -> None:
        self.state = "closed"
        self.failures = 0

    def failure(self) -> None:
        self.failures += 1
        if self.state == "half_open" or self.failures >= self.threshold:
            if self.state != "open":
                self.opened += 1
            self.state = "open"
            self._retry_at = self.clock() + self.open_for
