"""An identity provider stand-in on loopback: OIDC discovery, a JWKS, RFC 7662 introspection.

It holds real keys, signs real tokens, and counts what the gateway asks of it,
so tests can assert how often keys were fetched or tokens introspected. It can
be taken down (503 on every endpoint) to play an outage.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa

CLIENT_ID = "edge-gateway"
CLIENT_SECRET = "s3cret:with/odd chars"
AUDIENCE = "pharmacy"


class IdP:
    def __init__(self) -> None:
        self.issuer = ""
        self.keys: dict[str, Any] = {}  # kid -> private key
        self.published: list[str] = []  # kids in the JWKS
        self.jwks_fetches = 0
        self.discovery_fetches = 0
        self.introspections = 0
        self.down = False
        self.cache_control: str | None = None
        self.answers: dict[str, dict[str, Any]] = {}  # opaque token -> introspection answer

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/jwks", self._jwks)
        app.router.add_post("/introspect", self._introspect)
        return app

    def add_key(self, kid: str, kind: str = "RSA", publish: bool = True) -> Any:
        key = rsa.generate_private_key(65537, 2048) if kind == "RSA" else ec.generate_private_key(ec.SECP256R1())
        self.keys[kid] = key
        if publish:
            self.published.append(kid)
        return key

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid in self.published:
            public = self.keys[kid].public_key()
            algorithm = (
                jwt.algorithms.RSAAlgorithm if isinstance(public, rsa.RSAPublicKey) else jwt.algorithms.ECAlgorithm
            )
            keys.append({**json.loads(algorithm.to_jwk(public)), "kid": kid, "use": "sig"})
        return {"keys": keys}

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": "veteran-42",
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + 600,
            "jti": uuid.uuid4().hex,
            "realm_access": {"roles": ["patient", "unmapped"]},
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, kid: str = "k1", headers: dict[str, Any] | None = None, **claims: Any) -> str:
        key = self.keys[kid]
        algorithm = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        return jwt.encode(self.claims(**claims), key, algorithm=algorithm, headers={"kid": kid, **(headers or {})})

    async def _discovery(self, request: web.Request) -> web.Response:
        if self.down:
            return web.Response(status=503)
        self.discovery_fetches += 1
        return web.json_response({"issuer": self.issuer, "jwks_uri": f"{self.issuer}/jwks"})

    async def _jwks(self, request: web.Request) -> web.Response:
        self.jwks_fetches += 1
        if self.down:
            return web.Response(status=503)
        headers = {"Cache-Control": self.cache_control} if self.cache_control else None
        return web.json_response(self.jwks(), headers=headers)

    async def _introspect(self, request: web.Request) -> web.Response:
        if self.down:
            return web.Response(status=503)
        self.introspections += 1
        expected = base64.b64encode(b"edge-gateway:s3cret%3Awith%2Fodd%20chars").decode()
        form = await request.post()
        basic = request.headers.get("Authorization") == f"Basic {expected}"
        posted = (form.get("client_id"), form.get("client_secret")) == (CLIENT_ID, CLIENT_SECRET)
        if basic == posted:  # neither, or both at once (RFC 6749 2.3: one method per request)
            return web.json_response({"error": "invalid_client"}, status=401)
        return web.json_response(self.answers.get(str(form.get("token")), {"active": False}))
