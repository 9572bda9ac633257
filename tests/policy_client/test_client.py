"""PolicyClient: the decision cache, one call in flight per key, timeouts, the breaker, revisions.

A scripted engine stands in for a remote one so every call it gets is counted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from policy_client import (
    CircuitOpen,
    ClientSettings,
    Decision,
    LocalRules,
    PolicyClient,
    PolicyError,
    PolicyRequest,
    PolicyTimeout,
    Principal,
)
from tests.policy_client.polling import eventually

ALICE = PolicyRequest(Principal("alice", ("pharmacist",)), "hms.pharmacy.v1.Pharmacy/Refill", "/refill")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScriptedEngine:
    """Answers allow (or what `answer` says) after `delay`; counts calls; `fail` makes it raise."""

    immediate = False

    def __init__(self, delay: float = 0.0) -> None:
        self.revision = "r1"
        self.delay = delay
        self.calls = 0
        self.fail: Exception | None = None
        self.answer: Callable[[PolicyRequest], Decision] = lambda request: Decision(
            request.principal.subject == "alice", "scripted", self.revision
        )

    async def evaluate(self, request: PolicyRequest, budget: float) -> Decision:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        return self.answer(request)

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


def client(engine: ScriptedEngine, clock: Clock | None = None, **settings: float) -> PolicyClient:
    return PolicyClient(ClientSettings(LocalRules(Path("unused")), **settings), engine, clock or time.monotonic)  # type: ignore[arg-type]


async def test_a_cached_decision_makes_no_call() -> None:
    engine = ScriptedEngine()
    policy = client(engine)
    first = await policy.check(ALICE)
    assert first.allow and not first.cached
    for _ in range(5):
        again = await policy.check(ALICE)
        assert again.allow and again.cached
    assert engine.calls == 1


async def test_every_input_is_part_of_the_key() -> None:
    engine = ScriptedEngine()
    policy = client(engine)
    variants = [
        ALICE,
        PolicyRequest(Principal("bob", ("pharmacist",)), ALICE.action, ALICE.resource),
        PolicyRequest(Principal("alice", ("patient",)), ALICE.action, ALICE.resource),
        PolicyRequest(Principal("alice", ("pharmacist",), (("tenant", "acme"),)), ALICE.action, ALICE.resource),
        PolicyRequest(ALICE.principal, "hms.pharmacy.v1.Pharmacy/Cancel", ALICE.resource),
        PolicyRequest(ALICE.principal, ALICE.action, "/other"),
        PolicyRequest(ALICE.principal, ALICE.action, ALICE.resource, (("ingress", "grpc"),)),
    ]
    for request in variants:
        await policy.check(request)
    assert engine.calls == len(variants)
    for request in variants:
        assert (await policy.check(request)).cached
    assert engine.calls == len(variants)


async def test_allow_and_deny_have_their_own_ttls_and_the_hint_shortens_them() -> None:
    engine, clock = ScriptedEngine(), Clock()
    policy = client(engine, clock, allow_ttl=30.0, deny_ttl=5.0)
    bob = PolicyRequest(Principal("bob"), ALICE.action, ALICE.resource)
    await policy.check(ALICE)
    await policy.check(bob)
    clock.now += 5.1
    await policy.check(ALICE)
    await policy.check(bob)
    assert engine.calls == 3  # the deny expired, the allow did not
    engine.answer = lambda request: Decision(True, "short", engine.revision, ttl=1.0)
    carol = PolicyRequest(Principal("carol"), ALICE.action, ALICE.resource)
    await policy.check(carol)
    clock.now += 1.1
    await policy.check(carol)
    assert engine.calls == 5
    engine.answer = lambda request: Decision(True, "never cache", engine.revision, ttl=0.0)
    dave = PolicyRequest(Principal("dave"), ALICE.action, ALICE.resource)
    await policy.check(dave)
    await policy.check(dave)
    assert engine.calls == 7


async def test_one_call_in_flight_per_key() -> None:
    engine = ScriptedEngine(delay=0.05)
    policy = client(engine)
    decisions = await asyncio.gather(*(policy.check(ALICE) for _ in range(20)))
    assert engine.calls == 1
    assert all(d.allow for d in decisions)


async def test_a_caller_going_away_does_not_cancel_the_shared_call() -> None:
    engine = ScriptedEngine(delay=0.05)
    policy = client(engine)
    leader = asyncio.ensure_future(policy.check(ALICE))
    await asyncio.sleep(0.01)
    follower = asyncio.ensure_future(policy.check(ALICE))
    await asyncio.sleep(0)
    leader.cancel()
    assert (await asyncio.wait_for(follower, 1)).allow
    assert engine.calls == 1


async def test_errors_are_never_cached() -> None:
    engine = ScriptedEngine()
    policy = client(engine)
    engine.fail = PolicyError("service down")
    for _ in range(2):
        with pytest.raises(PolicyError, match="service down"):
            await policy.check(ALICE)
    engine.fail = None
    assert (await policy.check(ALICE)).allow
    assert engine.calls == 3


async def test_a_slow_engine_times_out_within_the_timeout() -> None:
    engine = ScriptedEngine(delay=5.0)
    policy = client(engine, timeout=0.05)
    started = time.monotonic()
    with pytest.raises(PolicyTimeout, match="within 50 ms"):
        await policy.check(ALICE)
    assert time.monotonic() - started < 0.5


async def test_a_shorter_budget_wins_and_is_not_held_against_the_engine() -> None:
    engine = ScriptedEngine(delay=5.0)
    policy = client(engine, timeout=1.0, breaker_failures=1)
    started = time.monotonic()
    with pytest.raises(PolicyTimeout):
        await policy.check(ALICE, budget=0.02)
    assert time.monotonic() - started < 0.5
    assert policy.breaker.state == "closed"


async def test_breaker_opens_after_failures_and_lets_one_trial_through_after_reset() -> None:
    engine, clock = ScriptedEngine(), Clock()
    policy = client(engine, clock, breaker_failures=3, breaker_reset=10.0)
    engine.fail = PolicyError("down")
    for _ in range(3):
        with pytest.raises(PolicyError, match="down"):
            await policy.check(ALICE)
    with pytest.raises(CircuitOpen):
        await policy.check(ALICE)
    assert engine.calls == 3 and policy.breaker.state == "open"
    clock.now += 10.0
    with pytest.raises(PolicyError, match="down"):
        await policy.check(ALICE)  # the trial fails: open again
    with pytest.raises(CircuitOpen):
        await policy.check(ALICE)
    assert engine.calls == 4
    clock.now += 10.0
    engine.fail = None
    assert (await policy.check(ALICE)).allow
    assert policy.breaker.state == "closed"


async def test_a_revision_change_invalidates_the_cache() -> None:
    engine = ScriptedEngine()
    policy = client(engine)
    await policy.check(ALICE)
    assert (await policy.check(ALICE)).cached
    engine.revision = "r2"
    fresh = await policy.check(ALICE)
    assert not fresh.cached and fresh.revision == "r2"
    assert len(policy.cache) == 1
    assert engine.calls == 2


async def test_an_answer_from_another_revision_is_not_stored_under_the_old_key() -> None:
    engine = ScriptedEngine()
    policy = client(engine)

    def newer(request: PolicyRequest) -> Decision:
        engine.revision = "r2"
        return Decision(True, "from r2", "r2")

    engine.answer = newer
    assert (await policy.check(ALICE)).revision == "r2"
    assert len(policy.cache) == 0
    await policy.check(ALICE)
    assert (await policy.check(ALICE)).cached
    assert engine.calls == 2


async def test_local_rules_reload_changes_the_answer(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules: [{effect: allow, roles: [pharmacist], actions: ['**']}]\n")
    async with PolicyClient(ClientSettings(LocalRules(rules, watch_interval=0.02))) as policy:
        first = await policy.check(ALICE)
        assert first.allow and (await policy.check(ALICE)).cached
        await asyncio.to_thread(
            rules.write_text, "rules: [{effect: deny, roles: [pharmacist], actions: ['**'], reason: revoked}]\n"
        )
        decision = await eventually(lambda: policy.check(ALICE), lambda d: not d.allow)
        assert decision.reason == "revoked" and not decision.cached
        assert decision.revision != first.revision
        await asyncio.to_thread(rules.write_text, "rules: [{effect: allow")  # invalid: the running rules stay
        await asyncio.sleep(0.1)
        assert not (await policy.check(ALICE)).allow
        assert policy.engine.last_error is not None  # type: ignore[attr-defined]
