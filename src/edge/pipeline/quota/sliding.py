"""Sliding-window log: exact counts for small limits over long periods ("1 refill per 30 days").

A key's state is the times of its counted calls inside the last `period`, at
most `limit` of them: a call is allowed when fewer than `limit` remain after
dropping those at or before `now - period`. Memory grows with the limit, so
config caps it; GCRA is the choice for large limits. The Redis store keeps the
same log in a sorted set (see store_redis.py).
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

    def check(self, log: deque[float] | None, now: float) -> Verdict:
        if not log:
            return Verdict(True, self.limit - 1, self.period)
        horizon = now - self.period
        while log and log[0] <= horizon:
            log.popleft()
        if len(log) < self.limit:
            return Verdict(True, self.limit - len(log) - 1, self.period)
        return Verdict(False, 0, log[-1] + self.period - now, log[0] + self.period - now)

    def commit(self, log: deque[float] | None, now: float) -> deque[float]:
        if log is None:
            log = deque(maxlen=self.limit)
        log.append(now)
        return log

    def expired(self, log: deque[float], now: float) -> bool:
        return not log or log[-1] <= now - self.period
