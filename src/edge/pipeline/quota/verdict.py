"""What one rule decided for one call, in the same shape whichever store decided it.

A verdict is a plain tuple `(allowed, remaining, reset, retry_after)`, not a
NamedTuple: it is made for every rule of every call, and a NamedTuple's
constructor is a Python function call (~0.3-0.6 us here) where a tuple display
is one instruction. Readers unpack it. Times are seconds from the decision:
`reset` is when the key's quota is whole again, `retry_after` (0.0 unless
denied) is when the next call would be allowed. A store error is a
`StoreUnavailable`, raised by a store and handled by the limiter according to
each rule's `on_store_error`.
"""

from __future__ import annotations

Verdict = tuple[bool, int, float, float]


class StoreUnavailable(Exception):
    """The shared store did not answer in time, or the breaker is open."""
