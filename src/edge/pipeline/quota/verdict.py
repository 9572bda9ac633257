"""What one rule decided for one call, in the same shape whichever store decided it.

Times are seconds from the decision: `reset` is when the key's quota is whole
again, `retry_after` (denials only) is when the next call would be allowed.
A store error is a `StoreUnavailable`, raised by a store and handled by the
limiter according to each rule's `on_store_error`.
"""

from __future__ import annotations

from typing import NamedTuple


class Verdict(NamedTuple):
    allowed: bool
    remaining: int
    reset: float
    retry_after: float = 0.0


class StoreUnavailable(Exception):
    """The shared store did not answer in time, or the breaker is open."""
