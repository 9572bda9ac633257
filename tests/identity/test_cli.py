"""`edge certs` and `edge token`: the dev credentials work against a gateway configured with them."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from edge.certs import DEV_AUDIENCE, DEV_ISSUER, load_signing_key, mint_token
from edge.cli import main
from tests.conftest import GatewayFiles
from tests.identity.conftest import headers_seen

ROUTES = {"routes": [{"match": {"prefix": "/"}, "upstream": "svc"}]}


def test_certs_writes_a_dev_set_and_token_mints_with_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "dev"
    assert main(["certs", "--dir", str(folder), "--client", "pat@va.gov"]) == 0
    out = capsys.readouterr().out
    assert "jwks_file" in out and str(folder / "ca.crt") in out
    for name in ("ca.crt", "server.crt", "server.key", "client-pat.crt", "client-pat.key", "signing.key", "jwks.json"):
        assert (folder / name).exists(), name
    assert stat.S_IMODE((folder / "signing.key").stat().st_mode) == 0o600
    assert main(["certs", "--dir", str(folder)]) == 1  # never overwrites without --force
    assert main(["token", "--dir", str(folder), "--sub", "pat", "--role", "Veteran", "--role", "Staff"]) == 0
    token = capsys.readouterr().out.strip()
    key = jwt.PyJWKSet.from_dict(json.loads((folder / "jwks.json").read_text())).keys[0]
    claims = jwt.decode(token, key, algorithms=["ES256"], audience=DEV_AUDIENCE, issuer=DEV_ISSUER)
    assert (claims["sub"], claims["roles"]) == ("pat", ["Veteran", "Staff"])
    assert main(["token", "--dir", str(tmp_path / "missing"), "--sub", "x"]) == 1


async def test_gateway_trusts_a_jwks_file_and_an_inline_pem(edge: GatewayFiles, echo: str, tmp_path: Path) -> None:
    folder = tmp_path / "dev"
    assert main(["certs", "--dir", str(folder)]) == 0
    key = load_signing_key(folder / "signing.key")
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    providers = {
        "dev": {"type": "jwt", "issuer": DEV_ISSUER, "audience": DEV_AUDIENCE, "algorithms": ["ES256"],
                "keys": {"jwks_file": str(folder / "jwks.json")}},
        "pem": {"type": "jwt", "issuer": "https://pem.example", "audience": DEV_AUDIENCE, "algorithms": ["ES256"],
                "keys": {"pem": pem.decode()}},
        "hmac": {"type": "jwt", "issuer": "https://hmac.example", "audience": DEV_AUDIENCE, "algorithms": ["HS256"],
                 "keys": {"jwk": {"kty": "oct", "kid": "h1", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}}},
    }  # fmt: skip
    await edge.start(ROUTES, upstreams={"svc": {"endpoints": [echo]}}, identity={"providers": providers})
    secret = b"secret-secret-secret-secret-secret"
    tokens = {
        "dev": mint_token(key, "pat", ["Veteran"]),
        "pem": mint_token(key, "pem-user", kid="whatever", issuer="https://pem.example"),
        "hmac": jwt.encode(
            {"iss": "https://hmac.example", "sub": "h", "aud": DEV_AUDIENCE, "iat": 1, "exp": 2**40},
            secret,
            "HS256",
            headers={"kid": "h1"},
        ),
    }
    async with aiohttp.ClientSession() as session:
        for name, token in tokens.items():
            async with session.get(edge.url + "/x", headers={"Authorization": f"Bearer {token}"}) as response:
                assert response.status == 200, name
                assert headers_seen(await response.json())["x-edge-auth-method"] == ["jwt"]
