"""What the audit trail costs: the hot path per request, and the writer thread per record.

The hot path is `AuditLog.record(call, reply)` in the pipeline's `finally`
(target: under 15 microseconds); it is timed on a realistic call (route,
principal with a client certificate, identity/policy/quota decisions). The
writer side (seal, sign checkpoints, encode, write a file) runs in its own
thread and is reported as records per second. Usage:
`.venv/bin/python scripts/bench_audit.py [--records 200000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import timeit
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.call import Call, Metadata, Peer, Principal, Reply
from edge.config.audit import Spool
from edge.config.routes import RouteMatch, RouteSpec
from edge.pipeline.audit import AuditLog, FileSink
from edge.pipeline.audit.checkpoint import Signer
from edge.pipeline.audit.delivery import Delivery
from edge.pipeline.audit.writer import ChainWriter
from edge.pipeline.trace import trace_id
from edge.routes import build_route


def sample_call() -> Call:
    route = build_route(
        RouteSpec(name="refill", match=RouteMatch(path="/v1/prescriptions/refill"), upstream="pharmacy"), 0
    )
    call = Call(
        ingress="http",
        method="GET",
        path="/v1/prescriptions/refill",
        peer=Peer("203.0.113.9", 51000, certificate=b"\x30\x82" + bytes(700)),
        metadata=Metadata([("authorization", "Bearer x"), ("traceparent", "00-" + "a" * 32 + "-" + "b" * 16 + "-01")]),
        request_id="3f1c0e0c8b8a4f0e9d6f6b1a2c3d4e5f",
        trace_id="a" * 32,
        route=route,
        principal=Principal("veteran-42", ("patient", "veteran"), issuer="https://idp.va.example", method="jwt"),
        endpoint="http://10.0.0.7:7001",
        bytes_in=0,
        bytes_out=48,
    )
    call.decisions.update(
        operation="refill",
        identity={"mode": "required", "provider": "va-idp", "result": "ok"},
        policy={"decision": "allow", "reason": "rx owner", "revision": "r42", "mode": "live"},
        quota={"allowed": True, "rules": [{"rule": "refill-30d", "remaining": 0, "mode": "enforce"}]},
    )
    return call


def bench_hot_path(records: int, rounds: int) -> list[float]:
    """Microseconds per `record()` call, one figure per round.

    The queue is handed off every 1024 records, as the writer task takes it in
    batches; without that, hundreds of thousands of live dicts would make the
    garbage collector, not `record`, the thing measured.
    """
    call, reply = sample_call(), Reply(http_status=200)

    async def run() -> list[float]:
        writer = ChainWriter("bench", [])
        audit = AuditLog(writer, queue_size=records + 1, instance="bench")
        figures = []
        for _ in range(rounds):
            start = time.perf_counter()
            for n in range(records):
                audit.record(call, reply)
                if n & 1023 == 1023:
                    audit._pending = []
            figures.append((time.perf_counter() - start) / records * 1e6)
        return figures

    return asyncio.run(run())


def bench_writer(records: int, batch: int) -> tuple[float, int]:
    """Records per second through seal + sign + encode + file write, and the bytes written."""
    call, reply = sample_call(), Reply(http_status=200)
    from edge.pipeline.audit.record import build_record

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "audit.jsonl"
        sink = FileSink(path, fsync="interval", fsync_interval=1.0)
        delivery = Delivery(sink, None, Spool())
        writer = ChainWriter("bench", [delivery], Signer(Ed25519PrivateKey.generate()), every=1000)
        writer.open()
        batches = [[build_record(call, reply, "bench") for _ in range(batch)] for _ in range(records // batch)]
        start = time.perf_counter()
        for chunk in batches:
            writer.write(chunk)
        writer.close()
        elapsed = time.perf_counter() - start
        return records / elapsed, path.stat().st_size


def bench_encoders(number: int = 20_000) -> tuple[float, float]:
    """Microseconds per sealed-size record: the standard library's canonical JSON, and orjson's `encode`."""
    from edge.pipeline.audit.chain import canonical, encode
    from edge.pipeline.audit.record import build_record, finish

    record = finish(build_record(sample_call(), Reply(http_status=200), "bench"))
    record.update(seq=1, prev="0" * 64)
    stdlib = timeit.timeit(lambda: canonical(record).encode(), number=number) / number * 1e6
    fast = timeit.timeit(lambda: encode(record), number=number) / number * 1e6
    return stdlib, fast


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    figures = bench_hot_path(args.records, args.rounds)
    median = statistics.median(figures)
    print(
        f"hot path AuditLog.record: median {median:.2f} us/request (rounds: {', '.join(f'{f:.2f}' for f in figures)})"
    )
    print(f"  target < 15 us: {'OK' if median < 15 else 'OVER'}")
    fresh = Metadata()

    def new_trace() -> None:
        trace_id(fresh)
        fresh.remove("traceparent")

    trace = timeit.timeit(new_trace, number=100_000) / 100_000 * 1e6
    print(f"pipeline trace id (a new traceparent per call, not audit's own cost): {trace:.2f} us/request")
    stdlib, fast = bench_encoders()
    print(f"canonical JSON of one record: json {stdlib:.1f} us, orjson (chain.encode) {fast:.1f} us")
    rate, size = bench_writer(min(args.records, 100_000), 512)
    print(
        f"writer thread (seal + sign every 1000 + encode + file): {rate:,.0f} records/s, {1e6 / rate:.1f} us/record, {size / min(args.records, 100_000):.0f} bytes/record"
    )


if __name__ == "__main__":
    main()
