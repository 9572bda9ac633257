"""JWT bearer tokens: look before verifying, then verify with pyjwt against bound keys.

`inspect` reads a token's header and claims without trusting them, only to
refuse what must never be tried (`alg: none`, keys or key URLs carried in the
header: `jku`, `x5u`, `jwk`, `x5c`; any `crit`; a non-string `kid`; segments
that are not strict base64url JSON) and to pick the provider by `iss`.
`JwtVerifier.verify` then finds the key by `kid` and lets pyjwt check the
signature with only the algorithms bound to that key, and the claims:
required claims, exact issuer, audience, `exp`/`nbf`/`iat` with leeway (a
future `iat` is refused), and an optional maximum age.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
from dataclasses import dataclass
from typing import Any

import jwt
from jwt import exceptions as jwt_errors

from edge.call import Principal
from edge.config.identity import JwtProvider
from edge.pipeline.identity.claims import ClaimError, caller_of
from edge.pipeline.identity.failures import AuthFailure
from edge.pipeline.identity.keys import KeySet
from edge.pipeline.identity.tokens import Verified

FORBIDDEN_HEADER = ("jku", "x5u", "jwk", "x5c")
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+\Z")
_MAX_KID = 256

_DESCRIPTIONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt_errors.ExpiredSignatureError, "the token has expired"),
    (jwt_errors.ImmatureSignatureError, "the token is not valid yet"),
    (jwt_errors.InvalidAudienceError, "the token is not meant for this audience"),
    (jwt_errors.InvalidIssuerError, "the token's issuer is not trusted"),
    (jwt_errors.InvalidSignatureError, "the token's signature does not verify"),
    (jwt_errors.InvalidAlgorithmError, "the token's algorithm is not allowed"),
    (jwt_errors.InvalidKeyError, "the signing key is not acceptable"),
    (jwt_errors.InvalidIssuedAtError, "the token's iat is not a number"),
    (jwt_errors.DecodeError, "the token is malformed"),
)


@dataclass(frozen=True, slots=True)
class Unverified:
    """A token's header and claims as sent: used to choose, never to trust."""

    header: dict[str, Any]
    claims: dict[str, Any]

    @property
    def kid(self) -> str | None:
        kid = self.header.get("kid")
        return kid if isinstance(kid, str) else None


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


def _segment(text: str) -> dict[str, Any]:
    if not _SEGMENT.match(text) or len(text) % 4 == 1:
        raise AuthFailure("the token is malformed")
    try:
        value = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        raise AuthFailure("the token is malformed") from None
    if not isinstance(value, dict):
        raise AuthFailure("the token is malformed")
    return value


def inspect(token: str) -> Unverified:
    """The header and claims of a compact JWS, refusing what is never acceptable."""
    parts = token.split(".")
    if len(parts) != 3 or not _SEGMENT.match(parts[2]):
        raise AuthFailure("the token is malformed")
    header, claims = _segment(parts[0]), _segment(parts[1])
    alg = header.get("alg")
    if not isinstance(alg, str) or not alg:
        raise AuthFailure("the token names no algorithm")
    if alg.lower() == "none":
        raise AuthFailure("unsigned tokens are not accepted")
    for name in FORBIDDEN_HEADER:
        if name in header:
            raise AuthFailure(f"tokens carrying a {name} header are not accepted")
    if "crit" in header:
        raise AuthFailure("the token has critical header parameters this gateway does not understand")
    kid = header.get("kid")
    if kid is not None and (not isinstance(kid, str) or len(kid) > _MAX_KID):
        raise AuthFailure("the token's kid is not a string")
    return Unverified(header, claims)


def describe(error: jwt_errors.PyJWTError) -> str:
    if isinstance(error, jwt_errors.MissingRequiredClaimError):
        return f"the token has no {error.claim} claim"
    for kind, text in _DESCRIPTIONS:
        if isinstance(error, kind):
            return text
    return "the token is not valid"


class JwtVerifier:
    """One `jwt` provider: its keys, its allow-list and its claim rules."""

    method = "jwt"

    def __init__(self, name: str, config: JwtProvider, keys: KeySet) -> None:
        self.name = name
        self.config = config
        self.keys = keys
        self._audience = list(config.audience) or None
        self._jwt = jwt.PyJWT(
            {
                "require": list(config.required_claims),
                "verify_aud": bool(config.audience),
                "enforce_minimum_key_length": True,
            }
        )

    async def verify(self, token: str, unverified: Unverified) -> Verified:
        config = self.config
        if len(token) > config.max_token_size:
            raise AuthFailure(f"the token is larger than {config.max_token_size} bytes")
        alg = unverified.header["alg"]
        if alg not in config.algorithms:
            raise AuthFailure("the token's algorithm is not allowed")
        keys = await self.keys.find(unverified.kid)
        if not keys:
            raise AuthFailure("the token's signing key is not known")
        candidates = [key for key in keys if alg in key.algorithms]
        if not candidates:
            raise AuthFailure("the token's algorithm does not match its signing key")
        claims: dict[str, Any] | None = None
        for key in candidates:
            try:
                claims = self._jwt.decode(
                    token,
                    key.key,
                    algorithms=key.algorithms,
                    audience=self._audience,
                    issuer=config.issuer,
                    leeway=config.leeway,
                )
                break
            except jwt_errors.InvalidSignatureError:
                continue
            except jwt_errors.PyJWTError as error:
                raise AuthFailure(describe(error)) from None
        if claims is None:
            raise AuthFailure("the token's signature does not verify")
        return self._entry(claims)

    def _entry(self, claims: dict[str, Any]) -> Verified:
        config = self.config
        expires = _number(claims.get("exp"), math.inf) + config.leeway
        if config.max_age is not None:
            iat = _number(claims.get("iat"), None)
            if iat is None:
                raise AuthFailure("the token has no iat claim")
            born_by = iat + config.max_age + config.leeway
            if born_by <= time.time():
                raise AuthFailure("the token is older than the maximum age")
            expires = min(expires, born_by)
        cnf = claims.get("cnf")
        thumbprint = cnf.get("x5t#S256") if isinstance(cnf, dict) else None
        if cnf is not None and not isinstance(thumbprint, str):
            raise AuthFailure("the token's cnf claim names no certificate (x5t#S256)")
        if config.certificate_bound and thumbprint is None:
            raise AuthFailure("the token is not bound to a client certificate")
        try:
            subject, roles, subject_header, roles_header = caller_of(claims, config.subject_claim, config.roles)
        except ClaimError as error:
            raise AuthFailure(str(error)) from None
        principal = Principal(subject, roles, issuer=config.issuer, method=self.method, claims=claims)
        return Verified(principal, self.name, expires, subject_header, roles_header, thumbprint)


def _number(value: Any, default: Any) -> Any:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default
