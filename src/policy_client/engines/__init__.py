"""Engines answer one `PolicyRequest` each; `PolicyClient` adds the cache, timeout and breaker.

An engine is anything with the `Engine` shape. `revision` is the policy
revision the engine decides with now, as far as it knows (the local rules'
content hash; what the governance service last reported; "" when unknown),
and is part of every cache key. `budget` is the seconds the client waits for
the answer (the gRPC deadline, the HTTP timeout). `immediate` engines answer without I/O, so
the client calls them directly, with no timeout, breaker or in-flight sharing.
Transport modules (grpc, aiohttp) are imported only when their engine is built.
"""

from __future__ import annotations

from typing import Protocol

from policy_client.model import Decision, PolicyRequest
from policy_client.settings import EngineSettings, GovernanceService, LocalRules, Opa


class Engine(Protocol):
    @property
    def revision(self) -> str: ...

    @property
    def immediate(self) -> bool: ...

    async def evaluate(self, request: PolicyRequest, budget: float) -> Decision: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


def build_engine(settings: EngineSettings) -> Engine:
    if isinstance(settings, LocalRules):
        from policy_client.engines.local import LocalEngine

        return LocalEngine(settings.path, settings.watch_interval)
    if isinstance(settings, GovernanceService):
        from policy_client.engines.governance import GovernanceEngine

        return GovernanceEngine(settings)
    if isinstance(settings, Opa):
        from policy_client.engines.opa import OpaEngine

        return OpaEngine(settings)
    raise TypeError(f"unknown engine settings {type(settings).__name__}")
