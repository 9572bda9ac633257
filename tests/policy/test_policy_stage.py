"""The policy stage on its own: what it asks (action, resource, principal) for each kind of route and call."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from edge.call import Call, Metadata, Peer, Principal
from edge.config.policy import Policy
from edge.config.routes import RouteSpec
from edge.pipeline.policy import PolicyStage, action_of
from edge.routes import RouteTable
from policy_client import Decision, PolicyRequest
from policy_client import Principal as PolicyPrincipal

ROUTES = [
    {
        "name": "refill",
        "match": {"path": "/v1/prescriptions/refill"},
        "operation": "hms.pharmacy.v1.Pharmacy/Refill",
        "upstream": "a",
    },
    {"name": "ballots", "match": {"prefix": "/v1/ballots"}, "upstream": "a"},
    {"match": {"grpc": "hms.pharmacy.v1.Pharmacy"}, "upstream": "grpc://a:1"},
]
TABLE = RouteTable.from_specs([RouteSpec.model_validate(r) for r in ROUTES])


def http_call(method: str, path: str) -> Call:
    match = TABLE.match_http(method, "edge.test", path)
    assert match is not None
    call = Call("http", method, path, Peer("127.0.0.1"), Metadata(), route=match.route)
    call.decisions["operation"] = match.operation
    return call


def grpc_call(path: str) -> Call:
    match = TABLE.match_grpc(path)
    assert match is not None
    call = Call("grpc", "POST", path, Peer("127.0.0.1"), Metadata(), route=match.route)
    call.decisions["operation"] = match.operation
    return call


@pytest.mark.parametrize(
    ("call", "action"),
    [
        (http_call("GET", "/v1/prescriptions/refill"), "hms.pharmacy.v1.Pharmacy/Refill"),
        (http_call("POST", "/v1/prescriptions/refill"), "hms.pharmacy.v1.Pharmacy/Refill"),
        (http_call("GET", "/v1/ballots/7"), "GET ballots"),
        (http_call("HEAD", "/v1/ballots/7"), "GET ballots"),
        (http_call("DELETE", "/v1/ballots/7"), "DELETE ballots"),
        (grpc_call("/hms.pharmacy.v1.Pharmacy/Refill"), "hms.pharmacy.v1.Pharmacy/Refill"),
        (grpc_call("/hms.pharmacy.v1.Pharmacy/Cancel"), "hms.pharmacy.v1.Pharmacy/Cancel"),
    ],
    ids=lambda value: value if isinstance(value, str) else f"{value.ingress} {value.method} {value.path}",
)
def test_actions(call: Call, action: str) -> None:
    assert action_of(call) == action


class RecordingChecker:
    def __init__(self) -> None:
        self.asked: list[tuple[PolicyRequest, float | None]] = []

    async def check(self, request: PolicyRequest, budget: float | None = None) -> Decision:
        self.asked.append((request, budget))
        return Decision(True, "ok", "r1")

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


async def test_request_from_principal_claims_and_deadline(tmp_path: Path) -> None:
    checker = RecordingChecker()
    stage = PolicyStage(checker, Policy(rules=tmp_path / "rules.yaml", attributes=("tenant", "groups", "absent")))
    call = grpc_call("/hms.pharmacy.v1.Pharmacy/Refill")
    claims: dict[str, Any] = {"tenant": "acme", "groups": ["a", "b"], "secret": "not passed"}
    call.principal = Principal("alice", ("pharmacist",), claims=claims)
    call.deadline = time.monotonic() + 0.5
    assert await stage(call) is None
    request, budget = checker.asked[0]
    assert request == PolicyRequest(
        PolicyPrincipal("alice", ("pharmacist",), (("tenant", "acme"), ("groups", "a,b"))),
        "hms.pharmacy.v1.Pharmacy/Refill",
        "/hms.pharmacy.v1.Pharmacy/Refill",
    )
    assert budget is not None and 0.3 < budget <= 0.5


async def test_no_principal_is_anonymous(tmp_path: Path) -> None:
    checker = RecordingChecker()
    stage = PolicyStage(checker, Policy(rules=tmp_path / "rules.yaml"))
    assert await stage(http_call("GET", "/v1/ballots/7")) is None
    request, budget = checker.asked[0]
    assert request.principal == PolicyPrincipal("anonymous") and budget is None


class CachingChecker(RecordingChecker):
    """Hands back one cached `Decision` per request, as the client's cache does, until `revise` makes a new one."""

    def __init__(self) -> None:
        super().__init__()
        self.decisions: dict[PolicyRequest, Decision] = {}
        self.revision = "r1"

    async def check(self, request: PolicyRequest, budget: float | None = None) -> Decision:
        self.asked.append((request, budget))
        return self.decisions.setdefault(request, Decision(True, "ok", self.revision, cached=True))

    def revise(self, revision: str) -> None:
        self.decisions.clear()
        self.revision = revision


async def test_records_and_principals_follow_the_decision_and_principal_objects(tmp_path: Path) -> None:
    checker = CachingChecker()
    stage = PolicyStage(checker, Policy(rules=tmp_path / "rules.yaml", attributes=("tenant",)))
    alice = Principal("alice", ("pharmacist",), claims={"tenant": "acme"})
    bob = Principal("bob", ("veteran",), claims={"tenant": "va"})
    records = []
    for principal, path in [(alice, "/v1/ballots/1"), (alice, "/v1/ballots/1"), (bob, "/v1/ballots/1")]:
        call = http_call("GET", path)
        call.principal = principal
        assert await stage(call) is None
        records.append(call.decisions["policy"])
    asked = [request.principal for request, _ in checker.asked]
    assert asked == [
        PolicyPrincipal("alice", ("pharmacist",), (("tenant", "acme"),)),
        PolicyPrincipal("alice", ("pharmacist",), (("tenant", "acme"),)),
        PolicyPrincipal("bob", ("veteran",), (("tenant", "va"),)),
    ]
    assert records[0] is records[1]  # one cached decision, one record
    assert records[2] is not records[0] and records[2]["resource"] == "/v1/ballots/1"
    checker.revise("r2")
    call = http_call("GET", "/v1/ballots/1")
    call.principal = alice
    await stage(call)
    assert call.decisions["policy"]["revision"] == "r2"
    assert call.decisions["policy"] == {**records[0], "revision": "r2"}
