"""The embedded quota store: counts in this process, exact under concurrency, bounded in memory.

`decide` is synchronous on purpose: it checks every rule of a call, then
commits all of them only if none that enforces denied, with no `await` in
between, so concurrent calls on one event loop can never both take the last
unit. Each rule has its own table in least-recently-counted order; a key whose
state has run out (a GCRA TAT in the past, a log with nothing inside the
period) is idle and dropped from the front (up to 16 every 8 commits, and in
a periodic sweep), and a table above `max_keys` drops its least recently
counted key. The same class is the Redis store's local fallback.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from edge.pipeline.quota.rules import Check, Rule
from edge.pipeline.quota.verdict import Verdict

Clock = Callable[[], float]
TRIM_EVERY = 8
TRIM_BUDGET = 16
SWEEP_BUDGET = 50_000


class MemoryStore:
    def __init__(self, max_keys: int = 1_000_000, clock: Clock = time.monotonic) -> None:
        self.max_keys = max_keys
        self.clock = clock
        self._tables: dict[str, OrderedDict[str, Any]] = {}
        self._commits = 0

    def decide(self, checks: Sequence[Check]) -> list[Verdict]:
        """Check all, then commit all allowed ones unless an enforcing rule denied."""
        now = self.clock()
        if len(checks) == 1:
            return [self._decide_one(checks[0], now)]
        tables = self._tables
        held = []
        verdicts = []
        passed = True
        for rule, key in checks:
            table = tables.get(rule.store_name)
            if table is None:
                table = tables[rule.store_name] = OrderedDict()
            state = table.get(key)
            verdict = rule.algorithm.check(state, now)
            if not verdict.allowed and not rule.shadow:
                passed = False
            held.append((table, state))
            verdicts.append(verdict)
        if passed:
            for (rule, key), (table, state), verdict in zip(checks, held, verdicts, strict=True):
                if verdict.allowed:
                    table[key] = rule.algorithm.commit(state, now)
                    table.move_to_end(key)
                    self._after_commit(table, rule, now)
        return verdicts

    def _decide_one(self, check: Check, now: float) -> Verdict:
        rule, key = check
        table = self._tables.get(rule.store_name)
        if table is None:
            table = self._tables[rule.store_name] = OrderedDict()
        state = table.get(key)
        verdict = rule.algorithm.check(state, now)
        if verdict.allowed:
            table[key] = rule.algorithm.commit(state, now)
            table.move_to_end(key)
            self._after_commit(table, rule, now)
        return verdict

    def _after_commit(self, table: OrderedDict[str, Any], rule: Rule, now: float) -> None:
        """Every few commits look at the front of the table; always keep it within max_keys."""
        self._commits += 1
        if self._commits % TRIM_EVERY == 0:
            self._trim(table, rule, now, TRIM_BUDGET)
        elif len(table) > self.max_keys:
            self._trim(table, rule, now, 1)

    def _trim(self, table: OrderedDict[str, Any], rule: Rule, now: float, budget: int) -> int:
        dropped = 0
        expired = rule.algorithm.expired
        while table and dropped < budget:
            key, state = next(iter(table.items()))
            if not expired(state, now) and len(table) <= self.max_keys:
                break
            del table[key]
            dropped += 1
        return dropped

    def sweep(self, rules: Sequence[Rule]) -> int:
        """Drop idle keys of every rule (bounded work per call); returns how many went."""
        now = self.clock()
        return sum(
            self._trim(self._tables[rule.store_name], rule, now, SWEEP_BUDGET)
            for rule in rules
            if rule.store_name in self._tables
        )

    def size(self, rule: Rule) -> int:
        table = self._tables.get(rule.store_name)
        return len(table) if table is not None else 0
