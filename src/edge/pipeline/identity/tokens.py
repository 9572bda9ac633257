"""The verified-token cache: the hot path of the identity stage.

A token that verified once is remembered under the SHA-256 of its text (the
token itself is never kept as a key, so a memory dump of the cache holds no
replayable credential), until the earliest of its `exp`, `iat + max_age` and
the cache TTL. A repeated token then costs one hash and one dict lookup.
Bounded: when full, the oldest entry goes. Everything a request copies into
the call (principal, header values) is computed once, when the entry is made.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from edge.call import Principal


@dataclass(frozen=True, slots=True)
class Verified:
    principal: Principal
    provider: str
    expires: float  # wall-clock seconds (the clock `exp` is in)
    subject_header: str
    roles_header: str
    thumbprint: str | None = None  # RFC 8705 cnf.x5t#S256: the certificate the token is bound to


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenCache:
    def __init__(self, size: int, ttl: float, clock: Callable[[], float] = time.time) -> None:
        self.size = size
        self.ttl = ttl
        self.clock = clock
        self._entries: dict[bytes, Verified] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: bytes) -> Verified | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry.expires <= self.clock():
            self._entries.pop(digest, None)
            return None
        return entry

    def put(self, digest: bytes, entry: Verified) -> None:
        """Keep `entry` until its own expiry or the TTL, whichever comes first."""
        limit = self.clock() + self.ttl
        if entry.expires > limit:
            entry = Verified(
                entry.principal, entry.provider, limit, entry.subject_header, entry.roles_header, entry.thumbprint
            )
        entries = self._entries
        entries.pop(digest, None)
        while len(entries) >= self.size:
            del entries[next(iter(entries))]
        entries[digest] = entry
