"""The `quota:` section of `edge.yaml` and the per-route `quota:` override of the routes file.

A rule says which calls it counts (`match`), what it counts them by (`key`),
how many it allows (`limit` per `period`, `burst`), with which algorithm, and
what to do when the shared store is down. Rules are checked at load: names are
unique, key parts are known, a sliding-window log is kept small, and a rule
that runs before authentication does not ask for anything only identity knows.
The pipeline's quota package turns these models into stages.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from edge.config.base import Duration, Frozen

if TYPE_CHECKING:
    from edge.config.routes import RoutesFile

KEY_PARTS = ("subject", "client_ip", "route", "operation")
KEY_PREFIXES = ("claim:", "header:")
IDENTITY_PARTS = ("subject",)
MAX_SLIDING_LIMIT = 10_000
Phase = Literal["pre_auth", "post_auth"]


class QuotaMatch(Frozen):
    """Which calls a rule counts; every list given must match (an empty list matches all)."""

    routes: tuple[str, ...] = Field(default=(), description="route names from the routes file")
    operations: tuple[str, ...] = Field(default=(), description="operations such as hms.pharmacy.v1.Pharmacy/Refill")
    roles: tuple[str, ...] = Field(default=(), description="the caller has at least one of these roles")
    ingress: tuple[Literal["http", "grpc"], ...] = ()


class QuotaRule(Frozen):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    match: QuotaMatch = QuotaMatch()
    key: tuple[str, ...] = Field(default=("subject",), min_length=1)
    limit: int = Field(ge=1)
    period: Duration = Field(gt=0)
    algorithm: Literal["gcra", "sliding"] = "gcra"
    burst: int | None = Field(default=None, ge=1, description="calls allowed at once (GCRA); default: limit")
    shadow: bool = Field(default=False, description="count and report, never deny")
    on_store_error: Literal["local", "allow", "deny"] = "local"
    phase: Phase | None = Field(default=None, description="default: pre_auth for a key by client_ip only")

    @field_validator("key", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("key")
    @classmethod
    def _known_parts(cls, parts: tuple[str, ...]) -> tuple[str, ...]:
        for part in parts:
            if part in KEY_PARTS:
                continue
            prefix = next((p for p in KEY_PREFIXES if part.startswith(p)), None)
            if prefix is None or len(part) == len(prefix):
                raise ValueError(
                    f"expected key parts from {', '.join(KEY_PARTS)}, claim:<name>, header:<name> (got {part!r})"
                )
        if len(set(parts)) != len(parts):
            raise ValueError("a key part is listed twice")
        return tuple(p.lower() if p.startswith("header:") else p for p in parts)

    @model_validator(mode="after")
    def _consistent(self) -> QuotaRule:
        if self.algorithm == "sliding":
            if self.burst is not None:
                raise ValueError("burst applies to gcra; a sliding-window log allows exactly limit per period")
            if self.limit > MAX_SLIDING_LIMIT:
                raise ValueError(
                    f"a sliding-window log keeps one entry per call: limit at most {MAX_SLIDING_LIMIT} (use gcra)"
                )
        if self.phase == "pre_auth" and self.needs_identity:
            raise ValueError("a pre_auth rule runs before identity: no subject or claim: key parts, no match.roles")
        return self

    @property
    def needs_identity(self) -> bool:
        return bool(self.match.roles) or any(p in IDENTITY_PARTS or p.startswith("claim:") for p in self.key)

    @property
    def resolved_phase(self) -> Phase:
        """pre_auth for rules keyed by the client address and needing nothing from identity."""
        if self.phase is not None:
            return self.phase
        return "pre_auth" if "client_ip" in self.key and not self.needs_identity else "post_auth"

    @property
    def capacity(self) -> int:
        return self.burst if self.burst is not None else self.limit


class Breaker(Frozen):
    failures: int = Field(default=3, ge=1, description="consecutive failures that open the breaker")
    open_for: Duration = Field(default=1.0, gt=0, description="how long to skip Redis before probing again")


class RedisOptions(Frozen):
    timeout: Duration = Field(default=0.05, gt=0, description="bound on one decision's round trip")
    pool_size: int = Field(default=32, ge=1)
    key_prefix: str = Field(default="edge:quota", min_length=1, pattern=r"^[^{}\s]+$")
    ca: Path | None = Field(default=None, description="CA bundle for rediss://")
    breaker: Breaker = Breaker()


class MemoryOptions(Frozen):
    max_keys: int = Field(default=1_000_000, ge=1, description="per rule; the least recently used key goes first")
    sweep_interval: Duration = Field(default=10.0, gt=0)


class Quota(Frozen):
    store: str = Field(default="memory", description="memory, redis://host:port/db or rediss://host:port/db")
    redis: RedisOptions = RedisOptions()
    memory: MemoryOptions = MemoryOptions()
    headers: Literal["always", "denied"] = Field(
        default="always", description="RateLimit-* headers on every reply, or only on 429s"
    )
    rules: tuple[QuotaRule, ...] = ()

    @field_validator("store")
    @classmethod
    def _store(cls, value: str) -> str:
        if value != "memory" and not value.startswith(("redis://", "rediss://")):
            raise ValueError(f"expected memory, redis://host:port/db or rediss://host:port/db (got {value!r})")
        return value

    @field_validator("rules")
    @classmethod
    def _unique(cls, rules: tuple[QuotaRule, ...]) -> tuple[QuotaRule, ...]:
        seen: set[str] = set()
        for rule in rules:
            if rule.name in seen:
                raise ValueError(f"duplicate rule name {rule.name!r}")
            seen.add(rule.name)
        return rules


class RouteQuota(Frozen):
    """Per-route override: rules named here count this route even when their match does not name it."""

    rules: tuple[Annotated[str, Field(min_length=1)], ...] = ()


def check_quota_references(
    routes: RoutesFile, quota: Quota, path: Path, config_path: Path | str = "edge.yaml"
) -> list[str]:
    """Cross-references the models cannot see alone: route overrides naming rules, rules naming routes."""
    known_rules = {rule.name for rule in quota.rules}
    expected = ", ".join(sorted(known_rules)) or "none defined"
    problems = [
        f"{path}: routes[{index}].quota.rules: unknown quota rule {name!r} (expected one of: {expected})"
        for index, route in enumerate(routes.routes)
        if route.quota is not None
        for name in route.quota.rules
        if name not in known_rules
    ]
    route_names = {route.display_name for route in routes.routes}
    problems += [
        f"{config_path}: quota.rules[{index}].match.routes: unknown route {name!r} (not in {path})"
        for index, rule in enumerate(quota.rules)
        for name in rule.match.routes
        if name not in route_names
    ]
    return problems
