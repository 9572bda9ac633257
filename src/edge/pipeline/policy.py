"""The policy stage: may this principal do this operation on this resource? Asked the same way for both doors.

It builds a `PolicyRequest` from the `Call` alone — the principal (anonymous
until identity has set one), the action (the route's operation, such as
`hms.pharmacy.v1.Pharmacy/Refill`, or `GET <route name>` for a plain HTTP
route, HEAD counting as GET) and the resource (the canonical path) — and asks
a `PolicyChecker` (in the gateway, a `policy_client.PolicyClient`; this
module imports no transport). An allow goes on, after the decision's
obligations (headers to add upstream) are applied; a deny is 403 /
PERMISSION_DENIED with the reason, or the configured text that hides it. When
no decision can be made, the route's (or the section's) `on_error` says:
`deny` is 503 / UNAVAILABLE with a clear message, `allow` goes on, marked
fail-open. `call.decisions["policy"]` records decision, reason, revision,
cache hit or miss, and mode (live, cache, fail-open, fail-closed, skip).

Two things are kept between calls, because a caller's token and its
decision are cached upstream of this stage and come back as the same
objects: the policy view of each identity `Principal` (a frozen dataclass
with its attributes, ~1 us to build), and the record of each cached
`Decision`. Both are looked up by the object's identity and hold the object
itself, so an entry can never answer for another object. A shared record is
never changed after it is made; the audit writer only reads it (and, in one
batch, sends it once).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, TypeVar

from edge.call import Call, Denial
from edge.call import Principal as CallPrincipal
from edge.config.policy import OnError, Policy, RoutePolicy
from edge.errors import Status
from policy_client.errors import PolicyError
from policy_client.model import ANONYMOUS, Decision, PolicyRequest, Principal

UNAVAILABLE_MESSAGE = "the policy service could not decide, so the call was not allowed; try again later"
DENIED_INFO = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "POLICY_DENIED", "domain": "edge"}
UNAVAILABLE_INFO = {
    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
    "reason": "POLICY_UNAVAILABLE",
    "domain": "edge",
}
MEMO_LIMIT = 4096  # entries per memo; it starts over when full (callers and decisions are far fewer)


class PolicyChecker(Protocol):
    async def check(self, request: PolicyRequest, budget: float | None = None) -> Decision: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


class PolicyStage:
    name = "policy"

    def __init__(self, checker: PolicyChecker, config: Policy) -> None:
        self.checker = checker
        self.config = config
        self._attributes = config.attributes
        self._principals: dict[int, tuple[CallPrincipal, Principal]] = {}
        self._records: dict[int, tuple[Decision, dict[str, Any]]] = {}

    async def start(self) -> None:
        await self.checker.start()

    async def aclose(self) -> None:
        await self.checker.aclose()

    async def __call__(self, call: Call) -> Denial | None:
        route = call.route
        assert route is not None
        settings = route.spec.policy if route.spec is not None else None
        if settings is not None and settings.skip:
            call.decisions["policy"] = {"mode": "skip"}
            return None
        request = PolicyRequest(self._principal(call.principal), action_of(call), call.path)
        remaining = call.remaining()
        try:
            decision = await self.checker.check(request, remaining)
        except PolicyError as error:
            return self._no_decision(call, request, settings, str(error))
        call.decisions["policy"] = self._record(decision, request)
        if not decision.allow:
            message = _first(settings.deny_message if settings else None, self.config.deny_message)
            return Denial(
                Status.PERMISSION_DENIED, message or decision.reason or "permission denied", details=(DENIED_INFO,)
            )
        for obligation in decision.obligations:
            call.metadata.set(obligation.name, obligation.value)
        return None

    def _no_decision(
        self, call: Call, request: PolicyRequest, settings: RoutePolicy | None, error: str
    ) -> Denial | None:
        on_error: OnError = settings.on_error if settings is not None and settings.on_error else self.config.on_error
        allow = on_error == "allow"
        call.decisions["policy"] = {
            "decision": "allow" if allow else "deny",
            "reason": error,
            "revision": None,
            "cache": "miss",
            "mode": "fail-open" if allow else "fail-closed",
            "action": request.action,
            "resource": request.resource,
        }
        if allow:
            return None
        return Denial(Status.UNAVAILABLE, UNAVAILABLE_MESSAGE, details=(UNAVAILABLE_INFO,))

    def _principal(self, principal: CallPrincipal | None) -> Principal:
        if principal is None:
            return ANONYMOUS
        seen = self._principals.get(id(principal))
        if seen is not None and seen[0] is principal:
            return seen[1]
        view = Principal(principal.subject, tuple(principal.roles), _attributes(principal.claims, self._attributes))
        _remember(self._principals, principal, view)
        return view

    def _record(self, decision: Decision, request: PolicyRequest) -> dict[str, Any]:
        """The audit record of a decision; a cached decision's is made once (it answers one request: its cache key)."""
        if decision.cached:
            seen = self._records.get(id(decision))
            if seen is not None and seen[0] is decision:
                record = seen[1]
                if record["action"] == request.action and record["resource"] == request.resource:
                    return record
        record = {
            "decision": "allow" if decision.allow else "deny",
            "reason": decision.reason,
            "revision": decision.revision,
            "cache": "hit" if decision.cached else "miss",
            "mode": "cache" if decision.cached else "live",
            "action": request.action,
            "resource": request.resource,
        }
        if decision.cached:
            _remember(self._records, decision, record)
        return record


Held = TypeVar("Held")
Made = TypeVar("Made")


def _remember(memo: dict[int, tuple[Held, Made]], held: Held, made: Made) -> None:
    if len(memo) >= MEMO_LIMIT:
        memo.clear()
    memo[id(held)] = (held, made)


def action_of(call: Call) -> str:
    """The operation for governed routes (gRPC, transcoded, or named by `operation:`), else `METHOD route`."""
    route = call.route
    assert route is not None
    if route.operation is not None or route.kind == "grpc":
        operation = call.decisions.get("operation")
        return str(operation) if operation else route.operation or call.path.lstrip("/")
    method = "GET" if call.method == "HEAD" else call.method
    return f"{method} {route.name}"


def _attributes(claims: Mapping[str, Any], names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    found = []
    for name in names:
        value = claims.get(name)
        if value is None:
            continue
        if isinstance(value, list | tuple):
            value = ",".join(str(v) for v in value)
        found.append((name, str(value)))
    return tuple(found)


def _first(*values: str | None) -> str | None:
    return next((v for v in values if v), None)
