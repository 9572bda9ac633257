"""The identity stage: who is calling, for both front doors, in one place.

For every call it first strips identity headers a client may have sent
(`x-edge-*` and any configured names), so a backend only ever sees what this
stage set. The route's `auth` (or the section's default) then decides:
`none` goes on without looking at credentials; `optional` lets a call without
credentials through anonymously; `required` answers 401 / UNAUTHENTICATED.
Credentials that are presented must be good in either mode.

A bearer token (HTTP `Authorization`, gRPC `authorization` metadata) is looked
up in the verified-token cache first; on a miss, a JWT goes to the provider
whose issuer it names, anything else to an introspection provider. Without a
token, a verified client certificate is used when the route accepts a
`client-cert` provider. A token bound to a certificate (RFC 8705) is only
accepted over a connection presenting that certificate. On success the call
gets its `Principal`, the backend gets `x-edge-subject`, `x-edge-roles` and
`x-edge-auth-method`, and `call.decisions["identity"]` records what was
decided for the audit record (which adds the client certificate's SHA-256
from `Peer.certificate` itself). Records without a reason take few forms
(mode, outcome, provider), so each is made once and shared by every call
that ends that way: nothing changes a record once it is in `decisions`, and
the audit hand-off then carries each form once per batch.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Final

from edge.call import Call, Denial, Metadata
from edge.config import ConfigError
from edge.config.identity import ClientCertProvider, Identity, IntrospectionProvider, JwtProvider, Mode
from edge.pipeline.identity.certs import CertificateIdentity, thumbprint
from edge.pipeline.identity.failures import AuthFailure, IdentityUnavailable, unauthenticated, unavailable
from edge.pipeline.identity.fetcher import Fetcher, FetcherFactory
from edge.pipeline.identity.introspection import Introspector
from edge.pipeline.identity.jwt import JwtVerifier, inspect, looks_like_jwt
from edge.pipeline.identity.keys import (
    KeySet,
    RemoteKeys,
    StaticKeys,
    VerificationKey,
    key_from_jwk,
    key_from_pem,
    keys_from_jwks,
)
from edge.pipeline.identity.tokens import TokenCache, Verified, token_digest


class IdentityStage:
    name = "identity"

    def __init__(self, config: Identity, fetchers: FetcherFactory) -> None:
        self.config = config
        self.cache = TokenCache(config.cache.size, config.cache.ttl)
        self.jwt: dict[str, JwtVerifier] = {}
        self.introspectors: dict[str, Introspector] = {}
        self.certificates: dict[str, CertificateIdentity] = {}
        self.remote_keys: dict[str, RemoteKeys] = {}
        self._fetchers: list[Fetcher] = []
        self._static: dict[str, StaticKeys] = {}
        for name, provider in config.providers.items():
            if isinstance(provider, JwtProvider):
                self.jwt[name] = JwtVerifier(name, provider, self._key_set(name, provider, fetchers))
            elif isinstance(provider, IntrospectionProvider):
                fetcher = fetchers(timeout=provider.timeout, ca=provider.ca)
                self._fetchers.append(fetcher)
                self.introspectors[name] = Introspector(name, provider, fetcher)
            elif isinstance(provider, ClientCertProvider):
                self.certificates[name] = CertificateIdentity(name, provider)
        self._by_issuer: dict[str, list[str]] = {}
        for name, verifier in self.jwt.items():
            self._by_issuer.setdefault(verifier.config.issuer, []).append(name)
        headers = config.headers
        self._records: dict[tuple[str, str | None, str | None], dict[str, str]] = {}
        self._stripped = StrippedNames(headers.strip_prefixes, frozenset(headers.strip)).__getitem__
        self._subject_header, self._roles_header, self._method_header = headers.subject, headers.roles, headers.method
        self._forward_authorization = headers.forward_authorization
        self._default: Mode = config.default_mode
        self._all = tuple(config.providers)
        self._bearer_providers = frozenset(self.jwt) | frozenset(self.introspectors)
        sizes = [p.max_token_size for p in config.providers.values() if not isinstance(p, ClientCertProvider)]
        self._max_token = max(sizes, default=0)

    def _key_set(self, name: str, provider: JwtProvider, fetchers: FetcherFactory) -> KeySet:
        keys = provider.keys
        if keys.remote:
            fetcher = fetchers(timeout=keys.timeout, ca=keys.ca)
            self._fetchers.append(fetcher)
            self.remote_keys[name] = RemoteKeys(name, keys, provider.algorithms, fetcher, provider.issuer)
            return self.remote_keys[name]
        static = StaticKeys({})
        self._static[name] = static
        return static

    async def start(self) -> None:
        """Load key files (ConfigError when one is unusable) and make the first key set fetches.

        Fetches run concurrently; one that fails is logged and retried in the background, so an
        identity provider that is down at start delays tokens of that provider, not the gateway.
        """
        for name, static in self._static.items():
            provider = self.config.providers[name]
            assert isinstance(provider, JwtProvider)
            try:
                static.keys = await asyncio.to_thread(_load_static, name, provider)
            except ValueError as error:
                raise ConfigError([str(error)]) from None
        await asyncio.gather(*(keys.start() for keys in self.remote_keys.values()))

    async def aclose(self) -> None:
        for keys in self.remote_keys.values():
            await keys.aclose()
        for introspector in self.introspectors.values():
            await introspector.aclose()
        for fetcher in self._fetchers:
            await fetcher.aclose()

    async def __call__(self, call: Call) -> Denial | None:
        metadata = call.metadata
        metadata.remove_where(self._stripped)
        route = call.route
        auth = route.spec.auth if route is not None and route.spec is not None else None
        mode = auth.mode if auth is not None and auth.mode is not None else self._default
        certificate = call.peer.certificate
        decisions = call.decisions
        decisions["identity"] = self._record(mode)
        if mode == "none":
            return None
        allowed = auth.providers if auth is not None and auth.providers else self._all
        try:
            entry = await self._authenticate(metadata, allowed, certificate)
        except AuthFailure as failure:
            decisions["identity"] = {"mode": mode, "outcome": "denied", "reason": failure.description}
            return unauthenticated(self.config.realm, failure, self._bearer_providers.isdisjoint(allowed) is False)
        except IdentityUnavailable as error:
            decisions["identity"] = self._record(mode, "unavailable")
            return unavailable(error)
        if entry is None:
            if mode == "optional":
                decisions["identity"] = self._record(mode, "anonymous")
                return None
            decisions["identity"] = {"mode": mode, "outcome": "denied", "reason": "credentials are required"}
            return unauthenticated(self.config.realm, None, self._bearer_providers.isdisjoint(allowed) is False)
        principal = entry.principal
        call.principal = principal
        decisions["identity"] = self._record(mode, "authenticated", entry.provider)
        metadata.add(self._subject_header, entry.subject_header)
        metadata.add(self._roles_header, entry.roles_header)
        metadata.add(self._method_header, principal.method)
        if not self._forward_authorization:
            metadata.remove("authorization")
        return None

    def _record(self, mode: str, outcome: str | None = None, provider: str | None = None) -> dict[str, str]:
        """The decision's audit record; the few combinations are made once and shared, never changed."""
        key = (mode, outcome, provider)
        record = self._records.get(key)
        if record is None:
            record = {"mode": mode}
            if outcome is not None:
                record["outcome"] = outcome
            if provider is not None:
                record["provider"] = provider
            self._records[key] = record
        return record

    async def _authenticate(
        self, metadata: Metadata, allowed: Sequence[str], certificate: bytes | None
    ) -> Verified | None:
        token = self._bearer(metadata) if not self._bearer_providers.isdisjoint(allowed) else None
        if token is not None:
            digest = token_digest(token)
            entry = self.cache.get(digest)
            if entry is None or entry.provider not in allowed:
                fresh = await self._verify(token, digest, allowed)
                if entry is None:
                    self.cache.put(digest, fresh)
                entry = fresh
            if entry.thumbprint is not None and (certificate is None or thumbprint(certificate) != entry.thumbprint):
                raise AuthFailure("the token is bound to a client certificate this connection did not present")
            return entry
        if certificate is not None:
            for name in allowed:
                identity = self.certificates.get(name)
                if identity is not None:
                    entry = identity.identify(certificate)
                    if entry.expires <= time.time():
                        raise AuthFailure("the client certificate has expired")
                    return entry
        return None

    def _bearer(self, metadata: Metadata) -> str | None:
        values = metadata.getall("authorization")
        if not values:
            return None
        if len(values) > 1:
            raise AuthFailure("more than one authorization header", "invalid_request")
        value = values[0]
        text = value if isinstance(value, str) else value.decode("latin-1")
        scheme, _, token = text.partition(" ")
        if scheme.lower() != "bearer":
            return None
        token = token.strip()
        if not token:
            raise AuthFailure("the bearer token is empty", "invalid_request")
        if len(token) > self._max_token:
            raise AuthFailure(f"the token is larger than {self._max_token} bytes")
        return token

    async def _verify(self, token: str, digest: bytes, allowed: Sequence[str]) -> Verified:
        if looks_like_jwt(token):
            unverified = inspect(token)
            issuer = unverified.claims.get("iss")
            names = [n for n in self._by_issuer.get(issuer, ()) if n in allowed] if isinstance(issuer, str) else []
            failure: AuthFailure | None = None
            for name in names:
                try:
                    return await self.jwt[name].verify(token, unverified)
                except AuthFailure as error:
                    failure = failure or error
            if failure is not None:
                raise failure
        introspectors = [self.introspectors[n] for n in allowed if n in self.introspectors]
        if introspectors:
            return await introspectors[0].verify(token, digest)
        if looks_like_jwt(token):
            raise AuthFailure("the token's issuer is not trusted")
        raise AuthFailure("the token is malformed")


class StrippedNames(dict[str, bool]):
    """Whether a client may not send a header: decided once per name, since clients send the same few names.

    Looking a name up here is one dict lookup in C where the test itself is a
    Python call per header per call. Names are the client's own, so only the
    first `MAX_NAMES` are kept; the rest are decided each time.
    """

    MAX_NAMES: Final = 1024

    def __init__(self, prefixes: tuple[str, ...], names: frozenset[str]) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.names = names

    def __missing__(self, name: str) -> bool:
        stripped = name.startswith(self.prefixes) or name in self.names
        if len(self) < StrippedNames.MAX_NAMES:
            self[name] = stripped
        return stripped


def _load_static(name: str, provider: JwtProvider) -> dict[str | None, VerificationKey]:
    """Keys written in edge.yaml or in a file next to it; ValueError names what is wrong."""
    keys = provider.keys
    allowed = provider.algorithms
    try:
        if keys.pem is not None or keys.pem_file is not None:
            pem = keys.pem.encode() if keys.pem is not None else keys.pem_file.read_bytes()  # type: ignore[union-attr]
            key = key_from_pem(pem, keys.kid, allowed)
            return {key.kid: key}
        if keys.jwk is not None:
            found = key_from_jwk(keys.jwk, allowed, secrets=True)
            if found is None:
                raise ValueError(f"the jwk cannot verify any of {', '.join(allowed)}")
            return {found.kid: found}
        assert keys.jwks_file is not None
        loaded = keys_from_jwks(json.loads(keys.jwks_file.read_text()), allowed, secrets=True)
    except (OSError, ValueError) as error:
        raise ValueError(f"identity.providers.{name}.keys: {error}") from None
    if not loaded:
        raise ValueError(f"identity.providers.{name}.keys: {keys.jwks_file} has no key for {', '.join(allowed)}")
    return loaded
