"""The Redis store against a private redis-server: exact shared counts, atomic rules, expiry, failure."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from edge.config.quota import RedisOptions
from edge.pipeline.quota.limiter import Limiter
from edge.pipeline.quota.store_memory import MemoryStore
from edge.pipeline.quota.store_redis import RedisStore
from edge.pipeline.quota.verdict import StoreUnavailable
from tests.quota.rules import rule
from tests.redis_server import RedisServer

DAY_MS = 86400 * 1000

MakeStore = Callable[..., RedisStore]


@pytest.fixture
async def make_store(redis_server: RedisServer) -> AsyncIterator[MakeStore]:
    prefix = f"edge:quota-test-{os.urandom(4).hex()}"
    stores: list[RedisStore] = []

    def make(**options: Any) -> RedisStore:
        store = RedisStore(redis_server.url, RedisOptions.model_validate({"key_prefix": prefix, **options}))
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.aclose()


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def test_gcra_in_lua_matches_the_memory_store(make_store: MakeStore) -> None:
    store = make_store()
    limited = rule(limit=3, period="1h")
    verdicts = [(await store.decide([(limited, "alice")]))[0] for _ in range(4)]
    assert [(v[0], v[1]) for v in verdicts] == [(True, 2), (True, 1), (True, 0), (False, 0)]
    assert [round(v[2]) for v in verdicts] == [1200, 2400, 3600, 3600]
    assert 1199 <= verdicts[3][3] <= 1200


async def test_sliding_log_on_the_server_clock(make_store: MakeStore) -> None:
    store = make_store()
    limited = rule(limit=2, period="300ms", algorithm="sliding")
    verdicts = [(await store.decide([(limited, "k")]))[0] for _ in range(3)]
    assert [(v[0], v[1]) for v in verdicts] == [(True, 1), (True, 0), (False, 0)]
    assert 0 < verdicts[2][3] <= 0.3
    await asyncio.sleep(verdicts[2][3] + 0.02)
    assert (await store.decide([(limited, "k")]))[0][0]


async def test_keys_expire_with_their_window(make_store: MakeStore, raw: Redis) -> None:
    store = make_store()
    monthly, hourly = rule("monthly", limit=1, period="30d", algorithm="sliding"), rule("hourly", limit=4, period="1h")
    await store.decide([(monthly, "alice"), (hourly, "alice")])
    month_ttl = await raw.pttl(store.key(monthly, "alice"))
    hour_ttl = await raw.pttl(store.key(hourly, "alice"))
    assert 30 * DAY_MS - 5000 <= month_ttl <= 30 * DAY_MS
    assert 900_000 - 5000 <= hour_ttl <= 900_000, "a GCRA key lives until its TAT: one interval after one call"
    assert await raw.type(store.key(monthly, "alice")) == b"zset"


async def test_all_keys_of_a_call_share_one_cluster_slot(make_store: MakeStore) -> None:
    store = make_store()
    keys = [store.key(rule(name), key) for name, key in [("a", "alice"), ("b", "10.0.0.1"), ("c", "refill|bob")]]
    assert len({key_slot(k.encode()) for k in keys}) == 1
    assert all(k.startswith(store.prefix) and "{" in k for k in keys)


async def test_a_call_denied_by_one_rule_consumes_none_of_the_others(make_store: MakeStore, raw: Redis) -> None:
    store = make_store()
    tight, loose = rule("tight", limit=1, period="1h"), rule("loose", limit=5, period="1h", algorithm="sliding")
    both = [(tight, "alice"), (loose, "alice")]
    assert [v[0] for v in await store.decide(both)] == [True, True]
    for _ in range(4):
        assert [v[0] for v in await store.decide(both)] == [False, True]
    assert await raw.zcard(store.key(loose, "alice")) == 1


async def test_concurrent_decisions_from_two_stores_are_exact(make_store: MakeStore) -> None:
    """Two pools (as two gateway processes would have), 500 concurrent calls, a limit of 100."""
    first, second = make_store(timeout="2s"), make_store(timeout="2s")
    limited = rule(limit=100, period="1h")
    results = await asyncio.gather(*[(first if i % 2 else second).decide([(limited, "shared")]) for i in range(500)])
    assert sum(v[0][0] for v in results) == 100
    assert sorted(v[0][1] for v in results if v[0][0]) == list(range(100))


async def test_one_pass_of_many_calls_is_decided_call_by_call_across_several_script_runs(
    make_store: MakeStore, raw: Redis
) -> None:
    """600 calls in one loop pass (three script runs of at most MAX_BATCH): exact, and each call all-or-nothing."""
    store = make_store(timeout="2s")
    limited = rule("limited", limit=100, period="1h")
    tight, loose = rule("tight", limit=1, period="1h"), rule("loose", limit=5, period="1h", algorithm="sliding")
    assert (await store.decide([(tight, "alice")]))[0][0]
    calls = [store.decide([(limited, "shared")]) for _ in range(600)]
    calls += [store.decide([(tight, "alice"), (loose, "alice")]), store.decide([(loose, "bob")])]
    results = await asyncio.gather(*calls)
    shared, alice, bob = results[:600], results[600], results[601]
    assert sum(v[0][0] for v in shared) == 100
    assert sorted(v[0][1] for v in shared if v[0][0]) == list(range(100))
    assert [v[0] for v in alice] == [False, True]
    assert await raw.zcard(store.key(loose, "alice")) == 0  # alice's call was denied: nothing committed
    assert bob[0][:2] == (True, 4)


async def test_a_flushed_script_is_loaded_again(make_store: MakeStore, raw: Redis) -> None:
    store = make_store()
    limited = rule("limited", limit=3, period="1h")
    assert (await store.decide([(limited, "alice")]))[0][:2] == (True, 2)
    await raw.script_flush()
    assert (await store.decide([(limited, "alice")]))[0][:2] == (True, 1)


async def test_a_hung_redis_costs_at_most_the_timeout_then_nothing(
    make_store: MakeStore, stoppable_redis: RedisServer
) -> None:
    store = make_store(timeout="50ms", breaker={"failures": 3, "open_for": "200ms"})
    limited = rule(limit=100, period="1h")
    await store.decide([(limited, "k")])
    stoppable_redis.freeze()
    try:
        waits = []
        for _ in range(6):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await store.decide([(limited, "k")])
            waits.append(time.monotonic() - started)
        assert all(w < 0.1 for w in waits[:3]), waits
        assert all(w < 0.005 for w in waits[3:]), f"breaker open: no waiting {waits}"
        assert store.breaker.state == "open"
    finally:
        stoppable_redis.thaw()
    await asyncio.sleep(0.25)
    assert (await store.decide([(limited, "k")]))[0][0]
    assert store.breaker.state == "closed"


@pytest.mark.parametrize(
    ("on_error", "allowed", "mode", "unavailable"),
    [
        ("local", [True, False], "degraded", False),
        ("allow", [True, True], "open", False),
        ("deny", [False, False], "closed", True),
    ],
)
async def test_store_down_follows_on_store_error(
    on_error: str,
    allowed: list[bool],
    mode: str,
    unavailable: bool,
    make_store: MakeStore,
    stoppable_redis: RedisServer,
) -> None:
    limiter = Limiter(MemoryStore(), make_store(breaker={"failures": 1, "open_for": "10s"}))
    limited = rule(limit=1, period="1h", on_store_error=on_error)
    await stoppable_redis.astop()
    outcomes = [await limiter.decide([(limited, "alice")]) for _ in range(2)]
    assert [verdicts[0][0] for verdicts, _ in outcomes] == allowed
    assert [o.mode_of(0) for _, o in outcomes] == [mode, mode]
    assert [o.unavailable for _, o in outcomes] == [unavailable, unavailable]


async def test_refused_connections_fail_fast_and_recovery_is_automatic(
    make_store: MakeStore, stoppable_redis: RedisServer
) -> None:
    store = make_store(breaker={"failures": 2, "open_for": "100ms"})
    limiter = Limiter(MemoryStore(), store)
    limited = rule(limit=1000, period="1h")
    assert (await limiter.decide([(limited, "k")]))[1].mode_of(0) == "redis"
    await stoppable_redis.astop()
    started = time.monotonic()
    modes = [(await limiter.decide([(limited, "k")]))[1].mode_of(0) for _ in range(20)]
    assert modes == ["degraded"] * 20
    assert time.monotonic() - started < 0.5
    await stoppable_redis.astart()
    await asyncio.sleep(0.15)
    assert (await limiter.decide([(limited, "k")]))[1].mode_of(0) == "redis"
    assert (await limiter.decide([(limited, "k")]))[0][0][1] == 998, "counts on the (restarted, empty) Redis again"
