"""Quota rules compiled for the hot path: which rules a call meets, and the key it is counted by.

Everything that can be worked out at load is: each key part becomes a small
function of the `Call`, the `RateLimit-Policy` item is a ready string, and the
rules a route meets (by route name, operation, ingress and the route's own
`quota.rules`) are cached per route, so a call only checks roles.

Key parts that are missing decide what happens to the rule for that call:
`subject` falls back to the client address (`anon@<ip>`: anonymous callers are
counted per address), while a missing `claim:` or `header:` value skips the
rule for that call (it is recorded as skipped), since no sensible bucket exists.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge.call import Call
from edge.config.quota import Phase, QuotaRule
from edge.pipeline.quota.gcra import Gcra
from edge.pipeline.quota.sliding import SlidingLog

if TYPE_CHECKING:
    from edge.routes import Route

KeyPart = Callable[[Call], str | None]
MAX_KEY_VALUE = 200
CACHE_LIMIT = 4096


@dataclass(frozen=True, slots=True, eq=False)
class Rule:
    name: str
    algorithm: Gcra | SlidingLog
    limit: int
    period: float
    capacity: int
    capacity_text: str
    shadow: bool
    on_store_error: str
    phase: Phase
    policy: str
    store_name: str
    routes: frozenset[str]
    operations: frozenset[str]
    roles: frozenset[str]
    ingress: frozenset[str]
    parts: tuple[KeyPart, ...]
    key: KeyPart  # the bucket a call counts against, or None when a key part is missing

    def meets_route(self, route_name: str, operation: str | None, ingress: str, named: bool) -> bool:
        if self.ingress and ingress not in self.ingress:
            return False
        if named:
            return True
        if self.routes and route_name not in self.routes:
            return False
        return not self.operations or operation in self.operations


def compile_rule(rule: QuotaRule) -> Rule:
    algorithm: Gcra | SlidingLog
    if rule.algorithm == "sliding":
        algorithm = SlidingLog(rule.limit, rule.period)
    else:
        algorithm = Gcra(rule.period / rule.limit, rule.capacity)
    policy = f"{rule.limit};w={_seconds(rule.period)}"
    if rule.algorithm == "gcra" and rule.capacity != rule.limit:
        policy += f";burst={rule.capacity}"
    parts = tuple(_key_part(part) for part in rule.key)
    return Rule(
        name=rule.name,
        algorithm=algorithm,
        limit=rule.limit,
        period=rule.period,
        capacity=rule.capacity,
        capacity_text=str(rule.capacity),
        shadow=rule.shadow,
        on_store_error=rule.on_store_error,
        phase=rule.resolved_phase,
        policy=policy,
        store_name=f"{rule.name}:{rule.algorithm[0]}",
        routes=frozenset(rule.match.routes),
        operations=frozenset(rule.match.operations),
        roles=frozenset(rule.match.roles),
        ingress=frozenset(rule.match.ingress),
        parts=parts,
        key=parts[0] if len(parts) == 1 else _joined_key(parts),
    )


def _joined_key(parts: tuple[KeyPart, ...]) -> KeyPart:
    """Several parts as one key, `|`-separated; `%` and `|` inside a value are escaped."""

    def key(call: Call) -> str | None:
        values = []
        for part in parts:
            value = part(call)
            if value is None:
                return None
            values.append(value.replace("%", "%25").replace("|", "%7C") if "|" in value or "%" in value else value)
        return "|".join(values)

    return key


def _seconds(period: float) -> str:
    return str(int(period)) if period == int(period) else f"{period:g}"


def _bounded(value: str) -> str:
    if len(value) <= MAX_KEY_VALUE:
        return value
    return "h:" + hashlib.blake2b(value.encode(), digest_size=16).hexdigest()


def _subject(call: Call) -> str | None:
    principal = call.principal
    if principal is None:
        return "anon@" + call.peer.address
    subject = principal.subject
    return subject if len(subject) <= MAX_KEY_VALUE else _bounded(subject)


def _client_ip(call: Call) -> str | None:
    return call.peer.address


def _route(call: Call) -> str | None:
    return call.route.name if call.route is not None else None


def _operation(call: Call) -> str | None:
    operation = call.decisions.get("operation")
    return str(operation) if operation else _route(call)


def _claim(name: str) -> KeyPart:
    def claim(call: Call) -> str | None:
        principal = call.principal
        value = principal.claims.get(name) if principal is not None else None
        if value is None or value == "":
            return None
        if isinstance(value, list | tuple):
            value = ",".join(str(v) for v in value)
        return _bounded(str(value))

    return claim


def _header(name: str) -> KeyPart:
    def header(call: Call) -> str | None:
        value = call.metadata.get(name)
        if value is None or value == "":
            return None
        return _bounded(value if isinstance(value, str) else value.hex())

    return header


_PARTS: dict[str, KeyPart] = {
    "subject": _subject,
    "client_ip": _client_ip,
    "route": _route,
    "operation": _operation,
}


def _key_part(part: str) -> KeyPart:
    if part.startswith("claim:"):
        return _claim(part.removeprefix("claim:"))
    if part.startswith("header:"):
        return _header(part.removeprefix("header:"))
    return _PARTS[part]


Check = tuple[Rule, str]  # one rule to decide for one call, and the key it counts against (a plain tuple: cheap)


class RuleSet:
    """The rules of one phase, and which of them each route meets (cached per route)."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)
        self._uses_roles = any(rule.roles for rule in self.rules)
        self._everywhere = not any(rule.routes or rule.operations or rule.ingress for rule in self.rules)
        self._cache: dict[tuple[str, str | None, str], tuple[object, tuple[Rule, ...]]] = {}

    def __bool__(self) -> bool:
        return bool(self.rules)

    def select(self, call: Call) -> tuple[Rule, ...]:
        route = call.route
        if route is None:
            return ()
        rules = self.rules if self._everywhere else self._for_call(call, route)
        if not self._uses_roles or not rules:
            return rules
        principal = call.principal
        roles = frozenset(principal.roles) if principal is not None else frozenset()
        return tuple(rule for rule in rules if not rule.roles or not rule.roles.isdisjoint(roles))

    def _for_call(self, call: Call, route: Route) -> tuple[Rule, ...]:
        operation = call.decisions.get("operation")
        cache_key = (route.name, operation, call.ingress)
        hit = self._cache.get(cache_key)
        if hit is None or hit[0] is not route.spec:
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            named = route.spec.quota.rules if route.spec is not None and route.spec.quota is not None else ()
            hit = (route.spec, self._for_route(route.name, operation, call.ingress, frozenset(named)))
            self._cache[cache_key] = hit
        return hit[1]

    def _for_route(
        self, route_name: str, operation: str | None, ingress: str, named: frozenset[str]
    ) -> tuple[Rule, ...]:
        return tuple(
            rule for rule in self.rules if rule.meets_route(route_name, operation, ingress, rule.name in named)
        )
