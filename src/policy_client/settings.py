"""How a `PolicyClient` is set up: which engine, and the timeout, cache and breaker around it.

Plain frozen dataclasses, so a service can build them in code and `edge` can
map its validated `policy` config section onto them; nothing here is read
from a file or checked again at call time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class LocalRules:
    """The embedded engine: a rules file, checked for changes every `watch_interval` seconds."""

    path: Path
    watch_interval: float = 1.0


@dataclass(frozen=True, slots=True)
class Tls:
    """Server verification (`ca`, system roots when None) and, with `cert` and `key`, a client certificate."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None


@dataclass(frozen=True, slots=True)
class GovernanceService:
    """The HMS-GOV `PolicyService` over gRPC; `tls=None` is plaintext (loopback and tests only).

    The service's revision is asked every `revision_poll` seconds (0: never),
    so cached decisions are dropped soon after the policy changes.
    """

    target: str
    tls: Tls | None = None
    revision_poll: float = 2.0


@dataclass(frozen=True, slots=True)
class Opa:
    """OPA's REST data API: `POST <url>/v1/data/<path>` with `{"input": ...}`."""

    url: str
    path: str
    tls: Tls | None = None
    token: str | None = None


EngineSettings = LocalRules | GovernanceService | Opa


@dataclass(frozen=True, slots=True)
class ClientSettings:
    engine: EngineSettings
    timeout: float = 0.2
    allow_ttl: float = 30.0
    deny_ttl: float = 5.0
    max_entries: int = 100_000
    breaker_failures: int = 5
    breaker_reset: float = 5.0
