"""The local rules engine, as a table: who may do what on which resource, and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from policy_client import AddHeader, PolicyRequest, Principal, RulesError
from policy_client.patterns import GlobSet
from policy_client.rules import RuleSet, load_rules

RULES = b"""
rules:
  - name: suspended
    effect: deny
    roles: [suspended]
    actions: ["**"]
    reason: account suspended
  - name: pharmacists-refill
    effect: allow
    roles: [pharmacist]
    actions: ["hms.pharmacy.v1.Pharmacy/*"]
    headers: {X-Gov-Rule: refill}
    cache_ttl: 250ms
  - name: patients-own-prescriptions
    effect: allow
    roles: [patient]
    actions: ["GET prescriptions"]
    resources: ["/v1/prescriptions/*"]
  - name: no-bulk-export
    effect: deny
    actions: ["GET prescriptions"]
    resources: ["/v1/prescriptions/export"]
  - name: service-accounts
    effect: allow
    subjects: ["svc-*"]
    actions: ["GET health", "GET status"]
  - name: acme-tenant-admin
    effect: allow
    roles: [admin]
    attributes: {tenant: "acme*"}
    actions: ["**"]
    resources: ["/admin/**"]
  - name: public-ballots
    effect: allow
    subjects: [anonymous]
    actions: ["GET ballots"]
  - name: auditors
    effect: allow
    roles: [auditor]
    actions: ["hms.pharmacy.v1.Pharmacy/Get?"]
    headers: {x-audit: "yes"}
    cache_ttl: 1s
"""


def ask(subject: str, roles: tuple[str, ...], action: str, resource: str = "/", **attributes: str) -> PolicyRequest:
    return PolicyRequest(Principal(subject, roles, tuple(attributes.items())), action, resource)


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return RuleSet.parse(RULES, "rules.yaml")


@pytest.mark.parametrize(
    ("request_", "allow", "reason"),
    [
        (ask("ann", ("pharmacist",), "hms.pharmacy.v1.Pharmacy/Refill"), True, "allowed by rule pharmacists-refill"),
        (ask("ann", ("pharmacist",), "hms.pharmacy.v1.Pharmacy/Refill/Extra"), False, "no rule allows"),
        (ask("ann", ("pharmacist",), "hms.pharmacy.v2.Pharmacy/Refill"), False, "no rule allows"),
        (ask("ann", ("pharmacist", "suspended"), "hms.pharmacy.v1.Pharmacy/Refill"), False, "account suspended"),
        (ask("pat", ("patient",), "hms.pharmacy.v1.Pharmacy/Refill"), False, "no rule allows"),
        (ask("pat", ("patient",), "GET prescriptions", "/v1/prescriptions/RX-42"), True, "patients-own"),
        (ask("pat", ("patient",), "GET prescriptions", "/v1/prescriptions/RX-42/history"), False, "no rule allows"),
        (ask("pat", ("patient",), "POST prescriptions", "/v1/prescriptions/RX-42"), False, "no rule allows"),
        (ask("pat", ("patient",), "GET prescriptions", "/v1/prescriptions/export"), False, "no-bulk-export"),
        (ask("svc-billing", (), "GET health"), True, "service-accounts"),
        (ask("svcbilling", (), "GET health"), False, "no rule allows"),
        (ask("root", ("admin",), "DELETE users", "/admin/users/7", tenant="acme-eu"), True, "acme-tenant-admin"),
        (ask("root", ("admin",), "DELETE users", "/admin/users/7", tenant="globex"), False, "no rule allows"),
        (ask("root", ("admin",), "DELETE users", "/admin/users/7"), False, "no rule allows"),
        (ask("root", ("admin",), "DELETE users", "/users/7", tenant="acme"), False, "no rule allows"),
        (ask("anonymous", (), "GET ballots"), True, "public-ballots"),
        (ask("anonymous", (), "GET ballots "), False, "no rule allows"),
        (ask("anonymous", (), "hms.pharmacy.v1.Pharmacy/Refill"), False, "no rule allows"),
        (ask("aud", ("auditor",), "hms.pharmacy.v1.Pharmacy/GetX"), True, "auditors"),
        (ask("aud", ("auditor",), "hms.pharmacy.v1.Pharmacy/Get/"), False, "no rule allows"),
    ],
)
def test_rules_table(rules: RuleSet, request_: PolicyRequest, allow: bool, reason: str) -> None:
    decision = rules.evaluate(request_)
    assert decision.allow is allow
    assert reason in decision.reason
    assert decision.revision == rules.revision


def test_default_deny_names_the_action_and_resource(rules: RuleSet) -> None:
    decision = rules.evaluate(ask("pat", ("patient",), "DELETE everything", "/v1/x"))
    assert decision.reason == "no rule allows DELETE everything on /v1/x"
    assert not decision.obligations


def test_allow_carries_obligations_and_ttl_and_a_deny_none(rules: RuleSet) -> None:
    allowed = rules.evaluate(ask("ann", ("pharmacist",), "hms.pharmacy.v1.Pharmacy/Refill"))
    assert allowed.obligations == (AddHeader("x-gov-rule", "refill"),)
    assert allowed.ttl == 0.25
    denied = rules.evaluate(ask("ann", ("pharmacist", "suspended"), "hms.pharmacy.v1.Pharmacy/Refill"))
    assert denied.obligations == () and denied.ttl is None


def test_several_allows_merge_obligations_and_take_the_shortest_ttl(rules: RuleSet) -> None:
    decision = rules.evaluate(ask("x", ("pharmacist", "auditor"), "hms.pharmacy.v1.Pharmacy/GetX"))
    assert decision.allow and decision.reason == "allowed by rule pharmacists-refill"
    assert decision.obligations == (AddHeader("x-gov-rule", "refill"), AddHeader("x-audit", "yes"))
    assert decision.ttl == 0.25


def test_revision_is_the_content_hash() -> None:
    assert RuleSet.parse(RULES).revision == RuleSet.parse(RULES).revision
    assert RuleSet.parse(RULES).revision != RuleSet.parse(RULES + b"\n").revision
    assert RuleSet.parse(RULES).revision.startswith("sha256:")


def test_empty_file_denies_everything() -> None:
    decision = RuleSet.parse(b"").evaluate(ask("root", ("admin",), "GET x"))
    assert not decision.allow


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (b"rules: [{effect: permit, actions: [x]}]", "rules.yaml: rules[0].effect: expected 'allow' or 'deny'"),
        (b"rules: [{effect: allow}]", "rules.yaml: rules[0].actions: required key is missing"),
        (b"rules: [{effect: allow, actions: [x], role: [a]}]", "rules.yaml: rules[0].role: unknown key"),
        (b"rules: [{effect: allow, actions: [x], roles: []}]", "rules.yaml: rules[0].roles:"),
        (b"rules: [{effect: deny, actions: [x], headers: {a: b}}]", "a deny rule cannot have them"),
        (b"rules: [{effect: allow, actions: [x], cache_ttl: soon}]", "expected a duration"),
        (b"rules: [{effect: allow, actions: [x]}]\nrule: 1", "rules.yaml: rule: unknown key"),
        (b"rules: [effect: allow", "rules.yaml: invalid YAML at line"),
    ],
)
def test_invalid_rules_name_the_place(text: bytes, problem: str) -> None:
    with pytest.raises(RulesError) as caught:
        RuleSet.parse(text, "rules.yaml")
    assert any(p.startswith(problem) or problem in p for p in caught.value.problems), caught.value.problems


def test_missing_file_is_a_rules_error(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read the rules file"):
        load_rules(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("patterns", "text", "matches"),
    [
        (("a/*",), "a/b", True),
        (("a/*",), "a/b/c", False),
        (("a/**",), "a/b/c", True),
        (("**",), "", True),
        (("a?c",), "abc", True),
        (("a?c",), "a/c", False),
        (("x.y",), "xzy", False),
        (("GET refill", "POST *"), "POST refill", True),
        (("GET refill",), "GET refills", False),
    ],
)
def test_globs(patterns: tuple[str, ...], text: str, matches: bool) -> None:
    assert GlobSet(patterns).matches(text) is matches
