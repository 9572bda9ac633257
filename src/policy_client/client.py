"""`PolicyClient.check(request) -> Decision`: one engine behind a decision cache, a timeout and a breaker.

A check first looks in the cache under `(request, engine.revision)`; a hit
costs a dict lookup and no call. On a miss, concurrent checks of the same key
share one engine call (a task the callers await, shielded, so one caller
going away does not cancel the others' answer). The call is bounded by the
timeout and guarded by the circuit breaker; any failure is raised as a
`PolicyError` and never cached. When the engine reports a new revision, the
cache is emptied: no answer of an older policy is served again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from types import TracebackType

from policy_client.breaker import CircuitBreaker
from policy_client.cache import DecisionCache
from policy_client.engines import Engine, build_engine
from policy_client.errors import CircuitOpen, PolicyError, PolicyTimeout
from policy_client.model import Decision, PolicyRequest
from policy_client.settings import ClientSettings


class PolicyClient:
    def __init__(
        self,
        settings: ClientSettings,
        engine: Engine | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.engine = engine if engine is not None else build_engine(settings.engine)
        self.timeout = settings.timeout
        self.cache = DecisionCache(settings.allow_ttl, settings.deny_ttl, settings.max_entries, clock)
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_reset, clock)
        self.calls = 0
        self._revision = self.engine.revision
        self._inflight: dict[Hashable, asyncio.Task[Decision]] = {}

    async def check(self, request: PolicyRequest, budget: float | None = None) -> Decision:
        """The decision for `request`, from the cache or the engine; PolicyError when there is none.

        `budget` (seconds) can only shorten the client's timeout, e.g. to a call's remaining deadline.
        """
        revision = self.engine.revision
        if revision != self._revision:
            self.cache.clear()
            self._revision = revision
        key = (request, revision)
        decision = self.cache.get(key)
        if decision is not None:
            return decision
        limit = self.timeout if budget is None else min(budget, self.timeout)
        if self.engine.immediate:
            self.calls += 1
            decision = await self.engine.evaluate(request, limit)
            self._store(key, decision)
            return decision
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fetch(key, request, limit))
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._settle(key, done))
            return await asyncio.shield(task)
        try:
            async with asyncio.timeout(max(limit, 0.0)):
                return await asyncio.shield(task)
        except TimeoutError:
            raise PolicyTimeout(f"no policy decision within {limit * 1000:.0f} ms") from None

    async def _fetch(self, key: Hashable, request: PolicyRequest, limit: float) -> Decision:
        if not self.breaker.allow():
            raise CircuitOpen(
                f"policy engine failing; not asked again for {self.breaker.retry_in():.1f} s (circuit breaker open)"
            )
        self.calls += 1
        try:
            async with asyncio.timeout(max(limit, 0.0)):
                decision = await self.engine.evaluate(request, limit)
        except TimeoutError:
            if limit < self.timeout:
                self.breaker.abandon()  # the caller's deadline was short; the engine is not to blame
            else:
                self.breaker.failure()
            raise PolicyTimeout(f"no policy decision within {limit * 1000:.0f} ms") from None
        except PolicyError:
            self.breaker.failure()
            raise
        except asyncio.CancelledError:
            self.breaker.abandon()
            raise
        self.breaker.success()
        self._store(key, decision)
        return decision

    def _store(self, key: Hashable, decision: Decision) -> None:
        if decision.revision and decision.revision != self._revision:
            return  # decided by another revision than the key names; the next check sees the new one
        self.cache.put(key, decision)

    def _settle(self, key: Hashable, task: asyncio.Task[Decision]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved here, so an error nobody awaited any more is not reported as lost

    async def start(self) -> None:
        await self.engine.start()

    async def aclose(self) -> None:
        for task in list(self._inflight.values()):
            task.cancel()
        self._inflight.clear()
        await self.engine.aclose()

    async def __aenter__(self) -> PolicyClient:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
