"""Quota counters: decisions per rule, result and mode, and the shared store's breaker.

Cheap enough for the hot path: each (rule, result, mode) has a one-element
counter cell, and a stage keeps the cells it adds to most (allowed, per rule)
so a call builds and hashes no key; `snapshot()` is what an admin or metrics
endpoint exposes. Results are `allowed`, `denied`, `shadow_denied` (a shadow
rule that would have denied), `not_counted` (allowed by this rule but not
committed because another denied), `skipped` (a key part was missing); modes
are `memory`, `redis`, `degraded`, `open`, `closed` (see limiter.py).
"""

from __future__ import annotations

from typing import Any

Cell = list[int]  # [count]: a list, so whoever holds it adds in place


class QuotaMetrics:
    def __init__(self) -> None:
        self._cells: dict[tuple[str, str, str], Cell] = {}

    def cell(self, rule: str, result: str, mode: str) -> Cell:
        cell = self._cells.get((rule, result, mode))
        if cell is None:
            cell = self._cells[rule, result, mode] = [0]
        return cell

    def count(self, rule: str, result: str, mode: str) -> None:
        self.cell(rule, result, mode)[0] += 1

    def snapshot(self) -> list[dict[str, Any]]:
        return [
            {"rule": rule, "result": result, "mode": mode, "count": count}
            for (rule, result, mode), (count,) in sorted(self._cells.items())
            if count
        ]
