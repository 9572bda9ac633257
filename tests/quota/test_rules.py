"""Which rules a call meets and the key it is counted by: tables over key parts and matches."""

from __future__ import annotations

from typing import Any

import pytest

from edge.pipeline.quota.rules import RuleSet
from tests.quota.rules import call, rule


@pytest.mark.parametrize(
    ("key", "made", "expected"),
    [
        ("subject", {"subject": "alice"}, "alice"),
        ("subject", {}, "anon@203.0.113.7"),
        ("client_ip", {"subject": "alice", "ip": "2001:db8::1"}, "2001:db8::1"),
        ("route", {}, "refill"),
        ("operation", {"operation": "hms.pharmacy.v1.Pharmacy/Refill"}, "hms.pharmacy.v1.Pharmacy/Refill"),
        ("claim:tenant", {"subject": "a", "claims": {"tenant": "va-north"}}, "va-north"),
        ("claim:tenant", {"subject": "a", "claims": {"tenant": 7}}, "7"),
        ("claim:groups", {"subject": "a", "claims": {"groups": ["x", "y"]}}, "x,y"),
        ("claim:tenant", {"subject": "a"}, None),
        ("claim:tenant", {}, None),
        ("header:x-api-key", {"headers": {"x-api-key": "k-1"}}, "k-1"),
        ("header:x-api-key", {"headers": {"x-api-key-bin": "k-1"}}, None),
        (["subject", "route"], {"subject": "auth0|42"}, "auth0%7C42|refill"),
        (["subject", "header:x-api-key"], {"subject": "a"}, None),
        ("header:x-long", {"headers": {"x-long": "v" * 500}}, "h:"),
    ],
)
def test_key_parts(key: Any, made: dict[str, Any], expected: str | None) -> None:
    got = rule(key=key).key(call(**made))
    if expected == "h:":
        assert got is not None and got.startswith("h:") and len(got) == 34, "long values are hashed, not kept"
    else:
        assert got == expected


@pytest.mark.parametrize(
    ("match", "made", "applies"),
    [
        ({}, {}, True),
        ({"routes": ["refill"]}, {}, True),
        ({"routes": ["ballots"]}, {}, False),
        ({"operations": ["hms.pharmacy.v1.Pharmacy/Refill"]}, {"operation": "hms.pharmacy.v1.Pharmacy/Refill"}, True),
        ({"operations": ["hms.pharmacy.v1.Pharmacy/Refill"]}, {}, False),
        ({"roles": ["veteran"]}, {"subject": "a", "roles": ("clerk", "veteran")}, True),
        ({"roles": ["veteran"]}, {"subject": "a", "roles": ("clerk",)}, False),
        ({"roles": ["veteran"]}, {}, False),
        ({"ingress": ["grpc"]}, {"ingress": "grpc"}, True),
        ({"ingress": ["grpc"]}, {}, False),
        ({"routes": ["ballots"]}, {"route_quota": ("r",)}, True),
        ({"routes": ["ballots"], "ingress": ["grpc"]}, {"route_quota": ("r",)}, False),
        ({"routes": ["refill"], "operations": ["other"]}, {}, False),
    ],
)
def test_matches(match: dict[str, Any], made: dict[str, Any], applies: bool) -> None:
    rules = RuleSet([rule(match=match)])
    assert bool(rules.select(call(**made))) is applies


def test_selection_is_cached_per_route_and_follows_a_reload() -> None:
    rules = RuleSet([rule(match={"routes": ["other"]})])
    assert rules.select(call()) == ()
    assert rules.select(call()) == (), "same name, a new spec: looked up again, same answer"
    reloaded = call(route_quota=("r",))
    assert reloaded.route is not None and reloaded.route.name == "refill"
    assert rules.select(reloaded) == rules.rules, "the reloaded route names the rule"
