"""Quota counters: decisions per rule, result and mode, and the shared store's breaker.

Cheap enough for the hot path (one dict increment per rule a call meets);
`snapshot()` is what an admin or metrics endpoint exposes. Results are
`allowed`, `denied`, `shadow_denied` (a shadow rule that would have denied),
`not_counted` (allowed by this rule but not committed because another denied),
`skipped` (a key part was missing); modes are `memory`, `redis`, `degraded`,
`open`, `closed` (see limiter.py).
"""

from __future__ import annotations

from collections import Counter
from typing import Any


class QuotaMetrics:
    def __init__(self) -> None:
        self.decisions: Counter[tuple[str, str, str]] = Counter()

    def count(self, rule: str, result: str, mode: str) -> None:
        self.decisions[rule, result, mode] += 1

    def snapshot(self) -> list[dict[str, Any]]:
        return [
            {"rule": rule, "result": result, "mode": mode, "count": count}
            for (rule, result, mode), count in sorted(self.decisions.items())
        ]
