"""Identity stage cost per call: the cached-token path (the hot path) and, for scale, a first sighting.

The cached path is what a repeated bearer token costs: strip client identity
headers, hash the token, one cache lookup, set the backend headers. The target
is under 20 microseconds per call. The stage is driven without an event loop
(the cached path never suspends), so the figure is the stage's own cost. Usage:
`.venv/bin/python scripts/bench_identity.py [--calls 50000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Coroutine
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edge.call import Call, Denial, Metadata, Peer
from edge.certs import DEV_AUDIENCE, DEV_ISSUER, mint_token
from edge.config.identity import Identity
from edge.pipeline.identity import IdentityStage
from edge.pipeline.identity.fetcher import Fetcher

HEADERS = [
    ("host", "api.example.com"),
    ("user-agent", "va-mobile/4.2 (iOS 17)"),
    ("accept", "application/json"),
    ("accept-encoding", "gzip, br"),
    ("accept-language", "en-US"),
    ("x-request-id", "4bf92f3577b34da6a3ce929d0e0e4736"),
    ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    ("x-edge-subject", "spoofed"),
    ("connection", "keep-alive"),
]


def no_fetcher(*, timeout: float, ca: object) -> Fetcher:
    raise AssertionError("static keys need no fetcher")


def stage_and_token() -> tuple[IdentityStage, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    provider = {
        "type": "jwt",
        "issuer": DEV_ISSUER,
        "audience": DEV_AUDIENCE,
        "algorithms": ["ES256"],
        "keys": {"pem": pem.decode()},
    }
    stage = IdentityStage(Identity.model_validate({"providers": {"dev": provider}}), no_fetcher)
    asyncio.run(stage.start())
    return stage, mint_token(key, "veteran-42", ["Veteran", "Staff"])


def calls(token: str, count: int) -> list[Call]:
    pairs = [*HEADERS, ("authorization", f"Bearer {token}")]
    return [
        Call("http", "GET", "/v1/prescriptions/refill", Peer("10.0.0.1", 5555), Metadata(pairs)) for _ in range(count)
    ]


def drive(coroutine: Coroutine[Any, Any, Denial | None]) -> Denial | None:
    """Run a coroutine that never suspends, without an event loop."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    raise AssertionError("the stage suspended on what should be the cached path")


def per_call(stage: IdentityStage, batch: list[Call]) -> float:
    start = time.perf_counter()
    for call in batch:
        drive(stage(call))
    return (time.perf_counter() - start) / len(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50_000, help="calls per timed run (five runs)")
    args = parser.parse_args()
    stage, token = stage_and_token()
    first = calls(token, 1)[0]
    started = time.perf_counter()
    asyncio.run(stage(first))  # the miss: inspect, ES256 verify, claims, cache fill
    miss = time.perf_counter() - started
    assert first.principal is not None and first.principal.subject == "veteran-42"
    runs = [per_call(stage, calls(token, args.calls)) for _ in range(5)]
    check = calls(token, 1)[0]
    assert drive(stage(check)) is None and check.metadata.get("x-edge-subject") == "veteran-42"
    print(f"first sighting (verify ES256 + cache fill): {miss * 1e6:8.1f} us")
    print(f"cached token, median of 5 x {args.calls:,} calls: {statistics.median(runs) * 1e6:8.2f} us/call")
    print(f"cached token, best run:                   {min(runs) * 1e6:8.2f} us/call  (target < 20 us)")


if __name__ == "__main__":
    main()
