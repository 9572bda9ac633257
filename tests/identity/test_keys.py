"""The JWKS cache against the IdP stand-in: rotation, floods of unknown kids, outages, Cache-Control."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from edge.config.identity import Keys
from edge.pipeline.identity.keys import KeysUnavailable, RemoteKeys, algorithms_for, bind
from edge.upstream.fetch import HttpFetcher, parse_max_age
from tests.conftest import GatewayFiles
from tests.identity.cases import _ATTACKER, forge
from tests.identity.conftest import identity
from tests.identity.idp import IdP

ROUTES = {"routes": [{"match": {"prefix": "/"}, "upstream": "svc"}]}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def fetcher() -> AsyncIterator[HttpFetcher]:
    client = HttpFetcher(timeout=2.0)
    yield client
    await client.aclose()


def remote(idp: IdP, fetcher: HttpFetcher, clock: Clock | None = None, **config: Any) -> RemoteKeys:
    keys = Keys.model_validate({"jwks_url": f"{idp.issuer}/jwks", **config})
    if clock is None:
        return RemoteKeys("dev", keys, ("RS256", "ES256"), fetcher, idp.issuer)
    return RemoteKeys("dev", keys, ("RS256", "ES256"), fetcher, idp.issuer, clock)


async def status_of(session: aiohttp.ClientSession, url: str, token: str) -> int:
    async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
        return response.status


async def test_rotated_key_is_accepted_after_one_refetch(edge: GatewayFiles, idp: IdP, echo: str) -> None:
    await edge.start(ROUTES, upstreams={"svc": {"endpoints": [echo]}}, identity=identity(idp))
    before = idp.jwks_fetches
    idp.add_key("k2", kind="EC")
    async with aiohttp.ClientSession() as session:
        assert await status_of(session, edge.url + "/x", idp.token("k2")) == 200
        assert await status_of(session, edge.url + "/x", idp.token("k2")) == 200
        assert await status_of(session, edge.url + "/x", idp.token("k1")) == 200
    assert idp.jwks_fetches == before + 1


async def test_flood_of_unknown_kids_costs_at_most_one_fetch_per_window(
    edge: GatewayFiles, idp: IdP, echo: str
) -> None:
    await edge.start(ROUTES, upstreams={"svc": {"endpoints": [echo]}}, identity=identity(idp))
    before = idp.jwks_fetches
    async with aiohttp.ClientSession() as session:
        for wave in range(2):
            tokens = [forge({"alg": "RS256", "kid": f"rogue-{wave}-{i}"}, idp.claims(), _ATTACKER) for i in range(40)]
            statuses = await asyncio.gather(*(status_of(session, edge.url + "/x", t) for t in tokens))
            assert set(statuses) == {401}
        idp.add_key("k3")  # a real rotation inside the window waits for the window: the price of the bound
        assert await status_of(session, edge.url + "/x", idp.token("k3")) == 401
    assert idp.jwks_fetches == before + 1


async def test_cached_keys_keep_working_while_the_idp_is_down(edge: GatewayFiles, idp: IdP, echo: str) -> None:
    await edge.start(ROUTES, upstreams={"svc": {"endpoints": [echo]}}, identity=identity(idp))
    idp.down = True
    async with aiohttp.ClientSession() as session:
        for _ in range(3):  # distinct tokens, so each one is verified with the cached keys, not the token cache
            assert await status_of(session, edge.url + "/x", idp.token()) == 200
        assert (
            await status_of(session, edge.url + "/x", forge({"alg": "RS256", "kid": "new"}, idp.claims(), _ATTACKER))
            == 401
        )
    assert edge.gateway is not None
    assert edge.gateway.identity.remote_keys["dev"].keys


async def test_failed_fetches_never_empty_the_set(idp: IdP, fetcher: HttpFetcher) -> None:
    keys = remote(idp, fetcher)
    assert await keys.refresh()
    idp.published = []  # a key set with no usable key is a failed fetch too
    assert not await keys.refresh()
    idp.down = True
    assert not await keys.refresh()
    assert list(keys.keys) == ["k1"]
    assert [k.kid for k in await keys.find("k1")] == ["k1"]


async def test_staleness_is_bounded(idp: IdP, fetcher: HttpFetcher) -> None:
    clock = Clock()
    keys = remote(idp, fetcher, clock, ttl="5m", max_stale="1h")
    assert await keys.refresh()
    idp.down = True
    clock.now += 300 + 3600 - 1
    assert await keys.find("k1")
    clock.now += 2
    with pytest.raises(KeysUnavailable):
        await keys.find("k1")
    assert list(keys.keys) == ["k1"]  # kept, not trusted
    idp.down = False
    clock.now += 60  # past the unknown-kid window: the next lookup may fetch again
    assert await keys.find("k1")


@pytest.mark.parametrize(
    ("cache_control", "expected_ttl"),
    [
        (None, 300.0),
        ("max-age=5", 60.0),
        ("public, max-age=900", 900.0),
        ("max-age=999999", 3600.0),
        ("no-store", 60.0),
    ],
)
async def test_cache_control_max_age_is_honoured_within_bounds(
    idp: IdP, fetcher: HttpFetcher, cache_control: str | None, expected_ttl: float
) -> None:
    idp.cache_control = cache_control
    clock = Clock()
    keys = remote(idp, fetcher, clock, ttl="5m", min_ttl="1m", max_ttl="1h")
    assert await keys.refresh()
    assert keys.expires_at - clock.now == expected_ttl


async def test_background_refresh_before_expiry(idp: IdP, fetcher: HttpFetcher) -> None:
    keys = remote(idp, fetcher, ttl="200ms", min_ttl="200ms")
    await keys.start()
    try:
        for _ in range(60):  # a refresh about every 160 ms; 3 s at most
            if idp.jwks_fetches >= 3:
                break
            await asyncio.sleep(0.05)
    finally:
        await keys.aclose()
    assert idp.jwks_fetches >= 3 and keys.failures == 0


async def test_one_fetch_in_flight(idp: IdP, fetcher: HttpFetcher) -> None:
    keys = remote(idp, fetcher)
    results = await asyncio.gather(*(keys.refresh() for _ in range(20)))
    assert results == [True] * 20 and idp.jwks_fetches == 1


async def test_discovery_finds_the_key_set(idp: IdP, fetcher: HttpFetcher) -> None:
    keys = RemoteKeys("dev", Keys(discovery=True), ("RS256",), fetcher, idp.issuer)
    assert await keys.find("k1")
    assert (idp.discovery_fetches, idp.jwks_fetches) == (1, 1)
    impostor = RemoteKeys("dev", Keys(discovery=True), ("RS256",), fetcher, idp.issuer + "/other")
    with pytest.raises(KeysUnavailable):
        await impostor.find("k1")


def test_key_type_binds_algorithms() -> None:
    rsa_public = _ATTACKER.public_key()
    assert "HS256" not in algorithms_for(rsa_public)
    assert bind("k", rsa_public, ["HS256"]) is None
    bound = bind("k", rsa_public, ["HS256", "RS256", "PS256", "ES256"], jwk_alg="RS256")
    assert bound is not None and bound.algorithms == ("RS256",)
    assert algorithms_for(b"secret") == {"HS256", "HS384", "HS512"}


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ("max-age=60", 60.0), ("no-cache", 0.0), ("max-age=abc", None), ('max-age="30", public', 30.0)],
)
def test_parse_max_age(header: str | None, expected: float | None) -> None:
    assert parse_max_age(header) == expected


async def test_unusable_keys_in_a_set_are_skipped(idp: IdP, fetcher: HttpFetcher) -> None:
    good = idp.jwks()["keys"]
    junk = [
        {"kty": "EC", "crv": "P-256", "x": "bad", "y": "bad", "kid": "broken"},
        {**good[0], "kid": "private", "d": "AQAB"},  # a private key has no place in a published set
        {"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0", "kid": "shared"},  # nor a shared secret
        {**good[0], "kid": "encryption", "use": "enc"},
        {**good[0], "kid": 7},
        "not a key",
    ]
    idp.jwks = lambda: {"keys": [*junk, *good]}  # type: ignore[method-assign]
    keys = remote(idp, fetcher)
    assert await keys.refresh()
    assert list(keys.keys) == ["k1"]
