"""The memory store with an injected clock: GCRA and sliding-window arithmetic, several rules, expiry."""

from __future__ import annotations

import pytest

from edge.pipeline.quota.rules import Check
from edge.pipeline.quota.store_memory import MemoryStore
from tests.quota.rules import Clock, rule

DAY = 86400.0


def decide(store: MemoryStore, *checks: Check) -> list[tuple[bool, int, float, float]]:
    return [(v[0], v[1], round(v[2], 6), round(v[3], 6)) for v in store.decide(checks)]


@pytest.mark.parametrize(
    ("fields", "steps"),
    [
        (
            {"limit": 3, "period": "3s"},
            [
                (0, (True, 2, 1, 0)),
                (0, (True, 1, 2, 0)),
                (0, (True, 0, 3, 0)),
                (0, (False, 0, 3, 1)),
                (1, (True, 0, 3, 0)),
            ],
        ),
        (
            {"limit": 10, "period": "1s", "burst": 1},
            [(0, (True, 0, 0.1, 0)), (0.05, (False, 0, 0.05, 0.05)), (0.05, (True, 0, 0.1, 0))],
        ),
        (
            {"limit": 2, "period": "1m", "burst": 4},
            [
                (0, (True, 3, 30, 0)),
                (0, (True, 2, 60, 0)),
                (0, (True, 1, 90, 0)),
                (0, (True, 0, 120, 0)),
                (0, (False, 0, 120, 30)),
            ],
        ),
        (
            {"limit": 1, "period": "30d", "algorithm": "sliding"},
            [
                (0, (True, 0, 30 * DAY, 0)),
                (29 * DAY, (False, 0, DAY, DAY)),
                (DAY - 1, (False, 0, 1, 1)),
                (1, (True, 0, 30 * DAY, 0)),
            ],
        ),
        (
            {"limit": 3, "period": "1d", "algorithm": "sliding"},
            [
                (0, (True, 2, DAY, 0)),
                (3600, (True, 1, DAY, 0)),
                (3600, (True, 0, DAY, 0)),
                (0, (False, 0, DAY, DAY - 7200)),
                (DAY - 7200, (True, 0, DAY, 0)),
            ],
        ),
    ],
    ids=["gcra-3-per-3s", "gcra-no-burst", "gcra-burst-above-limit", "sliding-1-per-30-days", "sliding-3-a-day"],
)
def test_verdicts_as_the_clock_moves(
    fields: dict[str, object], steps: list[tuple[float, tuple[bool, int, float, float]]]
) -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    limited = rule(**fields)
    for step, (advance, expected) in enumerate(steps):
        clock.now += advance
        assert decide(store, (limited, "alice")) == [expected], f"step {step}"


def test_keys_are_counted_apart() -> None:
    store = MemoryStore(clock=Clock())
    limited = rule(limit=1, period="1h")
    assert [v[0] for v in store.decide([(limited, "alice")])] == [True]
    assert [v[0] for v in store.decide([(limited, "bob")])] == [True]
    assert [v[0] for v in store.decide([(limited, "alice")])] == [False]


def test_a_call_denied_by_one_rule_consumes_none_of_the_others() -> None:
    store = MemoryStore(clock=Clock())
    tight, loose = rule("tight", limit=1, period="1h"), rule("loose", limit=3, period="1h", algorithm="sliding")
    both = ((tight, "alice"), (loose, "alice"))
    assert decide(store, *both) == [(True, 0, 3600, 0), (True, 2, 3600, 0)]
    for _ in range(5):
        assert [v[0] for v in store.decide(both)] == [False, True]
    assert [v[1] for v in store.decide([(loose, "alice")])] == [1]
    assert [v[1] for v in store.decide([(loose, "alice")])] == [0]
    assert [v[0] for v in store.decide([(loose, "alice")])] == [False]


def test_a_shadow_rule_reports_but_never_denies() -> None:
    store = MemoryStore(clock=Clock())
    shadow, real = rule("shadow", limit=1, period="1h", shadow=True), rule("real", limit=3, period="1h")
    checks = ((shadow, "k"), (real, "k"))
    results = [[v[0] for v in store.decide(checks)] for _ in range(4)]
    assert results == [[True, True], [False, True], [False, True], [False, False]]


def test_idle_keys_expire_so_memory_stays_bounded() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    gcra, sliding = rule("g", limit=10, period="1s"), rule("s", limit=2, period="1m", algorithm="sliding")
    for i in range(1000):
        store.decide([(gcra, f"ip-{i}"), (sliding, f"ip-{i}")])
    assert (store.size(gcra), store.size(sliding)) == (1000, 1000)
    clock.now += 2
    store.sweep([gcra, sliding])
    assert (store.size(gcra), store.size(sliding)) == (0, 1000)
    clock.now += 60
    for i in range(10):
        store.decide([(sliding, f"new-{i}")])
    assert store.size(sliding) < 1000, "decisions drop idle keys as they go"
    store.sweep([gcra, sliding])
    assert store.size(sliding) == 10


def test_max_keys_drops_the_least_recently_counted() -> None:
    store = MemoryStore(max_keys=3, clock=Clock())
    limited = rule(limit=1, period="1h")
    for key in ("a", "b", "c", "d", "e"):
        store.decide([(limited, key)])
    assert store.size(limited) == 3
    assert [v[0] for v in store.decide([(limited, "e")])] == [False]
    assert [v[0] for v in store.decide([(limited, "a")])] == [True], "a was dropped, so counts afresh"
