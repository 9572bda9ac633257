"""Endpoint choice for an upstream: round robin, skipping endpoints that just failed to connect.

An endpoint that refuses a connection is left out for a short back-off
(passive health checking, as Envoy's outlier detection does), so one dead
backend of three costs one failed connect, not a third of all requests.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence


class Endpoints:
    def __init__(self, urls: Sequence[str], backoff: float = 5.0) -> None:
        self.urls = tuple(urls)
        self.backoff = backoff
        self._next = 0
        self._down_until = [0.0] * len(self.urls)

    def order(self) -> Iterable[str]:
        """Every endpoint once, healthy ones first, starting from the round-robin position.

        A single endpoint is its own order, with no generator, clock read or rotation per call.
        """
        if len(self.urls) == 1:
            return self.urls
        return self._rotation()

    def _rotation(self) -> Iterator[str]:
        count = len(self.urls)
        start = self._next
        self._next = (start + 1) % count
        now = time.monotonic()
        later = []
        for offset in range(count):
            i = (start + offset) % count
            if self._down_until[i] <= now:
                yield self.urls[i]
            else:
                later.append(self.urls[i])
        yield from later

    def failed(self, url: str) -> None:
        self._down_until[self.urls.index(url)] = time.monotonic() + self.backoff

    def succeeded(self, url: str) -> None:
        i = self.urls.index(url)
        if self._down_until[i]:
            self._down_until[i] = 0.0
