"""The decision cache: answers kept for a while, keyed by every input the policy reads.

A key is `(request, revision)`: the request holds subject, roles, attributes,
action and resource, and the revision ties the answer to the policy that
gave it, so a new revision simply misses. Allows and denies have their own
TTL (a revoked permission should not live long; a deny is cheap to re-ask),
shortened further by the engine's hint. Errors are never stored. When full,
the oldest entry goes: a plain dict keeps insertion order, so that is O(1).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

from policy_client.model import Decision

Clock = Callable[[], float]


class DecisionCache:
    __slots__ = ("_clock", "_entries", "allow_ttl", "deny_ttl", "max_entries")

    def __init__(self, allow_ttl: float, deny_ttl: float, max_entries: int, clock: Clock = time.monotonic) -> None:
        self.allow_ttl = allow_ttl
        self.deny_ttl = deny_ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[Hashable, tuple[Decision, float]] = {}

    def get(self, key: Hashable) -> Decision | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            del self._entries[key]
            return None
        return entry[0]

    def put(self, key: Hashable, decision: Decision) -> None:
        """Keep `decision` (marked as cached) for its TTL; a TTL of 0 keeps nothing."""
        ttl = self.allow_ttl if decision.allow else self.deny_ttl
        if decision.ttl is not None:
            ttl = min(ttl, decision.ttl)
        if ttl <= 0 or self.max_entries <= 0:
            return
        if key not in self._entries and len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (_as_cached(decision), self._clock() + ttl)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def _as_cached(decision: Decision) -> Decision:
    return Decision(decision.allow, decision.reason, decision.revision, decision.ttl, decision.obligations, True)
