"""Quota: rules from config, counted in memory or Redis, enforced by two pipeline stages.

`Quota` assembles it from the `quota:` config section and owns its lifetimes
(the Redis pool, the memory sweeper): the server builds one, places
`pre_auth` before identity and `post_auth` after policy, and pushes
`aclose` on its exit stack. Either tuple is empty when no rule runs in that
phase, so a gateway without quota rules pays nothing.

    rules.py        Rule, RuleSet, Check: matching and keys
    gcra.py         GCRA (default)          sliding.py    sliding-window log
    store_memory.py in-process store        store_redis.py  shared store (Lua)
    breaker.py      Redis circuit breaker   limiter.py    decisions + fallback
    stage.py        QuotaStage              headers.py    RateLimit-*, 429, 503
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from edge.config.quota import Quota as QuotaConfig
from edge.pipeline.quota.limiter import Limiter
from edge.pipeline.quota.metrics import QuotaMetrics
from edge.pipeline.quota.rules import RuleSet, compile_rule
from edge.pipeline.quota.stage import QuotaStage
from edge.pipeline.quota.store_memory import MemoryStore
from edge.pipeline.quota.store_redis import RedisStore

__all__ = ["Quota", "QuotaStage"]


class Quota:
    def __init__(self, config: QuotaConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.rules = tuple(compile_rule(rule) for rule in config.rules)
        self.local = MemoryStore(config.memory.max_keys, clock)
        self.shared = RedisStore(config.store, config.redis) if config.store != "memory" and self.rules else None
        self.limiter = Limiter(self.local, self.shared)
        self.metrics = QuotaMetrics()
        on_allowed = config.headers == "always"
        pre = RuleSet([rule for rule in self.rules if rule.phase == "pre_auth"])
        post = RuleSet([rule for rule in self.rules if rule.phase == "post_auth"])
        self.pre_auth = (QuotaStage("pre_auth", pre, self.limiter, self.metrics, on_allowed),) if pre else ()
        self.post_auth = (QuotaStage("post_auth", post, self.limiter, self.metrics, on_allowed),) if post else ()
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.shared is not None:
            await self.shared.start()
        if self.rules:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="quota-sweeper")

    async def aclose(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self.shared is not None:
            await self.shared.aclose()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.config.memory.sweep_interval)
            self.local.sweep(self.rules)
