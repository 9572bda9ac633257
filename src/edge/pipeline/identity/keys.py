"""Verification keys for a JWT provider: inline, from a file, or fetched and cached.

Each key carries the algorithms it may verify: the provider's allow-list
intersected with what its key type can do (RSA: RS*/PS*, an EC curve: its one
ES*, Ed25519/Ed448: EdDSA, a shared secret: HS*) and with the JWK's own `alg`.
A token's header never widens that set, which is what rules out `none` and
HS/RS key confusion.

`RemoteKeys` is the JWKS cache: fetched without blocking the event loop
(through a `Fetcher`), fresh for the response's `max-age` clamped to
[min_ttl, max_ttl], refreshed in the background before it expires, refetched
on an unknown `kid` at most once per `unknown_kid_interval` with one fetch in
flight, unknown kids remembered, and the last good set kept when the identity
provider is down, for at most `max_stale` past its expiry. A failed fetch (or
one that yields no usable key) never replaces the set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from edge.config.identity import Keys
from edge.pipeline.identity.failures import IdentityUnavailable
from edge.pipeline.identity.fetcher import Fetcher, FetchError

log = logging.getLogger("edge.identity.keys")

_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512", "secp256k1": "ES256K"}
_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
_UNKNOWN_KIDS_KEPT = 4096


class KeysUnavailable(IdentityUnavailable):
    """No key set can be trusted right now: never fetched, or stale past `max_stale`."""


@dataclass(frozen=True, slots=True)
class VerificationKey:
    kid: str | None
    key: Any  # a cryptography public key, or bytes for an HMAC secret
    algorithms: tuple[str, ...]


def algorithms_for(key: Any) -> frozenset[str]:
    """What a key of this type can verify, whatever anyone claims."""
    if isinstance(key, rsa.RSAPublicKey):
        return _RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey):
        found = _EC_ALGORITHMS.get(key.curve.name)
        return frozenset({found}) if found else frozenset()
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return frozenset({"EdDSA"})
    if isinstance(key, bytes):
        return _HMAC_ALGORITHMS
    return frozenset()


def bind(kid: str | None, key: Any, allowed: Sequence[str], jwk_alg: str | None = None) -> VerificationKey | None:
    usable = algorithms_for(key) & set(allowed)
    if jwk_alg is not None:
        usable &= {jwk_alg}
    if not usable:
        return None
    return VerificationKey(kid, key, tuple(a for a in allowed if a in usable))


def key_from_jwk(data: Any, allowed: Sequence[str], *, secrets: bool) -> VerificationKey | None:
    """One JWK as a verification key; None for keys that cannot verify any allowed algorithm."""
    if not isinstance(data, dict):
        return None
    kid = data.get("kid")
    if kid is not None and not isinstance(kid, str):
        return None
    if data.get("use", "sig") != "sig" or (data.get("kty") != "oct" and "d" in data):
        return None
    if data.get("kty") == "oct" and not secrets:
        return None
    jwk_alg = data.get("alg")
    try:
        key = PyJWK(data, jwk_alg if isinstance(jwk_alg, str) and jwk_alg in allowed else None).key
    except (PyJWTError, ValueError, TypeError, KeyError):
        return None
    return bind(kid, key, allowed, jwk_alg if isinstance(jwk_alg, str) else None)


def keys_from_jwks(document: Any, allowed: Sequence[str], *, secrets: bool) -> dict[str | None, VerificationKey]:
    """The usable keys of a JWKS document, by kid (keys without a kid under None, the first one wins)."""
    found: dict[str | None, VerificationKey] = {}
    entries = document.get("keys") if isinstance(document, dict) else None
    for entry in entries if isinstance(entries, list) else ():
        key = key_from_jwk(entry, allowed, secrets=secrets)
        if key is not None:
            found.setdefault(key.kid, key)
    return found


def key_from_pem(pem: bytes, kid: str | None, allowed: Sequence[str]) -> VerificationKey:
    """A PEM public key (or the key of a PEM certificate) as a verification key."""
    try:
        public: Any = serialization.load_pem_public_key(pem)
    except ValueError:
        try:
            public = x509.load_pem_x509_certificate(pem).public_key()
        except ValueError:
            raise ValueError("expected a PEM public key or certificate") from None
    key = bind(kid, public, allowed)
    if key is None:
        raise ValueError(f"the PEM key cannot verify any of the algorithms {', '.join(allowed)}")
    return key


class KeySet(Protocol):
    async def find(self, kid: str | None) -> Sequence[VerificationKey]: ...


def _select(keys: Mapping[str | None, VerificationKey], kid: str | None) -> list[VerificationKey]:
    if kid is None:
        return list(keys.values())
    key = keys.get(kid)
    return [key] if key is not None else []


class StaticKeys:
    """Keys given in the config (PEM, JWK, JWKS file), loaded once at start."""

    def __init__(self, keys: Mapping[str | None, VerificationKey]) -> None:
        self.keys = dict(keys)

    async def find(self, kid: str | None) -> Sequence[VerificationKey]:
        """The key named `kid`; a configured key without a kid verifies tokens that name any kid."""
        found = _select(self.keys, kid)
        if not found and kid is not None and None in self.keys:
            found = [self.keys[None]]
        return found


class RemoteKeys:
    """A JWKS URL (or one found by OIDC discovery), cached and refreshed; see the module docstring."""

    refresh_at = 0.8  # of the TTL: refresh in the background before the set expires
    refresh_floor = 0.1  # never refresh more often than this, however short the TTL
    retry_min = 1.0  # first retry after a failed fetch; doubles up to min_ttl

    def __init__(
        self,
        name: str,
        config: Keys,
        allowed: Sequence[str],
        fetcher: Fetcher,
        issuer: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.config = config
        self.allowed = tuple(allowed)
        self.fetcher = fetcher
        self.issuer = issuer
        self.clock = clock
        self.keys: dict[str | None, VerificationKey] = {}
        self.fetches = 0
        self.fetched_at: float | None = None
        self.expires_at = -math.inf
        self.failures = 0
        self._jwks_url = config.jwks_url
        self._unknown: dict[str, float] = {}
        self._last_miss_fetch = -math.inf
        self._inflight: asyncio.Task[bool] | None = None
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """First fetch (a failure is logged, not fatal: the refresher keeps trying), then the refresher."""
        await self.refresh()
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_loop(), name=f"jwks-{self.name}")

    async def aclose(self) -> None:
        for task in (self._refresher, self._inflight):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._refresher = self._inflight = None

    @property
    def usable(self) -> bool:
        return self.fetched_at is not None and self.clock() < self.expires_at + self.config.max_stale

    async def find(self, kid: str | None) -> Sequence[VerificationKey]:
        found = _select(self.keys, kid) if self.usable else []
        if found:
            return found
        now = self.clock()
        if kid is not None and self._unknown.get(kid, -math.inf) > now and self.usable:
            return []
        if self._inflight is None and now - self._last_miss_fetch < self.config.unknown_kid_interval:
            self._remember_unknown(kid, now)
            if not self.usable:
                raise KeysUnavailable(f"the key set of provider {self.name!r} is unavailable")
            return []
        if self._inflight is None:
            self._last_miss_fetch = now
        await self.refresh()
        if not self.usable:
            raise KeysUnavailable(f"the key set of provider {self.name!r} is unavailable")
        found = _select(self.keys, kid)
        if not found:
            self._remember_unknown(kid, self.clock())
        return found

    def _remember_unknown(self, kid: str | None, now: float) -> None:
        if kid is None:
            return
        if len(self._unknown) >= _UNKNOWN_KIDS_KEPT:
            self._unknown.clear()
        self._unknown[kid] = now + self.config.unknown_kid_interval

    async def refresh(self) -> bool:
        """Fetch now, or join the fetch in flight; True when the set was replaced."""
        if self._inflight is None:
            self._inflight = asyncio.get_running_loop().create_task(self._fetch(), name=f"jwks-fetch-{self.name}")
            self._inflight.add_done_callback(self._fetched)
        return await asyncio.shield(self._inflight)

    def _fetched(self, task: asyncio.Task[bool]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _fetch(self) -> bool:
        self.fetches += 1
        try:
            url = self._jwks_url or await self._discover()
            self._jwks_url = url
            fetched = await self.fetcher.get_json(url)
            keys = keys_from_jwks(fetched.data, self.allowed, secrets=False)
            if not keys:
                raise FetchError(f"{url}: no usable key for algorithms {', '.join(self.allowed)}")
        except FetchError as error:
            self.failures += 1
            log.warning("provider %s: key set fetch failed (%s); keeping the last good set", self.name, error)
            return False
        ttl = self.config.ttl if fetched.max_age is None else fetched.max_age
        now = self.clock()
        self.keys = keys
        self.fetched_at = now
        self.expires_at = now + min(max(ttl, self.config.min_ttl), self.config.max_ttl)
        self.failures = 0
        self._unknown.clear()
        log.info("provider %s: %d verification key(s) loaded", self.name, len(keys))
        return True

    async def _discover(self) -> str:
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        document = (await self.fetcher.get_json(url)).data
        if not isinstance(document, dict) or document.get("issuer") != self.issuer:
            raise FetchError(f"{url}: the discovery document names another issuer")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
            raise FetchError(f"{url}: no jwks_uri in the discovery document")
        return jwks_uri

    def _next_refresh(self) -> float:
        """Seconds until the refresher should fetch again."""
        now = self.clock()
        if self.failures == 0 and self.fetched_at is not None:
            return max(
                self.refresh_floor, self.fetched_at + (self.expires_at - self.fetched_at) * self.refresh_at - now
            )
        backoff = self.retry_min * 2 ** min(self.failures - 1, 16)
        return float(min(backoff, self.config.min_ttl))

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._next_refresh())
            await self.refresh()
