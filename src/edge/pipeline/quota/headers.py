"""How quota decisions reach the caller: RateLimit-* headers, 429 / RESOURCE_EXHAUSTED, 503.

Headers follow the IETF draft (draft-ietf-httpapi-ratelimit-headers):
`RateLimit-Limit`, `-Remaining` and `-Reset` describe the rule closest to
denying (the denying one on a 429), `RateLimit-Policy` lists every enforcing
rule the call met, e.g. `100;w=60, 1;w=2592000`. Shadow rules and rules that
were not counted (store down, `allow`) are left out. When both quota stages
decide for one call, the second merges with the headers the first set. Names
are lower case so the same pairs serve as gRPC metadata. A denial also carries
`Retry-After` and, for gRPC clients, `google.rpc.RetryInfo` and
`google.rpc.QuotaFailure` details, which the gRPC door puts in the status
details trailer.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

from edge.call import Call, Denial
from edge.errors import Status
from edge.pipeline.quota.rules import Rule
from edge.pipeline.quota.verdict import Verdict

RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
QUOTA_FAILURE = "type.googleapis.com/google.rpc.QuotaFailure"
LIMIT, REMAINING, RESET, POLICY = "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "ratelimit-policy"
NAMES = (LIMIT, REMAINING, RESET, POLICY)
Shown = Sequence[tuple[Rule, Verdict]]


def rate_limit_headers(shown: Shown, before: dict[str, str] | None) -> list[tuple[str, str]]:
    """The four headers for these (rule, verdict) pairs, merged with the values an earlier stage set."""
    if not shown:
        return list(before.items()) if before else []
    if len(shown) == 1:
        rule, verdict = shown[0]
        policy = rule.policy
    else:
        rule, verdict = _closest(shown)
        policy = _joined(tuple([pair[0].policy for pair in shown]))
    allowed, left, reset_after, _ = verdict
    if left < 0:
        left = 0
    if before:
        policy = _joined((before[POLICY], policy))
        if allowed and int(before[REMAINING]) < left:
            return [(LIMIT, before[LIMIT]), (REMAINING, before[REMAINING]), (RESET, before[RESET]), (POLICY, policy)]
    reset = max(0, math.ceil(reset_after - 0.001))
    return [(LIMIT, rule.capacity_text), (REMAINING, str(left)), (RESET, str(reset)), (POLICY, policy)]


def _split(earlier: Sequence[tuple[str, str]]) -> tuple[dict[str, str] | None, list[tuple[str, str]]]:
    """The RateLimit-* values earlier stages set, and their other headers.

    The usual case, the pre_auth stage's four and nothing else, is read by
    position: the second stage of every call comes here.
    """
    if (
        len(earlier) == 4
        and earlier[0][0] == LIMIT
        and earlier[1][0] == REMAINING
        and earlier[2][0] == RESET
        and earlier[3][0] == POLICY
    ):
        return {LIMIT: earlier[0][1], REMAINING: earlier[1][1], RESET: earlier[2][1], POLICY: earlier[3][1]}, []
    before = {name: value for name, value in earlier if name in NAMES}
    return before or None, [(name, value) for name, value in earlier if name not in NAMES]


@functools.lru_cache(maxsize=1024)
def _joined(policies: tuple[str, ...]) -> str:
    """`RateLimit-Policy` items in order, each once; rules make few combinations, so each is joined once."""
    return ", ".join(dict.fromkeys(item for policy in policies for item in policy.split(", ")))


def _closest(shown: Shown) -> tuple[Rule, Verdict]:
    """Denied before allowed; among denials the longest wait; among the rest the fewest remaining."""
    best = shown[0]
    held_allowed, held_remaining, held_reset, held_retry_after = best[1]
    for pair in shown:
        allowed, remaining, reset, retry_after = pair[1]
        if held_allowed:
            if allowed and (remaining > held_remaining or (remaining == held_remaining and reset <= held_reset)):
                continue
        elif allowed or retry_after <= held_retry_after:
            continue
        best = pair
        held_allowed, held_remaining, held_reset, held_retry_after = pair[1]
    return best


def show_on_reply(call: Call, shown: Shown) -> None:
    """Put this call's RateLimit-* headers on whatever reply it gets (both doors add `reply_headers`)."""
    earlier = call.reply_headers
    if earlier:
        before, others = _split(earlier)
        call.reply_headers = others + rate_limit_headers(shown, before)
    else:
        call.reply_headers = rate_limit_headers(shown, None)


def quota_denial(call: Call, shown: Shown, denied: Shown) -> Denial:
    rule, verdict = max(denied, key=lambda pair: pair[1][3])
    retry_after = verdict[3]
    seconds = max(1, whole_seconds(retry_after))
    before, others = _split(call.reply_headers)
    headers = rate_limit_headers(shown, before)
    call.reply_headers = others
    return Denial(
        Status.RESOURCE_EXHAUSTED,
        f"quota {rule.name!r} exceeded; retry in {seconds}s",
        http=429,
        headers=(("retry-after", str(seconds)), *headers),
        details=(
            {"@type": RETRY_INFO, "retryDelay": duration(retry_after)},
            {
                "@type": QUOTA_FAILURE,
                "violations": [{"subject": f"rule:{r.name}", "description": r.policy} for r, _ in denied],
            },
        ),
    )


def unavailable_denial(call: Call, rules: Sequence[str]) -> Denial:
    call.reply_headers = _split(call.reply_headers)[1]
    return Denial(
        Status.UNAVAILABLE,
        f"quota store unavailable and rule {rules[0]!r} fails closed",
        http=503,
        headers=(("retry-after", "1"),),
        details=({"@type": RETRY_INFO, "retryDelay": "1s"},),
    )


def whole_seconds(seconds: float) -> int:
    """Rounded up, but a float's last bits (1800.0000001) do not make another second."""
    return max(0, math.ceil(seconds - 0.001))


def duration(seconds: float) -> str:
    """A google.protobuf.Duration in its JSON form, to the millisecond: `12s`, `0.250s`."""
    millis = max(0, math.ceil(seconds * 1000))
    whole, frac = divmod(millis, 1000)
    return f"{whole}s" if frac == 0 else f"{whole}.{frac:03d}s"
