"""The identity section and the routes' `auth:` are checked at load, with errors naming key and expectation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.config import ConfigError, load

JWKS = {"jwks_url": "https://idp.example/jwks"}


def provider(**overrides: Any) -> dict[str, Any]:
    return {"type": "jwt", "issuer": "https://idp.example", "audience": "api", "keys": JWKS, **overrides}


def write(tmp_path: Path, identity: dict[str, Any] | None, routes: list[dict[str, Any]] | None = None) -> Path:
    config: dict[str, Any] = {"routes_file": "routes.yaml", "upstreams": {"svc": {"endpoints": ["http://127.0.0.1:1"]}}}
    if identity is not None:
        config["identity"] = identity
    (tmp_path / "edge.yaml").write_text(yaml.safe_dump(config))
    default = [{"match": {"prefix": "/"}, "upstream": "svc"}]
    (tmp_path / "routes.yaml").write_text(yaml.safe_dump({"routes": routes or default}))
    return tmp_path / "edge.yaml"


@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        (
            {"providers": {"p": provider(algorithms=["none"])}},
            "identity.providers.p.algorithms: expected algorithms from",
        ),
        ({"providers": {"p": provider(algorithms=["HS256", "RS256"])}}, "not both in one provider (key confusion)"),
        ({"providers": {"p": provider(algorithms=["HS256"])}}, "HS* keys are shared secrets"),
        ({"providers": {"p": provider(audience=[])}}, "audience is required while aud is a required claim"),
        ({"providers": {"p": provider(keys={})}}, "expected exactly one of pem, pem_file, jwk, jwks_file, jwks_url"),
        ({"providers": {"p": provider(keys={**JWKS, "discovery": True})}}, "(got jwks_url, discovery)"),
        ({"providers": {"p": provider(keys={"jwks_url": "ftp://x/jwks"})}}, "expected an http(s) URL for jwks_url"),
        ({"providers": {"p": provider(kind="x")}}, "identity.providers.p.kind: unknown key"),
        ({"providers": {"p": {"type": "saml"}}}, "identity.providers.p.type: expected one of"),
        ({"providers": {"c": {"type": "client-cert", "subject": ["ssn"]}}}, "expected san:uri, san:email, san:dns, dn"),
        ({"providers": {"c": {"type": "client-cert", "roles": [{"match": "O", "roles": "x"}]}}}, "'O=DoD, OU=CAC'"),
        ({"default": "required"}, "default: required needs at least one provider"),
        ({"providers": {"p": provider()}, "headers": {"subject": "x-user"}}, "must be stripped from clients too"),
    ],
)
def test_bad_identity_sections(tmp_path: Path, identity: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        load(write(tmp_path, identity))
    assert any(expected in problem for problem in error.value.problems), error.value.problems


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        ({"providers": ["nobody"]}, "routes[0].auth.providers[0]: unknown provider 'nobody' (expected one of: p)"),
        ("sometimes", "routes[0].auth.mode: expected 'required', 'optional' or 'none' (got 'sometimes')"),
        ({"mode": "required", "extra": 1}, "routes[0].auth.extra: unknown key"),
    ],
)
def test_routes_auth_is_checked(tmp_path: Path, auth: Any, expected: str) -> None:
    routes = [{"match": {"prefix": "/a"}, "upstream": "svc", "auth": auth}]
    with pytest.raises(ConfigError) as error:
        load(write(tmp_path, {"providers": {"p": provider()}}, routes))
    assert expected in "\n".join(error.value.problems)


def test_default_mode_keeps_old_configs_open_and_closes_once_providers_exist(tmp_path: Path) -> None:
    assert load(write(tmp_path, None)).config.identity.default_mode == "none"
    settings = load(
        write(
            tmp_path,
            {"providers": {"p": provider()}},
            [{"match": {"prefix": "/"}, "upstream": "svc", "auth": "optional"}],
        )
    )
    assert settings.config.identity.default_mode == "required"
    route_auth = settings.routes.routes[0].auth
    assert route_auth is not None and route_auth.mode == "optional"
    with pytest.raises(ConfigError) as error:
        load(write(tmp_path, None, [{"match": {"prefix": "/"}, "upstream": "svc", "auth": "required"}]))
    assert "needs a provider under identity.providers" in "\n".join(error.value.problems)


async def test_unusable_key_file_stops_the_gateway_with_the_key_named(tmp_path: Path) -> None:
    from edge.server import Gateway

    (tmp_path / "jwks.json").write_text('{"keys": [{"kty": "EC", "crv": "P-256", "x": "bad", "y": "bad"}]}')
    settings = load(write(tmp_path, {"providers": {"p": provider(keys={"jwks_file": "jwks.json"})}}))
    with pytest.raises(ConfigError) as error:
        async with Gateway(settings):
            pass
    assert error.value.problems == [f"identity.providers.p.keys: {tmp_path / 'jwks.json'} has no key for RS256, ES256"]
