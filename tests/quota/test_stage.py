"""Both quota stages on prepared calls, no server: the merged RateLimit-* headers, the record, the counters."""

from __future__ import annotations

from typing import Any

import pytest

from edge.call import Call, Denial
from edge.config.quota import Quota as QuotaConfig
from edge.pipeline.quota import Quota
from tests.quota.rules import Clock, call

RULES = [
    {"name": "per-ip", "key": "client_ip", "limit": 5, "period": "1h"},
    {"name": "per-user", "key": "subject", "limit": 2, "period": "1m"},
]
QUOTA_NAMES = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "ratelimit-policy")


def run(stage: Any, made: Call) -> Denial | None:
    """Drive a stage that never suspends (the memory store) to its result."""
    try:
        stage(made).send(None)
    except StopIteration as stop:
        result: Denial | None = stop.value
        return result
    raise AssertionError("the memory-store stage suspended")


def both_phases(quota: Quota, made: Call, before: list[tuple[str, str]], between: list[tuple[str, str]]) -> None:
    made.reply_headers.extend(before)
    assert run(quota.pre_auth[0], made) is None
    made.reply_headers.extend(between)
    assert run(quota.post_auth[0], made) is None


@pytest.mark.parametrize(
    ("before", "between"),
    [([], []), ([("x-a", "1")], []), ([], [("x-b", "2")]), ([("x-a", "1")], [("x-b", "2"), ("x-c", "3")])],
    ids=["only-quota", "header-before", "header-between", "both"],
)
def test_second_phase_merges_and_keeps_other_stages_headers(
    before: list[tuple[str, str]], between: list[tuple[str, str]]
) -> None:
    quota = Quota(QuotaConfig.model_validate({"rules": RULES}), clock=Clock())
    made = call(subject="alice")
    both_phases(quota, made, before, between)
    assert made.reply_headers == [
        *before,
        *between,
        ("ratelimit-limit", "2"),
        ("ratelimit-remaining", "1"),
        ("ratelimit-reset", "30"),
        ("ratelimit-policy", "5;w=3600, 2;w=60"),
    ], "per-user is closer to denying; other stages' headers stay, in order, ahead of the four"
    assert made.decisions["quota"] == {
        "allowed": True,
        "rules": [
            {"rule": "per-ip", "result": "allowed", "mode": "memory", "remaining": 4},
            {"rule": "per-user", "result": "allowed", "mode": "memory", "remaining": 1},
        ],
    }


def test_first_phase_closer_keeps_its_values() -> None:
    rules = [{**RULES[0], "limit": 1}, {**RULES[1], "limit": 100}]
    quota = Quota(QuotaConfig.model_validate({"rules": rules}), clock=Clock())
    made = call(subject="alice")
    both_phases(quota, made, [], [("x-b", "2")])
    assert made.reply_headers == [
        ("x-b", "2"),
        ("ratelimit-limit", "1"),
        ("ratelimit-remaining", "0"),
        ("ratelimit-reset", "3600"),
        ("ratelimit-policy", "1;w=3600, 100;w=60"),
    ]


def test_a_denial_leaves_other_headers_and_moves_the_quota_ones_to_the_429() -> None:
    quota = Quota(QuotaConfig.model_validate({"rules": [{**RULES[1], "limit": 1}, RULES[0]]}), clock=Clock())
    both_phases(quota, call(subject="alice"), [], [])
    made = call(subject="alice")
    made.reply_headers.append(("x-a", "1"))
    assert run(quota.pre_auth[0], made) is None
    denial = run(quota.post_auth[0], made)
    assert denial is not None and denial.http == 429
    assert made.reply_headers == [("x-a", "1")]
    assert [name for name, _ in denial.headers] == ["retry-after", *QUOTA_NAMES]
    assert dict(denial.headers)["ratelimit-policy"] == "5;w=3600, 1;w=60"
    assert made.decisions["quota"]["allowed"] is False


def test_counters_show_only_what_was_counted() -> None:
    quota = Quota(QuotaConfig.model_validate({"rules": [{**RULES[1], "limit": 1}, RULES[0]]}), clock=Clock())
    assert quota.metrics.snapshot() == [], "nothing counted yet, though the stages hold their cells"
    for _ in range(3):
        made = call(subject="alice")
        if run(quota.pre_auth[0], made) is None:
            run(quota.post_auth[0], made)
    counts = {(m["rule"], m["result"], m["mode"]): m["count"] for m in quota.metrics.snapshot()}
    assert counts == {
        ("per-ip", "allowed", "memory"): 3,
        ("per-user", "allowed", "memory"): 1,
        ("per-user", "denied", "memory"): 2,
    }


@pytest.mark.parametrize(
    ("fields", "headers", "shown"),
    [
        ({}, "always", True),
        ({}, "denied", False),
        ({"shadow": True}, "always", False),
    ],
    ids=["enforcing", "headers-on-429-only", "shadow"],
)
def test_one_rule_allowed(fields: dict[str, Any], headers: str, shown: bool) -> None:
    rule = {**RULES[0], **fields}
    quota = Quota(QuotaConfig.model_validate({"rules": [rule], "headers": headers}), clock=Clock())
    made = call()
    made.reply_headers.append(("x-a", "1"))
    assert run(quota.pre_auth[0], made) is None
    assert made.decisions["quota"] == {
        "allowed": True,
        "rules": [{"rule": "per-ip", "result": "allowed", "mode": "memory", "remaining": 4}],
    }
    four = [("ratelimit-limit", "5"), ("ratelimit-remaining", "4"), ("ratelimit-reset", "720")]
    assert made.reply_headers == [("x-a", "1"), *four, ("ratelimit-policy", "5;w=3600")] if shown else [("x-a", "1")]
    assert quota.metrics.snapshot() == [{"rule": "per-ip", "result": "allowed", "mode": "memory", "count": 1}]
