"""`encode` (orjson) writes exactly the bytes of `canonical` (the standard library), or falls back to it."""

from __future__ import annotations

import datetime
import enum
import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from edge.pipeline.audit.chain import Chain, canonical, encode, line_hash
from edge.pipeline.audit.verify import Line, verify_lines


class Colour(enum.IntEnum):
    RED = 1


@dataclass
class Point:
    x: int


VALUES: list[Any] = [
    "plain",
    "é ü 漢字 😀 \u2028 \u2029 \ufeff \x7f",
    "".join(chr(n) for n in range(32)) + '"\\/',
    "e-0.0000 inside a text",
    "1e-7 and 0.00001 as text, edge-1",
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    2**64,
    -(2**63) - 1,
    10**30,
    0.0,
    -0.0,
    0.1 + 0.2,
    0.023,
    1234.5,
    1e15,
    1e16,
    1.5e300,
    0.0001,
    0.00001,
    0.000027351374327548873,
    1e-7,
    1e-6,
    -1e-05,
    9.99e-05,
    -3.2e-9,
    2.5e-10,
    5e-324,
    True,
    False,
    None,
    [1, "a", [None]],
    (1, 2),
    {"b": 1, "a": {"d": [], "c": {}}},
    {1: "int key"},
    b"bytes",
    frozenset({"a"}),
    datetime.datetime(2024, 10, 3, 12, 0, tzinfo=datetime.UTC),
    datetime.date(2024, 10, 3),
    uuid.UUID(int=42),
    Colour.RED,
    Point(1),
    object.__new__(type("Opaque", (), {"__str__": lambda self: "opaque"})),
]


@pytest.mark.parametrize("value", VALUES, ids=[f"{type(v).__name__}-{n}" for n, v in enumerate(VALUES)])
def test_encode_writes_the_canonical_bytes(value: Any) -> None:
    record = {"z": value, "kind": "call", "nested": {"value": value, "list": [value]}}
    assert encode(record) == canonical(record).encode()


def test_a_sealed_line_is_its_canonical_text_and_hashes_to_the_next_prev() -> None:
    chain = Chain()
    first = chain.seal({"kind": "call", "latency_ms": 0.00002, "path": "/v1/é"})
    second = chain.seal({"kind": "call"})
    assert first.line == canonical({"kind": "call", "latency_ms": 2e-05, "path": "/v1/é", "seq": 1, "prev": "0" * 64})
    assert '"prev":"' + line_hash(first.line) + '"' in second.line
    assert chain.hash == hashlib.sha256(second.line.encode()).hexdigest()


def test_a_record_that_cannot_be_utf_8_is_refused_as_before() -> None:
    with pytest.raises(ValueError):
        Chain().seal({"kind": "call", "path": "\ud800"})


class Plain(enum.Enum):
    ON = "on"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), Plain.ON, 1e-05, 2**70, {3: "x"}])
def test_lines_orjson_writes_differently_or_falls_back_for_still_verify(value: Any) -> None:
    chain = Chain()
    entries = [chain.seal({"kind": "call", "odd": value}), chain.seal({"kind": "call"})]
    lines = [Line(f"audit.jsonl:{n}", entry.line, n == 2, True) for n, entry in enumerate(entries, 1)]
    report = verify_lines(lines)
    assert report.ok and report.chains[""].records == 2


@pytest.mark.parametrize("text", ["edge-node-1", "price-svc", "2024-10-03T12:00:00.000Z", "the e-mail", "-e-"])
def test_text_with_hyphens_is_encoded_by_orjson_not_the_slow_encoder(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = {"instance": text, "latency_ms": 0.023, "bytes": 10**6}
    expected = canonical(record).encode()
    monkeypatch.setattr("edge.pipeline.audit.chain.canonical", lambda record: pytest.fail("fell back to json.dumps"))
    assert encode(record) == expected
