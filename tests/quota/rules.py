"""Small builders the quota tests share: compiled rules, a clock to turn by hand, calls."""

from __future__ import annotations

from typing import Any

from edge.call import Call, Metadata, Peer, Principal
from edge.config.quota import QuotaRule
from edge.config.routes import RouteSpec
from edge.pipeline.quota.rules import Rule, compile_rule
from edge.routes import build_route


def rule(name: str = "r", **fields: Any) -> Rule:
    return compile_rule(QuotaRule.model_validate({"name": name, "limit": 10, "period": "1m", **fields}))


class Clock:
    """A clock the test moves: `clock.now += 86400`."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def call(
    route: str = "refill",
    *,
    ip: str = "203.0.113.7",
    subject: str | None = None,
    roles: tuple[str, ...] = (),
    claims: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    ingress: str = "http",
    operation: str | None = None,
    route_quota: tuple[str, ...] = (),
) -> Call:
    spec = RouteSpec.model_validate(
        {
            "name": route,
            "match": {"prefix": f"/{route}"},
            "upstream": "http://127.0.0.1:1",
            **({"quota": {"rules": list(route_quota)}} if route_quota else {}),
        }
    )
    made = Call(
        ingress="grpc" if ingress == "grpc" else "http",
        method="GET",
        path=f"/{route}",
        peer=Peer(ip),
        metadata=Metadata((headers or {}).items()),
        route=build_route(spec, 0),
    )
    made.decisions["operation"] = operation or route
    if subject is not None:
        made.principal = Principal(subject, roles=roles, claims=claims or {}, method="jwt")
    return made
