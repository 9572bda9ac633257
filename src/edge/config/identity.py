"""The `identity:` section of `edge.yaml` and the per-route `auth:` override.

Providers are named; each is one way of proving who the caller is: `jwt`
(bearer tokens verified against a key set), `introspection` (opaque OAuth2
tokens asked of an RFC 7662 endpoint) or `client-cert` (the verified TLS
client certificate). A route says `auth: required | optional | none`, or a
mapping with `mode` and `providers`; without it the section's `default`
applies, which is `required` once any provider is configured and `none`
without an identity section, so configs written before identity keep working.
Everything a request would otherwise recompute (algorithm sets, DN rules,
header names) is checked and normalised here, at load.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from edge.config.base import ByteSize, Duration, Frozen

Mode = Literal["required", "optional", "none"]
SYMMETRIC = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "ES256K", "EdDSA"}
)
SUBJECT_SOURCES = ("san:uri", "san:email", "san:dns", "dn")
_HEADER = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+\Z")
_DN_PAIR = re.compile(r"\s*([A-Za-z][A-Za-z0-9.]*)\s*=\s*((?:[^,\\]|\\.)*?)\s*(?:,|\Z)")


def _strings(value: Any) -> Any:
    """`audience: api` and `audience: [api, web]` mean the same."""
    return (value,) if isinstance(value, str) else value


def _http_url(value: str, what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http(s) URL for {what} (got {value!r})")
    return value


class Roles(Frozen):
    """Where roles come from in a token's claims, and how claim values become gateway roles."""

    claim: str | None = Field(default="roles", description="claim name or dotted path, e.g. realm_access.roles")
    separator: str | None = Field(default=None, description="split a string claim, e.g. ' ' for scope")
    map: dict[str, tuple[str, ...]] = Field(default={}, description="claim value -> gateway role(s)")
    keep_unmapped: bool = Field(default=False, description="with a map, also keep values the map does not name")

    @field_validator("map", mode="before")
    @classmethod
    def _map_values(cls, value: Any) -> Any:
        return {k: _strings(v) for k, v in value.items()} if isinstance(value, dict) else value


class Keys(Frozen):
    """Where a JWT provider's verification keys come from: exactly one source."""

    pem: str | None = Field(default=None, description="an inline PEM public key")
    pem_file: Path | None = None
    kid: str | None = Field(default=None, description="the key id of a PEM key (tokens then must name it)")
    jwk: dict[str, Any] | None = Field(default=None, description="one inline JWK")
    jwks_file: Path | None = None
    jwks_url: str | None = None
    discovery: bool = Field(default=False, description="find jwks_uri at <issuer>/.well-known/openid-configuration")
    ttl: Duration = Field(default=300.0, gt=0, description="how long a fetched key set is fresh without max-age")
    min_ttl: Duration = Field(default=60.0, gt=0, description="lower bound on Cache-Control max-age")
    max_ttl: Duration = Field(default=86400.0, gt=0, description="upper bound on Cache-Control max-age")
    max_stale: Duration = Field(default=86400.0, description="how long past expiry the last good set is used")
    unknown_kid_interval: Duration = Field(default=30.0, description="at most one refetch per interval for new kids")
    timeout: Duration = Field(default=5.0, gt=0)
    ca: Path | None = Field(default=None, description="CA bundle for the key set URL (default: system CAs)")

    @model_validator(mode="after")
    def _one_source(self) -> Keys:
        sources = [
            name
            for name in ("pem", "pem_file", "jwk", "jwks_file", "jwks_url", "discovery")
            if getattr(self, name) not in (None, False)
        ]
        if len(sources) != 1:
            raise ValueError(
                "expected exactly one of pem, pem_file, jwk, jwks_file, jwks_url, discovery: true"
                f" (got {', '.join(sources) or 'none'})"
            )
        if self.jwks_url is not None:
            _http_url(self.jwks_url, "jwks_url")
        if self.min_ttl > self.max_ttl:
            raise ValueError("min_ttl must not be above max_ttl")
        return self

    @property
    def remote(self) -> bool:
        return self.jwks_url is not None or self.discovery


class JwtProvider(Frozen):
    type: Literal["jwt"]
    issuer: str = Field(description="exact `iss` value tokens must carry")
    audience: tuple[str, ...] = ()
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    keys: Keys
    required_claims: tuple[str, ...] = ("exp", "iat", "iss", "aud", "sub")
    leeway: Duration = 30.0
    max_token_size: ByteSize = 8192
    max_age: Duration | None = Field(default=None, description="reject tokens whose iat is older than this")
    subject_claim: str = "sub"
    roles: Roles = Roles()
    certificate_bound: bool = Field(default=False, description="require RFC 8705 cnf.x5t#S256 in every token")

    _audience = field_validator("audience", mode="before")(_strings)

    @field_validator("algorithms")
    @classmethod
    def _algorithms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [a for a in value if a not in SYMMETRIC | ASYMMETRIC]
        if unknown:
            raise ValueError(
                f"expected algorithms from {', '.join(sorted(SYMMETRIC | ASYMMETRIC))} (got {unknown[0]!r})"
            )
        if not value:
            raise ValueError("expected at least one algorithm")
        if set(value) & SYMMETRIC and set(value) & ASYMMETRIC:
            raise ValueError("expected HS* or asymmetric algorithms, not both in one provider (key confusion)")
        return tuple(dict.fromkeys(value))

    @model_validator(mode="after")
    def _consistent(self) -> JwtProvider:
        if "aud" in self.required_claims and not self.audience:
            raise ValueError("audience is required while aud is a required claim")
        symmetric = bool(set(self.algorithms) & SYMMETRIC)
        if symmetric and (self.keys.remote or self.keys.pem is not None or self.keys.pem_file is not None):
            raise ValueError("HS* keys are shared secrets: give them as an inline jwk or a jwks_file (kty oct)")
        if self.keys.discovery:
            _http_url(self.issuer, "issuer (discovery fetches <issuer>/.well-known/openid-configuration)")
        return self


class IntrospectionProvider(Frozen):
    type: Literal["introspection"]
    endpoint: str
    client_id: str
    client_secret: str
    client_auth: Literal["basic", "post"] = Field(
        default="basic", description="client_secret_basic (Authorization header) or client_secret_post (form fields)"
    )
    issuer: str | None = Field(default=None, description="when set, an `iss` in the answer must equal it")
    audience: tuple[str, ...] = ()
    cache_ttl: Duration = Field(default=300.0, description="active answers kept at most this long (and not past exp)")
    negative_ttl: Duration = Field(default=30.0, description="inactive answers kept this long")
    timeout: Duration = Field(default=5.0, gt=0)
    max_token_size: ByteSize = 8192
    ca: Path | None = None
    subject_claim: str = "sub"
    roles: Roles = Roles(claim="scope", separator=" ")

    _audience = field_validator("audience", mode="before")(_strings)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        return _http_url(value, "endpoint")


class CertRule(Frozen):
    """Roles for certificates whose subject DN has every listed attribute (`O=DoD, OU=CAC`)."""

    match: tuple[tuple[str, str], ...]
    roles: tuple[str, ...]

    _roles = field_validator("roles", mode="before")(_strings)

    @field_validator("match", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return tuple((str(k), str(v)) for k, v in value.items())
        if not isinstance(value, str):
            return value
        pairs = []
        position = 0
        while position < len(value):
            found = _DN_PAIR.match(value, position)
            if found is None or found.end() == position:
                raise ValueError(f"expected attributes such as 'O=DoD, OU=CAC' (got {value!r})")
            pairs.append((found.group(1), re.sub(r"\\(.)", r"\1", found.group(2))))
            position = found.end()
        if not pairs:
            raise ValueError("expected at least one attribute, such as 'O=DoD'")
        return tuple(pairs)


class ClientCertProvider(Frozen):
    type: Literal["client-cert"]
    subject: tuple[str, ...] = Field(
        default=("san:uri", "san:email", "dn:CN"),
        description="where the subject comes from, first found wins: san:uri, san:email, san:dns, dn, dn:<attr>",
    )
    roles: tuple[CertRule, ...] = ()

    @field_validator("subject", mode="before")
    @classmethod
    def _subject(cls, value: Any) -> Any:
        value = _strings(value)
        for source in value if isinstance(value, list | tuple) else ():
            if source not in SUBJECT_SOURCES and not (
                isinstance(source, str) and re.match(r"dn:[A-Za-z.0-9]+\Z", source)
            ):
                raise ValueError(f"expected san:uri, san:email, san:dns, dn or dn:<attribute> (got {source!r})")
        return value


Provider = Annotated[JwtProvider | IntrospectionProvider | ClientCertProvider, Field(discriminator="type")]


class IdentityHeaders(Frozen):
    """What backends are told, and what client-sent headers never reach them."""

    subject: str = "x-edge-subject"
    roles: str = "x-edge-roles"
    method: str = "x-edge-auth-method"
    strip_prefixes: tuple[str, ...] = ("x-edge-",)
    strip: tuple[str, ...] = ()
    forward_authorization: bool = True

    @field_validator("subject", "roles", "method", "strip_prefixes", "strip", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value.lower()
        return (
            tuple(v.lower() if isinstance(v, str) else v for v in value) if isinstance(value, list | tuple) else value
        )

    @field_validator("subject", "roles", "method")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _HEADER.match(value):
            raise ValueError(f"expected a header name (got {value!r})")
        return value

    @model_validator(mode="after")
    def _set_names_are_stripped(self) -> IdentityHeaders:
        unstripped = [
            n
            for n in (self.subject, self.roles, self.method)
            if not n.startswith(self.strip_prefixes) and n not in self.strip
        ]
        if unstripped:
            raise ValueError(f"header {unstripped[0]!r} is set for backends, so it must be stripped from clients too")
        return self


class TokenCache(Frozen):
    size: int = Field(default=10000, ge=1)
    ttl: Duration = Field(default=300.0, description="a verified token is kept at most this long (and not past exp)")


class Identity(Frozen):
    default: Mode | None = Field(default=None, description="required once providers exist, else none")
    realm: str = "edge"
    providers: dict[str, Provider] = {}
    cache: TokenCache = TokenCache()
    headers: IdentityHeaders = IdentityHeaders()

    @field_validator("realm")
    @classmethod
    def _realm(cls, value: str) -> str:
        if any(c in value for c in '"\\') or not value.isprintable():
            raise ValueError(f"expected a realm without quotes, backslashes or control characters (got {value!r})")
        return value

    @model_validator(mode="after")
    def _default_needs_providers(self) -> Identity:
        if self.default in ("required", "optional") and not self.providers:
            raise ValueError(f"default: {self.default} needs at least one provider")
        return self

    @property
    def default_mode(self) -> Mode:
        if self.default is not None:
            return self.default
        return "required" if self.providers else "none"


class RouteAuth(Frozen):
    """A route's override: `auth: optional`, or `auth: {mode: required, providers: [corp]}`."""

    mode: Mode | None = None
    providers: tuple[str, ...] = Field(default=(), description="empty: every configured provider")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"mode": value} if isinstance(value, str) else value


def check_routes_auth(routes: Iterable[Any], identity: Identity, path: Path) -> list[str]:
    """Problems with the routes' `auth:` against the identity section: unknown providers, modes without any."""
    problems = []
    known = ", ".join(sorted(identity.providers)) or "none configured"
    for index, route in enumerate(routes):
        auth: RouteAuth | None = getattr(route, "auth", None)
        if auth is None:
            continue
        where = f"{path}: routes[{index}].auth"
        for position, name in enumerate(auth.providers):
            if name not in identity.providers:
                problems.append(f"{where}.providers[{position}]: unknown provider {name!r} (expected one of: {known})")
        if auth.mode in ("required", "optional") and not identity.providers:
            problems.append(f"{where}.mode: {auth.mode} needs a provider under identity.providers in edge.yaml")
    return problems
