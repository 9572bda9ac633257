"""The tokens that must be refused, as tables both front doors' tests run.

Each case builds its token from the running IdP stand-in (its issuer and its
real key `k1`), so a case fails only for the reason it names.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from tests.identity.idp import IdP

Build = Callable[[IdP], str]
_ATTACKER = rsa.generate_private_key(65537, 2048)
_ATTACKER_EC = ec.generate_private_key(ec.SECP256R1())


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], key: Any = None, secret: bytes | None = None) -> str:
    """A compact JWS with exactly this header, signed RS256 by `key`, HMAC-SHA256 by `secret`, or not at all."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    if secret is not None:
        signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    elif isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        signature = b""
    return f"{signing_input}.{b64(signature)}"


def _public_pem(idp: IdP) -> bytes:
    return (
        idp.keys["k1"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _attacker_jwk() -> dict[str, Any]:
    return json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(_ATTACKER.public_key()))


# (what the attack is, the token, what the 401's error_description must say)
ATTACKS: list[tuple[str, str, Build]] = [
    ("alg none, no signature", "malformed", lambda idp: forge({"alg": "none", "kid": "k1"}, idp.claims())),
    ("alg none, with a signature", "unsigned", lambda idp: forge({"alg": "none", "kid": "k1"}, idp.claims()) + "c2ln"),
    ("alg NoNe", "unsigned", lambda idp: forge({"alg": "NoNe", "kid": "k1"}, idp.claims()) + "c2ln"),
    ("no alg", "names no algorithm", lambda idp: forge({"kid": "k1"}, idp.claims(), idp.keys["k1"])),
    (
        "HS256 signed with the RSA public key (key confusion)",
        "algorithm is not allowed",
        lambda idp: forge({"alg": "HS256", "kid": "k1"}, idp.claims(), secret=_public_pem(idp)),
    ),
    (
        "jku pointing at the attacker's key set",
        "jku header",
        lambda idp: forge({"alg": "RS256", "kid": "k1", "jku": "https://evil.example/jwks"}, idp.claims(), _ATTACKER),
    ),
    (
        "x5u pointing at the attacker's certificate",
        "x5u header",
        lambda idp: forge({"alg": "RS256", "kid": "k1", "x5u": "https://evil.example/cert"}, idp.claims(), _ATTACKER),
    ),
    (
        "jwk embedding the attacker's key",
        "jwk header",
        lambda idp: forge({"alg": "RS256", "jwk": _attacker_jwk()}, idp.claims(), _ATTACKER),
    ),
    (
        "x5c embedding a chain",
        "x5c header",
        lambda idp: forge({"alg": "RS256", "kid": "k1", "x5c": ["MIIB"]}, idp.claims(), _ATTACKER),
    ),
    (
        "jku on a token the real key signed",
        "jku header",
        lambda idp: forge({"alg": "RS256", "kid": "k1", "jku": f"{idp.issuer}/jwks"}, idp.claims(), idp.keys["k1"]),
    ),
    (
        "unknown crit",
        "critical header",
        lambda idp: forge({"alg": "RS256", "kid": "k1", "crit": ["exp"], "exp": 1}, idp.claims(), idp.keys["k1"]),
    ),
    (
        "kid is a number",
        "kid is not a string",
        lambda idp: forge({"alg": "RS256", "kid": 1}, idp.claims(), idp.keys["k1"]),
    ),
    (
        "kid is an object",
        "kid is not a string",
        lambda idp: forge({"alg": "RS256", "kid": {"k": "k1"}}, idp.claims(), idp.keys["k1"]),
    ),
    ("two segments", "malformed", lambda idp: ".".join(idp.token().split(".")[:2])),
    ("four segments", "malformed", lambda idp: idp.token() + ".e30"),
    ("one segment", "malformed", lambda idp: "justonesegment"),
    ("header not base64url", "malformed", lambda idp: "!!!." + idp.token().split(".", 1)[1]),
    ("header not JSON", "malformed", lambda idp: b64(b"{not json") + "." + idp.token().split(".", 1)[1]),
    ("header a JSON list", "malformed", lambda idp: b64(b"[1]") + "." + idp.token().split(".", 1)[1]),
    (
        "claims not JSON",
        "malformed",
        lambda idp: forge({"alg": "RS256", "kid": "k1"}, {}, idp.keys["k1"]).split(".")[0] + ".bm90anNvbg.c2ln",
    ),
    ("signature padded", "malformed", lambda idp: idp.token() + "=="),
    (
        "signed by another key under the real kid",
        "signature does not verify",
        lambda idp: forge({"alg": "RS256", "kid": "k1"}, idp.claims(), _ATTACKER),
    ),
    (
        "signature of another token",
        "signature does not verify",
        lambda idp: idp.token(sub="a").rsplit(".", 1)[0] + "." + idp.token(sub="b").rsplit(".", 1)[1],
    ),
    (
        "unknown kid",
        "signing key is not known",
        lambda idp: forge({"alg": "RS256", "kid": "nobody"}, idp.claims(), _ATTACKER),
    ),
    (
        "PS256 is not on the allow-list",
        "algorithm is not allowed",
        lambda idp: jwt.encode(idp.claims(), idp.keys["k1"], "PS256", headers={"kid": "k1"}),
    ),
    (
        "ES256 claimed for an RSA key",
        "does not match its signing key",
        lambda idp: forge({"alg": "ES256", "kid": "k1"}, idp.claims(), _ATTACKER_EC),
    ),
    ("larger than the provider's maximum", "larger than 2048 bytes", lambda idp: idp.token(padding="x" * 3000)),
]

CLAIMS: list[tuple[str, str, dict[str, Any]]] = [
    ("expired", "expired", {"exp": int(time.time()) - 120}),
    ("not valid yet (nbf)", "not valid yet", {"nbf": int(time.time()) + 120}),
    ("issued in the future (iat)", "not valid yet", {"iat": int(time.time()) + 120}),
    ("wrong issuer", "issuer is not trusted", {"iss": "https://other-idp.example"}),
    ("issuer with a suffix", "issuer is not trusted", {"iss": "SUFFIX"}),
    ("wrong audience", "audience", {"aud": "billing"}),
    ("no subject", "no sub claim", {"sub": None}),
    ("no exp", "no exp claim", {"exp": None}),
    ("no iat", "no iat claim", {"iat": None}),
    ("no aud", "no aud claim", {"aud": None}),
    ("older than max_age", "maximum age", {"iat": int(time.time()) - 7200}),
    ("subject with a newline", "control characters", {"sub": "alice\r\nx-edge-roles: admin"}),
    ("cnf without x5t#S256", "x5t#S256", {"cnf": {"jkt": "abc"}}),
]


def claims_token(idp: IdP, overrides: dict[str, Any]) -> str:
    if overrides.get("iss") == "SUFFIX":
        overrides = {**overrides, "iss": idp.issuer + ".evil"}
    return idp.token(**overrides)
