"""Fixtures for the identity tests: a running IdP stand-in, an echo backend, gateway config helpers."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from tests.conftest import StartBackend
from tests.identity.idp import AUDIENCE, IdP


@pytest.fixture
async def idp(start_backend: StartBackend) -> IdP:
    provider = IdP()
    provider.add_key("k1")
    provider.issuer = await start_backend(provider.app())
    return provider


def echo_app() -> web.Application:
    """A backend that answers with the headers it received."""

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"headers": [[k.lower(), v] for k, v in request.headers.items()]})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


@pytest.fixture
async def echo(start_backend: StartBackend) -> str:
    return await start_backend(echo_app())


def jwt_provider(idp: IdP, **overrides: Any) -> dict[str, Any]:
    provider: dict[str, Any] = {
        "type": "jwt",
        "issuer": idp.issuer,
        "audience": AUDIENCE,
        "algorithms": ["RS256", "ES256"],
        "keys": {"jwks_url": f"{idp.issuer}/jwks"},
        "roles": {"claim": "realm_access.roles", "map": {"patient": "Veteran"}},
    }
    provider.update(overrides)
    return provider


def identity(idp: IdP, **sections: Any) -> dict[str, Any]:
    """An identity section with one JWKS-backed provider, `dev`."""
    return {"providers": {"dev": jwt_provider(idp)}, **sections}


def headers_seen(body: dict[str, Any]) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}
    for name, value in body["headers"]:
        seen.setdefault(name, []).append(value)
    return seen
