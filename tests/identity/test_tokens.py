"""The verified-token cache (keyed by SHA-256, valid until min(exp, TTL), bounded) and the stripped-names memo."""

from __future__ import annotations

from edge.call import Principal
from edge.pipeline.identity.stage import StrippedNames
from edge.pipeline.identity.tokens import TokenCache, Verified, token_digest


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def entry(expires: float) -> Verified:
    return Verified(Principal("alice", ("Veteran",), method="jwt"), "dev", expires, "alice", "Veteran")


def test_entry_lives_until_exp_when_exp_comes_first() -> None:
    clock = Clock()
    cache = TokenCache(size=10, ttl=300, clock=clock)
    cache.put(token_digest("t"), entry(clock.now + 60))
    clock.now += 59.9
    assert cache.get(token_digest("t")) is not None
    clock.now += 0.2
    assert cache.get(token_digest("t")) is None
    assert len(cache) == 0


def test_entry_lives_until_ttl_when_ttl_comes_first() -> None:
    clock = Clock()
    cache = TokenCache(size=10, ttl=300, clock=clock)
    cache.put(token_digest("t"), entry(clock.now + 3600))
    clock.now += 299
    assert cache.get(token_digest("t")) is not None
    clock.now += 2
    assert cache.get(token_digest("t")) is None


def test_bounded_oldest_goes_first() -> None:
    clock = Clock()
    cache = TokenCache(size=3, ttl=300, clock=clock)
    for name in "abcd":
        cache.put(token_digest(name), entry(clock.now + 60))
    assert len(cache) == 3
    assert cache.get(token_digest("a")) is None
    assert all(cache.get(token_digest(n)) is not None for n in "bcd")


def test_key_is_the_sha256_of_the_token_not_the_token() -> None:
    cache = TokenCache(size=3, ttl=300)
    cache.put(token_digest("secret-token"), entry(9e18))
    assert all(isinstance(k, bytes) and len(k) == 32 for k in cache._entries)
    assert "secret-token" not in repr(cache._entries)


def test_stripped_names_are_decided_per_name_and_bounded() -> None:
    stripped = StrippedNames(("x-edge-",), frozenset({"x-internal"}))
    assert stripped["x-edge-subject"] and stripped["x-internal"]
    assert not stripped["accept"]
    for index in range(StrippedNames.MAX_NAMES * 2):  # a client inventing names cannot grow it without bound
        assert stripped[f"x-edge-{index}"]
        assert not stripped[f"x-other-{index}"]
    assert len(stripped) == StrippedNames.MAX_NAMES
    assert stripped["x-edge-roles"] and not stripped["accept-language"]
