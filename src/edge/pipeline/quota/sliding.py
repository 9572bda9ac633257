"""Sliding-window log: exact counts for small limits over long periods ("1 refill per 30 days").

A key's state is the times of its counted calls inside the last `period`, at
most `limit` of them: a call is allowed when fewer than `limit` remain after
dropping those at or before `now - period`. Memory grows with the limit, so
config caps it; GCRA is the choice for large limits. The Redis store keeps the
same log in a sorted set (see store_redis.py).

`check` appends an allowed call at once, so that counting it is storing the
log it returns; a store that then does not commit the decision (another rule
denied) calls `uncount`. Both happen within one synchronous `decide`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from edge.pipeline.quota.verdict import Verdict


@dataclass(frozen=True, slots=True)
class SlidingLog:
    limit: int
    period: float

    @property
    def window(self) -> float:
        return self.period

    def check(self, log: deque[float] | None, now: float) -> tuple[Verdict, deque[float] | None]:
        """The verdict, and the log to store if the call is counted (None when denied)."""
        if log is None:
            return (True, self.limit - 1, self.period, 0.0), deque((now,), maxlen=self.limit)
        horizon = now - self.period
        while log and log[0] <= horizon:
            log.popleft()
        if len(log) < self.limit:
            log.append(now)
            return (True, self.limit - len(log), self.period, 0.0), log
        return (False, 0, log[-1] + self.period - now, log[0] + self.period - now), None

    @staticmethod
    def uncount(log: deque[float]) -> None:
        """Take back the call `check` appended, when the decision was not committed."""
        log.pop()

    def expired(self, log: deque[float], now: float) -> bool:
        return not log or log[-1] <= now - self.period
