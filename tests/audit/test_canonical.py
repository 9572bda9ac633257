"""`encode` (orjson) writes exactly the bytes of `canonical` (the standard library), or falls back to it.

And a call's record, queued on the loop and finished in the writer, seals to
the very line it always did: every field, name and value.
"""

from __future__ import annotations

import datetime
import enum
import hashlib
import marshal
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from edge.call import Call, Denial, Metadata, Peer, Principal, Reply, Status
from edge.config.audit import Spool as SpoolConfig
from edge.pipeline.audit import AuditLog, FileSink
from edge.pipeline.audit.chain import Chain, _negative_exponent, canonical, encode, line_hash
from edge.pipeline.audit.delivery import Delivery
from edge.pipeline.audit.record import RECORD_FIELDS, finish
from edge.pipeline.audit.verify import Line, verify_lines
from edge.pipeline.audit.writer import ChainWriter
from edge.routes import Route


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
def test_text_with_hyphens_is_encoded_by_orjson_not_the_slow_encoder(text: str) -> None:
    record = {"instance": text, "latency_ms": 0.023, "bytes": 10**6}
    expected = canonical(record).encode()
    assert not _negative_exponent(orjson.dumps(record)), "would fall back to json.dumps"
    assert encode(record) == expected


SEALED = [
    '{"bytes_in":12,"bytes_out":34,"client_ip":"10.0.0.7","decisions":{"identity":{"outcome":"authenticated"},'
    '"quota":{"rules":[{"remaining":9,"rule":"per-user"}]}},"endpoint":"10.1.0.3:50051",'
    '"grpc_status":"PERMISSION_DENIED","ingress":"grpc","instance":"gw-1","kind":"call","latency_ms":250.0,'
    '"method":"POST","operation":"orders.place","path":"/shop.v1.Orders/Place",'
    '"prev":"0000000000000000000000000000000000000000000000000000000000000000",'
    '"principal":{"certificate_fingerprint":"bffd28c8eeb10a5e50cf17b58f477ea1803895ae69744e6eb53cbcc3bf427adb",'
    '"issuer":"https://idp","method":"jwt","roles":["buyer","admin"],"subject":"user-1"},"reason":"not allowed: é",'
    '"request_id":"req-1","route":"orders","seq":1,"status":403,"time":"2023-11-14T22:13:20.500Z",'
    '"trace_id":"0af7651916cd43dd8448eb211c80319c","upstream":"grpc://orders:50051"}',
    '{"bytes_in":0,"bytes_out":0,"client_ip":"::1","decisions":{},"endpoint":null,"grpc_status":"INTERNAL",'
    '"ingress":"http","instance":"gw-1","kind":"call","latency_ms":1250.0,"method":"GET","operation":null,'
    '"path":"/nowhere","prev":"a7ce53248cd7b0499447e1d15dca3712efd35dc29348fc4307d3796c3f4775b1","request_id":"",'
    '"route":null,"seq":2,"status":500,"time":"2023-11-14T22:13:20.500Z","trace_id":"","upstream":null}',
]


def sample_calls() -> list[tuple[Call, Reply | None]]:
    """A routed gRPC call with a principal, a client certificate and a denial; a bare call that got no reply."""
    routed = Call(
        ingress="grpc",
        method="POST",
        path="/shop.v1.Orders/Place",
        peer=Peer("10.0.0.7", 5000, certificate=b"DER"),
        metadata=Metadata(),
        request_id="req-1",
        trace_id="0af7651916cd43dd8448eb211c80319c",
        started=100.0,
    )
    routed.route = Route("orders", "grpc", "shop.v1.Orders", "grpc://orders:50051", 0)
    routed.endpoint, routed.bytes_in, routed.bytes_out = "10.1.0.3:50051", 12, 34
    routed.principal = Principal("user-1", ("buyer", "admin"), issuer="https://idp", method="jwt", claims={"t": "x"})
    routed.decisions.update(
        operation="orders.place",
        identity={"outcome": "authenticated"},
        quota={"rules": [{"rule": "per-user", "remaining": 9}]},
    )
    bare = Call(ingress="http", method="GET", path="/nowhere", peer=Peer("::1"), metadata=Metadata(), started=99.0)
    return [(routed, Reply.local(Denial(Status.PERMISSION_DENIED, "not allowed: é", 403))), (bare, None)]


def pin_clock(audit: AuditLog) -> None:
    """Pin the time and latency of the records waiting in `audit`, as if the clock read 1_700_000_000.5 s and 100.25 s.

    Set in the records rather than by patching `time` in `record.py`, which
    is compiled (scripts/compiled-modules) and would not see the patch.
    """
    at, latency = RECORD_FIELDS.index("time"), RECORD_FIELDS.index("latency_ms")
    started = [call.started for call, _ in sample_calls()]
    for n, record in enumerate(audit._pending):
        pinned = list(record)
        pinned[at], pinned[latency] = 1_700_000_000.5, round((100.25 - started[n]) * 1000, 3)
        audit._pending[n] = tuple(pinned)


async def test_calls_through_the_audit_log_seal_to_the_lines_they_always_did(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    writer = ChainWriter("gw-1", [Delivery(FileSink(path), None, SpoolConfig(path=tmp_path))])
    audit = AuditLog(writer, instance="gw-1")
    await audit.start()
    for call, reply in sample_calls():
        audit.record(call, reply)
    pin_clock(audit)
    await audit.aclose()
    assert path.read_text().splitlines() == SEALED


def test_what_the_sealing_process_unmarshals_seals_to_the_same_lines() -> None:
    audit = AuditLog(ChainWriter("gw-1", []), instance="gw-1")
    for call, reply in sample_calls():
        audit.record(call, reply)
    pin_clock(audit)
    batch = marshal.loads(marshal.dumps(audit._pending))
    chain = Chain()
    assert [chain.seal(finish(record)).line for record in batch] == SEALED
