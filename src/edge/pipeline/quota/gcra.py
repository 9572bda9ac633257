"""GCRA (the generic cell rate algorithm): the default quota algorithm, one number per key.

A key's state is its theoretical arrival time (TAT): when its bucket would be
empty again if no more calls came. Calls are spaced `interval = period / limit`
apart, and `capacity` (the burst) of them may come at once. Comparisons allow
a microsecond for float rounding. The Redis store runs the same arithmetic in
Lua, in microseconds (see store_redis.py); keep the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edge.pipeline.quota.verdict import Verdict

EPSILON = 1e-9
TOLERANCE = 1e-6  # seconds: float rounding in `tat + interval - window` must not deny a fresh key


@dataclass(frozen=True, slots=True)
class Gcra:
    interval: float
    capacity: int
    window: float = field(init=False)  # how far ahead of now a TAT may run: `capacity` intervals

    def __post_init__(self) -> None:
        object.__setattr__(self, "window", self.interval * self.capacity)

    def check(self, tat: float | None, now: float) -> tuple[Verdict, float | None]:
        """The verdict, and the TAT to store if the call is counted (None when denied)."""
        tat = now if tat is None or tat < now else tat
        new_tat = tat + self.interval
        window = self.window
        allow_at = new_tat - window
        if allow_at - now > TOLERANCE:
            return (False, 0, tat - now, allow_at - now), None
        return (True, int((window - (new_tat - now)) / self.interval + EPSILON), new_tat - now, 0.0), new_tat

    @staticmethod
    def uncount(tat: float) -> None:
        """Nothing to take back: `check` leaves the stored TAT alone."""

    @staticmethod
    def expired(tat: float, now: float) -> bool:
        return tat <= now
