"""Opaque tokens through an RFC 7662 introspection endpoint (the IdP stand-in), via the HTTP door."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from tests.conftest import GatewayFiles
from tests.identity.conftest import headers_seen, jwt_provider
from tests.identity.idp import CLIENT_ID, CLIENT_SECRET, IdP

ROUTES = {"routes": [{"match": {"prefix": "/"}, "upstream": "svc"}]}


def section(idp: IdP, secret: str = CLIENT_SECRET, **extra: Any) -> dict[str, Any]:
    corp = {
        "type": "introspection",
        "endpoint": f"{idp.issuer}/introspect",
        "client_id": CLIENT_ID,
        "client_secret": secret,
        "roles": {"claim": "scope", "separator": " ", "map": {"rx:refill": "Veteran"}, "keep_unmapped": True},
        **extra,
    }
    return {"providers": {"corp": corp, "dev": jwt_provider(idp)}}


async def call(edge: GatewayFiles, token: str) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as session, session.get(edge.url + "/x", headers=headers) as response:
        return response.status, await response.json()


async def test_active_inactive_and_cached(edge: GatewayFiles, idp: IdP, echo: str) -> None:
    idp.answers["opaque-active"] = {
        "active": True,
        "sub": "agent-7",
        "scope": "rx:refill rx:read",
        "exp": int(time.time()) + 600,
        "client_id": "agent",
    }
    idp.answers["opaque-revoked"] = {"active": False}
    await edge.start(ROUTES, upstreams={"svc": {"endpoints": [echo]}}, identity=section(idp))
    status, body = await call(edge, "opaque-active")
    seen = headers_seen(body)
    assert status == 200
    assert (seen["x-edge-subject"], seen["x-edge-roles"], seen["x-edge-auth-method"]) == (
        ["agent-7"],
        ["Veteran,rx:read"],
        ["introspection"],
    )
    for _ in range(3):
        assert (await call(edge, "opaque-active"))[0] == 200
    assert idp.introspections == 1
    for _ in range(3):
        status, body = await call(edge, "opaque-revoked")
        assert status == 401 and body["error"]["message"] == "the token is not active"
    assert idp.introspections == 2  # inactive answers are remembered too
    assert (await call(edge, idp.token()))[0] == 200  # a JWT of a configured issuer still goes to its provider
    assert idp.introspections == 2


async def test_cached_no_longer_than_exp(edge: GatewayFiles, idp: IdP, echo: str) -> None:
    await edge.start(ROUTES, upstreams={"svc": {"endpoints": [echo]}}, identity=section(idp))
    idp.answers["short"] = {"active": True, "sub": "agent-7", "exp": int(time.time()) + 2}  # 1 to 2 s ahead
    assert (await call(edge, "short"))[0] == 200
    assert (await call(edge, "short"))[0] == 200
    assert idp.introspections == 1
    await asyncio.sleep(max(0.0, idp.answers["short"]["exp"] - time.time()) + 0.05)
    assert (await call(edge, "short"))[0] == 401  # asked again: the endpoint's answer now has exp in the past
    assert idp.introspections == 2


async def test_concurrent_requests_share_one_introspection(edge: GatewayFiles, idp: IdP, echo: str) -> None:
    idp.answers["busy"] = {"active": True, "sub": "agent-7"}
    await edge.start(ROUTES, upstreams={"svc": {"endpoints": [echo]}}, identity=section(idp))
    statuses = await asyncio.gather(*(call(edge, "busy") for _ in range(10)))
    assert {s for s, _ in statuses} == {200}
    assert idp.introspections == 1


async def test_endpoint_failures_fail_closed(edge: GatewayFiles, idp: IdP, echo: str) -> None:
    idp.answers["t"] = {"active": True, "sub": "agent-7"}
    await edge.start(ROUTES, upstreams={"svc": {"endpoints": [echo]}}, identity=section(idp, secret="wrong"))
    status, body = await call(edge, "t")
    assert status == 503 and body["error"]["status"] == "UNAVAILABLE"


async def test_answer_for_another_audience_is_refused(edge: GatewayFiles, idp: IdP, echo: str) -> None:
    idp.answers["t"] = {"active": True, "sub": "agent-7", "aud": ["billing"]}
    await edge.start(ROUTES, upstreams={"svc": {"endpoints": [echo]}}, identity=section(idp, audience="pharmacy"))
    status, body = await call(edge, "t")
    assert status == 401 and "audience" in body["error"]["message"]


async def test_client_secret_post_sends_the_client_in_the_form(edge: GatewayFiles, idp: IdP, echo: str) -> None:
    idp.answers["opaque-post"] = {"active": True, "sub": "agent-9", "exp": int(time.time()) + 600}
    identity = section(idp, client_auth="post")
    await edge.start(ROUTES, upstreams={"svc": {"endpoints": [echo]}}, identity=identity)
    status, body = await call(edge, "opaque-post")
    assert status == 200 and headers_seen(body)["x-edge-subject"] == ["agent-9"]
    assert idp.introspections == 1


async def test_client_secret_post_with_a_wrong_secret_is_unavailable(edge: GatewayFiles, idp: IdP, echo: str) -> None:
    identity = section(idp, secret="wrong", client_auth="post")
    await edge.start(ROUTES, upstreams={"svc": {"endpoints": [echo]}}, identity=identity)
    status, _ = await call(edge, "opaque-post")
    assert status == 503
