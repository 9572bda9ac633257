"""One decision for all the quota rules a call meets, in the configured store, with per-rule fallback.

With the memory store a decision is one synchronous `MemoryStore.decide`
(`decide_local`, no coroutine at all). With Redis it is one script run; when
Redis fails (timeout, refused, breaker open) each rule does what its
`on_store_error` says: `local` counts the same rule in this process (mode
`degraded`), `allow` lets the call through uncounted (mode `open`), `deny`
answers 503 (mode `closed`). Local rules are still checked together and
committed only if all pass.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from edge.pipeline.quota.rules import Check
from edge.pipeline.quota.store_memory import MemoryStore
from edge.pipeline.quota.store_redis import RedisStore
from edge.pipeline.quota.verdict import StoreUnavailable, Verdict

log = logging.getLogger("edge.quota")

OPEN: Verdict = (True, -1, 0.0, 0.0)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a decision went, beside its verdicts; `modes` only when they differ per check (fallback)."""

    mode: str
    passed: bool
    modes: tuple[str, ...] | None = None
    unavailable: bool = False

    def mode_of(self, index: int) -> str:
        return self.mode if self.modes is None else self.modes[index]


Decision = tuple[list[Verdict], Outcome]
PASSED = {mode: Outcome(mode, True) for mode in ("memory", "redis")}
DENIED = {mode: Outcome(mode, False) for mode in ("memory", "redis")}


def passed(checks: Sequence[Check], verdicts: Sequence[Verdict]) -> bool:
    if len(verdicts) == 1:
        return verdicts[0][0] or checks[0][0].shadow
    return all(verdict[0] or rule.shadow for (rule, _), verdict in zip(checks, verdicts, strict=True))


def judged(mode: str, checks: Sequence[Check], verdicts: list[Verdict]) -> Decision:
    return verdicts, (PASSED if passed(checks, verdicts) else DENIED)[mode]


class Limiter:
    def __init__(self, local: MemoryStore, shared: RedisStore | None = None) -> None:
        self.local = local
        self.shared = shared
        self.mode = "memory" if shared is None else "redis"
        self._degraded = False

    def decide_local(self, checks: Sequence[Check]) -> Decision:
        verdicts, ok = self.local.judge(checks)
        return verdicts, (PASSED if ok else DENIED)["memory"]

    async def decide(self, checks: Sequence[Check]) -> Decision:
        if self.shared is None:
            return self.decide_local(checks)
        try:
            verdicts = await self.shared.decide(checks)
        except StoreUnavailable as error:
            if not self._degraded:
                log.warning("quota store unavailable (%s): rules use their on_store_error fallback", error)
                self._degraded = True
            return self._fallback(checks)
        if self._degraded:
            log.info("quota store is back: shared counting resumed")
            self._degraded = False
        return judged("redis", checks, verdicts)

    def _fallback(self, checks: Sequence[Check]) -> Decision:
        closed = [rule.on_store_error == "deny" and not rule.shadow for rule, _ in checks]
        if any(closed):
            verdicts: list[Verdict] = [(not shut, -1, 0.0, 0.0) for shut in closed]
            modes = tuple("closed" if shut else "open" for shut in closed)
            return verdicts, Outcome("closed", False, modes, unavailable=True)
        local = [check for check in checks if check[0].on_store_error == "local"]
        counted = iter(self.local.decide(local)) if local else iter(())
        local_rule = [rule.on_store_error == "local" for rule, _ in checks]
        counted_verdicts = [next(counted) if is_local else OPEN for is_local in local_rule]
        modes = tuple("degraded" if is_local else "open" for is_local in local_rule)
        return counted_verdicts, Outcome("degraded", passed(checks, counted_verdicts), modes)
