"""The wire form of the governance service: compiled from the .proto at import, round trips, safe defaults."""

from __future__ import annotations

import pytest

from policy_client import AddHeader, Decision, PolicyRequest, Principal, proto


@pytest.mark.parametrize(
    "decision",
    [
        Decision(True, "ok", "sha256:1", 1.5, (AddHeader("x-a", "1"), AddHeader("x-b", "2"))),
        Decision(False, "no", "sha256:2", 0.0),
        Decision(False, "", ""),
    ],
)
def test_decisions_round_trip(decision: Decision) -> None:
    wire = proto.CheckResponse.FromString(proto.response_message(decision).SerializeToString())
    assert proto.decision_from_message(wire) == decision


def test_requests_round_trip_with_attributes_in_a_stable_order() -> None:
    request = PolicyRequest(
        Principal("alice", ("pharmacist", "auditor"), (("issuer", "dev"), ("tenant", "acme"))),
        "hms.pharmacy.v1.Pharmacy/Refill",
        "/hms.pharmacy.v1.Pharmacy/Refill",
        (("ingress", "grpc"),),
    )
    wire = proto.CheckRequest.FromString(proto.request_message(request).SerializeToString())
    assert proto.request_from_message(wire) == request


def test_an_obligation_this_client_does_not_know_turns_an_allow_into_a_deny() -> None:
    message = proto.CheckResponse(effect=proto.ALLOW, reason="ok", revision="r")
    message.obligations.add()  # a kind from a newer service: the oneof is unset here
    decision = proto.decision_from_message(message)
    assert not decision.allow and "cannot fulfil" in decision.reason


def test_no_effect_is_a_deny() -> None:
    decision = proto.decision_from_message(proto.CheckResponse(revision="r"))
    assert not decision.allow and decision.reason == "the policy service gave no effect"


def test_the_messages_live_in_a_private_pool() -> None:
    from google.protobuf import descriptor_pool

    assert proto.CheckRequest.DESCRIPTOR.file.pool is not descriptor_pool.Default()
    assert proto.CheckRequest.DESCRIPTOR.full_name == "hms.gov.v1.CheckRequest"
