"""JWT bearer tokens through the HTTP door, against a real JWKS served by the IdP stand-in."""

from __future__ import annotations

import time
from typing import Any

import aiohttp

from tests.conftest import GatewayFiles
from tests.identity.cases import ATTACKS, CLAIMS, claims_token
from tests.identity.conftest import headers_seen, identity, jwt_provider
from tests.identity.idp import IdP

ROUTES = {
    "routes": [
        {"name": "refill", "match": {"prefix": "/v1/prescriptions"}, "upstream": "pharmacy"},
        {"name": "open", "match": {"prefix": "/v1/public"}, "upstream": "pharmacy", "auth": "none"},
        {"name": "maybe", "match": {"prefix": "/v1/maybe"}, "upstream": "pharmacy", "auth": {"mode": "optional"}},
        {"name": "other", "match": {"prefix": "/v1/other"}, "upstream": "pharmacy", "auth": {"providers": ["other"]}},
    ]
}


async def start(edge: GatewayFiles, idp: IdP, echo: str, **provider: Any) -> None:
    section = identity(idp, headers={"strip": ["x-user"]})
    section["providers"]["dev"].update(provider)
    other = jwt_provider(idp, issuer="https://other.example", keys={"jwks_url": f"{idp.issuer}/jwks"})
    section["providers"]["other"] = other
    await edge.start(ROUTES, upstreams={"pharmacy": {"endpoints": [echo]}}, identity=section)


async def get(edge: GatewayFiles, path: str, token: str | None = None, **headers: str) -> tuple[int, Any, Any]:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as session, session.get(edge.url + path, headers=headers) as response:
        return response.status, response.headers, await response.json()


async def test_valid_token_reaches_backend_with_identity_headers_only_from_the_gateway(
    edge: GatewayFiles, idp: IdP, echo: str
) -> None:
    await start(edge, idp, echo)
    token = idp.token()
    spoofed = {"X-Edge-Subject": "admin", "X-Edge-Roles": "Admin", "X-Edge-Anything": "1", "X-User": "root"}
    status, _, body = await get(edge, "/v1/prescriptions/refill", token, **spoofed)
    assert status == 200
    seen = headers_seen(body)
    assert seen["x-edge-subject"] == ["veteran-42"]
    assert seen["x-edge-roles"] == ["Veteran"]
    assert seen["x-edge-auth-method"] == ["jwt"]
    assert seen["authorization"] == [f"Bearer {token}"]
    assert "x-edge-anything" not in seen and "x-user" not in seen


async def test_spoofed_identity_headers_are_stripped_on_unauthenticated_routes_too(
    edge: GatewayFiles, idp: IdP, echo: str
) -> None:
    await start(edge, idp, echo)
    for path in ("/v1/public/x", "/v1/maybe/x"):
        status, _, body = await get(edge, path, **{"X-Edge-Subject": "admin", "X-Edge-Roles": "Admin"})
        assert status == 200, path
        seen = headers_seen(body)
        assert not [name for name in seen if name.startswith("x-edge-")], path


async def test_every_attack_is_refused_with_a_bearer_challenge(edge: GatewayFiles, idp: IdP, echo: str) -> None:
    await start(edge, idp, echo, max_token_size="2KiB")
    accepted = []
    for name, expected, build in ATTACKS:
        status, headers, body = await get(edge, "/v1/prescriptions/x", build(idp))
        challenge = headers.get("WWW-Authenticate", "")
        if (
            status != 401
            or body["error"]["status"] != "UNAUTHENTICATED"
            or not challenge.startswith('Bearer realm="edge", error="invalid_token", error_description="')
            or expected not in challenge
        ):
            accepted.append((name, status, challenge))
    assert accepted == []
    assert (await get(edge, "/v1/prescriptions/x", idp.token()))[0] == 200


async def test_claims_are_checked(edge: GatewayFiles, idp: IdP, echo: str) -> None:
    await start(edge, idp, echo, max_age="1h")
    wrongly = []
    for name, expected, overrides in CLAIMS:
        status, headers, _ = await get(edge, "/v1/prescriptions/x", claims_token(idp, overrides))
        challenge = headers.get("WWW-Authenticate", "")
        if status != 401 or 'error="invalid_token"' not in challenge or expected not in challenge:
            wrongly.append((name, status, challenge))
    assert wrongly == []


async def test_leeway_accepts_a_token_that_expired_seconds_ago(edge: GatewayFiles, idp: IdP, echo: str) -> None:
    await start(edge, idp, echo)
    assert (await get(edge, "/v1/prescriptions/x", idp.token(exp=int(time.time()) - 5)))[0] == 200
    assert (await get(edge, "/v1/prescriptions/x", idp.token(exp=int(time.time()) - 60)))[0] == 401


async def test_missing_credentials_by_route_mode(edge: GatewayFiles, idp: IdP, echo: str) -> None:
    await start(edge, idp, echo)
    status, headers, body = await get(edge, "/v1/prescriptions/x")
    assert (status, headers["WWW-Authenticate"]) == (401, 'Bearer realm="edge"')
    assert body["error"] == {"code": 401, "status": "UNAUTHENTICATED", "message": "credentials are required"}
    assert (await get(edge, "/v1/public/x"))[0] == 200
    assert (await get(edge, "/v1/public/x", "garbage"))[0] == 200  # auth: none does not look
    assert (await get(edge, "/v1/maybe/x"))[0] == 200
    assert (await get(edge, "/v1/maybe/x", "garbage"))[0] == 401  # optional: presented means checked
    status, _, body = await get(edge, "/v1/maybe/x", idp.token())
    assert status == 200 and headers_seen(body)["x-edge-subject"] == ["veteran-42"]


async def test_route_providers_limit_which_issuers_are_accepted(edge: GatewayFiles, idp: IdP, echo: str) -> None:
    await start(edge, idp, echo)
    token = idp.token()
    assert (await get(edge, "/v1/prescriptions/x", token))[0] == 200
    status, headers, _ = await get(edge, "/v1/other/x", token)  # cached for `dev`, not accepted by `other`
    assert status == 401 and "issuer is not trusted" in headers["WWW-Authenticate"]


async def test_authorization_not_forwarded_when_configured(edge: GatewayFiles, idp: IdP, echo: str) -> None:
    section = identity(idp, headers={"forward_authorization": False, "subject": "x-edge-user"})
    await edge.start({"routes": ROUTES["routes"][:1]}, upstreams={"pharmacy": {"endpoints": [echo]}}, identity=section)
    status, _, body = await get(edge, "/v1/prescriptions/x", idp.token())
    seen = headers_seen(body)
    assert status == 200 and "authorization" not in seen and seen["x-edge-user"] == ["veteran-42"]


async def test_audit_records_the_principal_and_never_the_token(edge: GatewayFiles, idp: IdP, echo: str) -> None:
    await start(edge, idp, echo)
    token = idp.token()
    await get(edge, "/v1/prescriptions/x", token)
    await get(edge, "/v1/prescriptions/x", token + "x")
    await edge.stop()
    text = edge.audit_path.read_text()
    assert token.split(".")[1] not in text and token.split(".")[2] not in text
    allowed, denied = edge.audit_records()[-2:]
    assert allowed["principal"]["subject"] == "veteran-42"
    assert allowed["principal"]["roles"] == ["Veteran"]
    assert allowed["principal"]["method"] == "jwt"
    assert allowed["principal"]["issuer"] == idp.issuer
    assert allowed["decisions"]["identity"]["provider"] == "dev"
    assert denied["status"] == 401 and denied["decisions"]["identity"]["outcome"] == "denied"


async def test_repeated_token_is_verified_once(edge: GatewayFiles, idp: IdP, echo: str) -> None:
    await start(edge, idp, echo)
    assert edge.gateway is not None
    stage = edge.gateway.identity
    token = idp.token()
    for _ in range(3):
        assert (await get(edge, "/v1/prescriptions/x", token))[0] == 200
    assert len(stage.cache) == 1
