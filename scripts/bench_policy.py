"""Policy check cost: what a cached decision adds to a call, and a remote check's latency on loopback.

1. Cached: `PolicyClient.check` answered from the decision cache, and the whole
   policy stage (building the request from a `Call`, the check, the audit
   fields) on a cache hit, in microseconds per call; target under 10 us.
2. Remote: uncached checks (cache TTL 0) against `edge-policy serve` running
   in its own process on 127.0.0.1, plaintext and mutual TLS, one at a time;
   p50 / p90 / p99 in milliseconds; target p50 under 1 ms.

Usage: `.venv/bin/python scripts/bench_policy.py [--calls 2000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from edge.call import Call, Metadata, Peer, Principal
from edge.config.policy import Policy
from edge.pipeline.policy import PolicyStage
from edge.routes import Route
from policy_client import ClientSettings, GovernanceService, LocalRules, PolicyClient, PolicyRequest, Tls
from policy_client import Principal as PolicyPrincipal

RULES = """
rules:
  - {name: suspended, effect: deny, roles: [suspended], actions: ["**"]}
  - {name: pharmacists, effect: allow, roles: [pharmacist], actions: ["hms.pharmacy.v1.Pharmacy/*"]}
  - {name: ballots, effect: allow, subjects: [anonymous], actions: ["GET ballots"]}
"""
REFILL = "hms.pharmacy.v1.Pharmacy/Refill"
REQUEST = PolicyRequest(PolicyPrincipal("alice", ("pharmacist",)), REFILL, "/v1/prescriptions/refill")


async def per_call_us(check: Callable[[], Awaitable[object]], calls: int) -> float:
    """Best of five runs of `calls` awaited checks, in microseconds per call."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            await check()
        best = min(best, (time.perf_counter() - start) / calls * 1e6)
    return best


async def noop() -> None:
    return None


async def cached(rules: Path, calls: int) -> None:
    async with PolicyClient(ClientSettings(LocalRules(rules))) as client:
        assert (await client.check(REQUEST)).allow
        baseline = await per_call_us(noop, calls)
        hit = await per_call_us(lambda: client.check(REQUEST), calls)
        stage = PolicyStage(client, Policy(rules=rules))
        route = Route("refill", "exact", "/v1/prescriptions/refill", "pharmacy", 0, operation=REFILL)
        principal = Principal("alice", ("pharmacist",))

        def make_call() -> Call:
            call = Call("http", "GET", "/v1/prescriptions/refill", Peer("127.0.0.1"), Metadata(), route=route)
            call.principal = principal
            return call

        async def call_only() -> None:
            make_call()

        async def stage_call() -> None:
            assert await stage(make_call()) is None

        await stage_call()
        engine_calls = client.calls
        stage_us = await per_call_us(stage_call, calls) - await per_call_us(call_only, calls)
        assert client.calls == engine_calls, "a cached decision made an engine call"
    print(f"cached decision, PolicyClient.check:          {hit - baseline:6.2f} us/call")
    print(f"cached decision, whole policy stage per call: {stage_us:6.2f} us/call   (target < 10 us)")


async def serve(rules: Path, extra: list[str]) -> tuple[asyncio.subprocess.Process, int]:
    script = Path(sys.executable).parent / "edge-policy"
    process = await asyncio.create_subprocess_exec(
        str(script), "serve", "-c", str(rules), "--listen", "127.0.0.1:0", *extra, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
    return process, int(line.split("127.0.0.1:")[1].split()[0])


async def remote(rules: Path, calls: int, label: str, extra: list[str], tls: Tls | None) -> None:
    process, port = await serve(rules, extra)
    try:
        settings = ClientSettings(GovernanceService(f"127.0.0.1:{port}", tls, revision_poll=0), allow_ttl=0, deny_ttl=0)
        async with PolicyClient(settings) as client:
            for _ in range(200):
                await client.check(REQUEST)
            samples = []
            for _ in range(calls):
                start = time.perf_counter()
                await client.check(REQUEST)
                samples.append((time.perf_counter() - start) * 1000)
            assert client.calls == calls + 200
    finally:
        process.terminate()
        await process.wait()
    q = statistics.quantiles(samples, n=100)
    print(
        f"remote check over {label:<11} p50 {q[49]:.3f} ms  p90 {q[89]:.3f} ms  p99 {q[98]:.3f} ms   (target p50 < 1 ms)"
    )


def make_pki(folder: Path) -> tuple[list[str], Tls]:
    """A CA, the service's certificate and the gateway's client certificate: `serve` arguments and client TLS."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.certs import issue_cert, make_ca

    ca = make_ca(folder)
    server = issue_cert(ca, folder, "policy.test", ips=("127.0.0.1",))
    client = issue_cert(ca, folder, "edge-gateway", client=True, server=False)
    extra = ["--cert", str(server.cert_path), "--key", str(server.key_path), "--client-ca", str(ca.cert_path)]
    return extra, Tls(ca.cert_path, client.cert_path, client.key_path)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rules = Path(folder) / "rules.yaml"
        rules.write_text(RULES)
        await cached(rules, args.calls * 50)
        await remote(rules, args.calls, "plaintext", [], None)
        extra, tls = make_pki(Path(folder) / "pki")
        await remote(rules, args.calls, "mutual TLS", extra, tls)


if __name__ == "__main__":
    asyncio.run(main())
