"""Quota through the HTTP door of a real gateway: 429s, RateLimit-* headers, rule selection, phases."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from edge.call import Call, Denial, Principal
from edge.server import Gateway
from tests.conftest import GatewayFiles, StartBackend

RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"


def ok_app() -> web.Application:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True}, headers={"RateLimit-Limit": "999"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    return app


async def start(edge: GatewayFiles, start_backend: StartBackend, rules: list[dict[str, Any]], **quota: Any) -> Gateway:
    backend = await start_backend(ok_app())
    routes = [
        {"name": "refill", "match": {"prefix": "/v1/prescriptions/refill"}, "upstream": backend},
        {"name": "ballots", "match": {"prefix": "/v1/voting"}, "upstream": backend},
    ]
    return await edge.start({"routes": routes}, quota={"rules": rules, **quota})


def identify_by_header(gateway: Gateway) -> None:
    """Stand in for the identity stage: `x-test-user: alice;veteran,admin` becomes the principal."""

    async def identity(call: Call) -> Denial | None:
        value = call.metadata.get("x-test-user")
        if isinstance(value, str):
            subject, _, roles = value.partition(";")
            call.principal = Principal(subject, roles=tuple(r for r in roles.split(",") if r), method="jwt")
        return None

    quota = gateway.quota
    stages = gateway.pipeline.stages
    assert stages[: len(quota.pre_auth)] == quota.pre_auth, "pre-auth quota comes first"
    assert stages[len(stages) - len(quota.post_auth) :] == quota.post_auth, "post-auth quota comes last"
    gateway.pipeline.stages = (*quota.pre_auth, identity, *quota.post_auth)


def capture_decisions(gateway: Gateway) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    async def capture(call: Call) -> Denial | None:
        seen.append(call.decisions.get("quota", {}))
        return None

    gateway.pipeline.stages = (*gateway.pipeline.stages, capture)
    return seen


Get = Callable[..., Awaitable[tuple[int, dict[str, str], Any]]]


@pytest.fixture
async def get() -> Any:
    async with aiohttp.ClientSession() as session:

        async def fetch(url: str, **kwargs: Any) -> tuple[int, dict[str, str], Any]:
            async with session.get(url, **kwargs) as response:
                return response.status, {k.lower(): v for k, v in response.headers.items()}, await response.json()

        yield fetch


async def test_allowed_replies_carry_ratelimit_headers_and_the_last_is_429(
    edge: GatewayFiles, start_backend: StartBackend, get: Get
) -> None:
    await start(edge, start_backend, [{"name": "per-ip", "key": "client_ip", "limit": 2, "period": "1h"}])
    url = f"{edge.url}/v1/prescriptions/refill?rx=RX-42"
    first, second, third = [await get(url) for _ in range(3)]
    assert (first[0], first[1]["ratelimit-limit"], first[1]["ratelimit-remaining"]) == (200, "2", "1")
    assert first[1]["ratelimit-policy"] == "2;w=3600"
    assert int(first[1]["ratelimit-reset"]) == 1800
    assert (second[0], second[1]["ratelimit-remaining"], second[1]["ratelimit-reset"]) == (200, "0", "3600")
    status, headers, body = third
    assert status == 429
    assert 1799 <= int(headers["retry-after"]) <= 1800
    assert (headers["ratelimit-limit"], headers["ratelimit-remaining"], headers["ratelimit-policy"]) == (
        "2",
        "0",
        "2;w=3600",
    )
    assert list(headers).count("ratelimit-limit") == 1
    error = body["error"]
    assert (error["code"], error["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert "per-ip" in error["message"]
    retry = next(d for d in error["details"] if d["@type"] == RETRY_INFO)
    assert 1799 <= float(retry["retryDelay"].removesuffix("s")) <= 1800


async def test_headers_only_on_429_when_configured(edge: GatewayFiles, start_backend: StartBackend, get: Get) -> None:
    await start(
        edge, start_backend, [{"name": "per-ip", "key": "client_ip", "limit": 1, "period": "1h"}], headers="denied"
    )
    allowed = await get(f"{edge.url}/v1/voting/ballots")
    denied = await get(f"{edge.url}/v1/voting/ballots")
    assert allowed[0] == 200 and allowed[1]["ratelimit-limit"] == "999", "the backend's own header passes untouched"
    assert "ratelimit-policy" not in allowed[1]
    assert denied[0] == 429 and denied[1]["ratelimit-policy"] == "1;w=3600"


async def test_gateway_headers_replace_the_backends(edge: GatewayFiles, start_backend: StartBackend, get: Get) -> None:
    await start(edge, start_backend, [{"name": "per-ip", "key": "client_ip", "limit": 5, "period": "1m"}])
    status, headers, _ = await get(f"{edge.url}/v1/voting/ballots")
    assert (status, headers["ratelimit-limit"]) == (200, "5")


async def test_a_veteran_may_refill_once_per_30_days(edge: GatewayFiles, start_backend: StartBackend, get: Get) -> None:
    gateway = await start(
        edge,
        start_backend,
        [
            {
                "name": "refill",
                "match": {"routes": ["refill"], "roles": ["veteran"]},
                "key": "subject",
                "limit": 1,
                "period": "30d",
                "algorithm": "sliding",
            }
        ],
    )
    identify_by_header(gateway)
    url = f"{edge.url}/v1/prescriptions/refill?rx=RX-42"
    veteran = {"x-test-user": "alice;veteran"}
    assert (await get(url, headers=veteran))[0] == 200
    status, headers, _ = await get(url, headers=veteran)
    assert status == 429
    assert 30 * 86400 - 2 <= int(headers["retry-after"]) <= 30 * 86400
    assert (await get(url, headers={"x-test-user": "bob;veteran"}))[0] == 200, "another veteran has their own quota"
    for _ in range(3):
        assert (await get(url, headers={"x-test-user": "carol;clerk"}))[0] == 200, "the rule is for veterans"
    assert (await get(f"{edge.url}/v1/voting/ballots", headers=veteran))[0] == 200, "the rule is for the refill route"


async def test_denied_by_one_rule_consumes_no_other(edge: GatewayFiles, start_backend: StartBackend, get: Get) -> None:
    gateway = await start(
        edge,
        start_backend,
        [
            {"name": "per-user", "key": "subject", "limit": 1, "period": "1h"},
            {"name": "route-total", "key": "route", "limit": 3, "period": "1h", "algorithm": "sliding"},
        ],
    )
    identify_by_header(gateway)
    url = f"{edge.url}/v1/voting/ballots"
    alice, bob, carol, dave = ({"x-test-user": name} for name in ("alice", "bob", "carol", "dave"))
    first = await get(url, headers=alice)
    assert first[0] == 200
    assert first[1]["ratelimit-policy"] == "1;w=3600, 3;w=3600"
    assert (first[1]["ratelimit-limit"], first[1]["ratelimit-remaining"]) == ("1", "0"), "the rule closest to denying"
    for _ in range(5):
        assert (await get(url, headers=alice))[0] == 429
    assert (await get(url, headers=bob))[0] == 200
    third = await get(url, headers=carol)
    assert (third[0], third[1]["ratelimit-remaining"]) == (200, "0")
    assert (await get(url, headers=dave))[0] == 429, "the route total is used up by three, not eight, calls"


async def test_pre_auth_rules_run_before_identity(edge: GatewayFiles, start_backend: StartBackend, get: Get) -> None:
    gateway = await start(
        edge,
        start_backend,
        [
            {"name": "flood", "key": "client_ip", "limit": 2, "period": "1h"},
            {"name": "per-user", "key": "subject", "limit": 100, "period": "1h"},
        ],
    )
    assert [s.phase for s in gateway.quota.pre_auth] == ["pre_auth"]
    assert [s.phase for s in gateway.quota.post_auth] == ["post_auth"]

    async def reject_everyone(call: Call) -> Denial | None:
        from edge.errors import Status

        return Denial(Status.UNAUTHENTICATED, "no credentials", http=401)

    gateway.pipeline.stages = (*gateway.quota.pre_auth, reject_everyone, *gateway.quota.post_auth)
    statuses = [(await get(f"{edge.url}/v1/voting/ballots"))[0] for _ in range(4)]
    assert statuses == [401, 401, 429, 429], "unauthenticated floods are counted and cut off by address"
    status, headers, _ = await get(f"{edge.url}/v1/voting/ballots")
    assert status == 429 and headers["ratelimit-policy"] == "2;w=3600"


async def test_decisions_record_each_rule_and_missing_keys_skip(
    edge: GatewayFiles, start_backend: StartBackend, get: Get
) -> None:
    gateway = await start(
        edge,
        start_backend,
        [
            {"name": "by-key", "key": "header:X-Api-Key", "limit": 1, "period": "1h", "phase": "pre_auth"},
            {"name": "watch", "key": "client_ip", "limit": 1, "period": "1h", "shadow": True},
        ],
    )
    seen = capture_decisions(gateway)
    url = f"{edge.url}/v1/voting/ballots"
    assert (await get(url))[0] == 200
    assert (await get(url))[0] == 200, "no X-Api-Key: that rule is skipped; the shadow rule never denies"
    assert (await get(url, headers={"X-Api-Key": "k1"}))[0] == 200
    status, headers, _ = await get(url, headers={"X-Api-Key": "k1"})
    assert status == 429 and headers["ratelimit-policy"] == "1;w=3600", "shadow rules stay out of the headers"
    assert seen[1]["skipped"] == ["by-key"]
    assert [(r["rule"], r["result"], r["mode"]) for r in seen[1]["rules"]] == [("watch", "shadow_denied", "memory")]
    assert [(r["rule"], r["result"]) for r in seen[2]["rules"]] == [("by-key", "allowed"), ("watch", "shadow_denied")]
    assert len(seen) == 3, "the denied call never reached the stage after quota"
    metrics = {(m["rule"], m["result"]): m["count"] for m in gateway.quota.metrics.snapshot()}
    assert metrics[("by-key", "denied")] == 1 and metrics[("by-key", "skipped")] == 2
    assert metrics[("watch", "shadow_denied")] == 3 and metrics[("watch", "allowed")] == 1


async def test_route_override_applies_a_rule_to_that_route(
    edge: GatewayFiles, start_backend: StartBackend, get: Get
) -> None:
    backend = await start_backend(ok_app())
    routes = [
        {"name": "refill", "match": {"prefix": "/refill"}, "upstream": backend, "quota": {"rules": ["tight"]}},
        {"name": "other", "match": {"prefix": "/other"}, "upstream": backend},
    ]
    rules = [
        {
            "name": "tight",
            "key": ["client_ip", "route"],
            "limit": 1,
            "period": "1h",
            "match": {"routes": ["other"], "ingress": ["http"]},
        }
    ]
    await edge.start({"routes": routes}, quota={"rules": rules})
    assert [(await get(f"{edge.url}/refill"))[0] for _ in range(2)] == [200, 429]
    assert [(await get(f"{edge.url}/other"))[0] for _ in range(2)] == [200, 429]


@pytest.mark.parametrize(
    ("seconds", "whole", "proto"),
    [
        (12, 12, "12s"),
        (0.25, 1, "0.250s"),
        (1.0001, 1, "1.001s"),
        (1.002, 2, "1.002s"),
        (1800.0000001, 1800, "1800.001s"),
        (0, 0, "0s"),
    ],
)
def test_times_in_headers_and_retry_info(seconds: float, whole: int, proto: str) -> None:
    from edge.pipeline.quota.headers import duration, whole_seconds

    assert (whole_seconds(seconds), duration(seconds)) == (whole, proto)


async def test_headers_merge_when_both_phases_decide(edge: GatewayFiles, start_backend: StartBackend, get: Get) -> None:
    gateway = await start(
        edge,
        start_backend,
        [
            {"name": "per-ip", "key": "client_ip", "limit": 5, "period": "1h"},
            {"name": "per-user", "key": "subject", "limit": 2, "period": "1h", "algorithm": "sliding"},
        ],
    )
    identify_by_header(gateway)
    seen = capture_decisions(gateway)
    url = f"{edge.url}/v1/voting/ballots"
    first = await get(url, headers={"x-test-user": "alice"})
    assert first[0] == 200
    assert (first[1]["ratelimit-limit"], first[1]["ratelimit-remaining"]) == ("2", "1"), "per-user is closer"
    assert first[1]["ratelimit-policy"] == "5;w=3600, 2;w=3600"
    assert [r["rule"] for r in seen[0]["rules"]] == ["per-ip", "per-user"]
    other = await get(url, headers={"x-test-user": "bob"})
    assert (other[1]["ratelimit-limit"], other[1]["ratelimit-remaining"]) == ("2", "1")
    carol = [(await get(url, headers={"x-test-user": "carol"}))[1]["ratelimit-remaining"] for _ in range(2)]
    assert carol == ["1", "0"]
    fifth = await get(url, headers={"x-test-user": "dave"})
    assert (fifth[0], fifth[1]["ratelimit-limit"], fifth[1]["ratelimit-remaining"]) == (200, "5", "0"), (
        "per-ip is closer"
    )
    status, headers, _ = await get(url, headers={"x-test-user": "dave"})
    assert (status, headers["ratelimit-policy"]) == (429, "5;w=3600"), "denied before identity: post-auth never ran"
