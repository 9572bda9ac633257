#!/usr/bin/env python
"""Quota benchmarks (not tests): what the memory store adds per call, and what Redis costs.

    .venv/bin/python scripts/bench_quota.py            # all parts, a few seconds each
    .venv/bin/python scripts/bench_quota.py --part memory|redis|pipeline|http

Targets from the issue: the memory store adds under 10 us per call; with the
Redis store the full pipeline keeps at least 0.8x its memory-store throughput.

- memory:   the quota stage on a prepared Call (1 and 3 rules), minus an empty loop.
- redis:    decisions per second against a private redis-server, sequential and concurrent.
- pipeline: `Pipeline.run` with a no-op upstream and every stage the server builds, memory vs Redis
            (the worst case for the ratio: nothing else costs anything).
- http:     the whole gateway (`edge serve` in a subprocess) in front of a backend subprocess,
            driven over HTTP by this process, memory vs Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml

from edge.call import Call, Metadata, Peer, Principal, Reply
from edge.config.quota import Quota as QuotaConfig
from edge.config.quota import RedisOptions
from edge.config.routes import RouteSpec
from edge.pipeline import Pipeline
from edge.pipeline.audit import AuditLog
from edge.pipeline.quota import Quota
from edge.pipeline.quota.rules import Check
from edge.pipeline.quota.store_redis import RedisStore
from edge.routes import build_route

RULES = [
    {"name": "per-ip", "key": "client_ip", "limit": 10**9, "period": "1s"},
    {"name": "per-user", "key": "subject", "limit": 10**9, "period": "1m"},
    {"name": "monthly", "key": ["subject", "route"], "limit": 10_000, "period": "30d", "algorithm": "sliding"},
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """redis-server on a free port in a temp folder, unless --redis-url names one."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> str:
        if self.url:
            return self.url
        port = free_port()
        folder = tempfile.mkdtemp(prefix="bench-redis-")
        server = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", folder, "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        wait_port(port)
        return f"redis://127.0.0.1:{port}/0"

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(5)


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


ROUTE = build_route(
    RouteSpec.model_validate({"name": "refill", "match": {"prefix": "/v1"}, "upstream": "http://127.0.0.1:1"}), 0
)


def make_call(user: int = 0) -> Call:
    call = Call("http", "GET", "/v1/prescriptions/refill", Peer(f"203.0.113.{user % 250}"), Metadata(), route=ROUTE)
    call.decisions["operation"] = "refill"
    call.principal = Principal(f"user-{user}", roles=("veteran",), method="jwt")
    return call


async def per_call(stage: Callable[[Call], Awaitable[Any]], n: int) -> float:
    started = time.process_time()
    for i in range(n):
        await stage(make_call(i % 1000))
    return (time.process_time() - started) / n


async def bench_memory(n: int) -> None:
    async def nothing(call: Call) -> None:
        return None

    base = min([await per_call(nothing, n) for _ in range(5)])
    print("memory store: quota stage CPU time per call (best of 5; a loop making the same Calls subtracted)")
    for count in (1, 3):
        quota = Quota(QuotaConfig.model_validate({"rules": [{**r, "phase": "post_auth"} for r in RULES[:count]]}))
        stage = quota.post_auth[0]
        cost = min([await per_call(stage, n) for _ in range(5)]) - base
        print(f"  {count} rule(s): {cost * 1e6:6.2f} us/call   (target < 10 us)")
        check = [(rule, "alice") for rule in quota.rules]
        started = time.process_time()
        for _ in range(n):
            quota.local.decide(check)
        print(f"    MemoryStore.decide alone: {(time.process_time() - started) / n * 1e6:.2f} us")


async def bench_redis(url: str, seconds: float) -> None:
    store = RedisStore(url, RedisOptions(timeout=2.0, key_prefix=f"bench-{os.urandom(3).hex()}"))
    await store.start()
    quota = Quota(QuotaConfig.model_validate({"rules": RULES}))
    one = [(quota.rules[1], "alice")]
    three = [(rule, "alice") for rule in quota.rules]
    print("redis store: decisions per second (one EVALSHA per decision, auto-pipelined)")
    for label, checks in (("1 rule ", one), ("3 rules", three)):
        for concurrency in (1, 64, 256):
            done = 0
            stop = time.perf_counter() + seconds

            async def worker(checks: list[Check] = checks, stop: float = stop) -> None:
                nonlocal done
                while time.perf_counter() < stop:
                    await store.decide(checks)
                    done += 1

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
            print(
                f"  {label} concurrency {concurrency:3}: {done / elapsed:8.0f}/s  ({elapsed / done * 1e6 * concurrency:.0f} us latency)"
            )
    await store.aclose()


async def pipeline_rate(quota: Quota, seconds: float, concurrency: int = 64) -> float:
    await quota.start()
    pipeline = Pipeline([*quota.pre_auth, *quota.post_auth], AuditLog([]))

    async def forward(call: Call) -> Reply:
        return Reply(body=b"{}")

    async def deliver(call: Call, reply: Reply) -> None:
        return None

    done = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await pipeline.run(make_call(done % 1000), forward, deliver)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    rate = done / (time.perf_counter() - started)
    await quota.aclose()
    return rate


async def bench_pipeline(url: str, seconds: float) -> None:
    print("pipeline (Pipeline.run, no-op upstream, 3 rules, 64 concurrent): calls per second")
    memory = await pipeline_rate(Quota(QuotaConfig.model_validate({"rules": RULES})), seconds)
    prefix = f"bench-{os.urandom(3).hex()}"
    config = {"store": url, "redis": {"key_prefix": prefix, "timeout": "1s"}, "rules": RULES}
    redis = await pipeline_rate(Quota(QuotaConfig.model_validate(config)), seconds)
    print(
        f"  memory {memory:8.0f}/s   redis {redis:8.0f}/s   ratio {redis / memory:.2f}  (worst case: no HTTP, no upstream)"
    )


BACKEND = """
import sys
from aiohttp import web
async def ok(request):
    return web.Response(body=b'{"status":"QUEUED","pickup":"03-Oct-2024"}', content_type="application/json")
app = web.Application()
app.router.add_get("/{tail:.*}", ok)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


async def http_rate(url: str, seconds: float, concurrency: int) -> float:
    import aiohttp

    done = 0
    stop = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                async with session.get(url) as response:
                    await response.read()
                    if response.status == 200:
                        done += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / seconds


async def bench_http(url: str, seconds: float) -> None:
    print("http (edge serve subprocess + backend subprocess, 3 rules, 32 concurrent): replies per second")
    folder = Path(tempfile.mkdtemp(prefix="bench-edge-"))
    backend_port = free_port()
    backend = spawn("-c", BACKEND, str(backend_port))
    rates: dict[str, float] = {}
    costs: dict[str, float] = {}
    try:
        wait_port(backend_port)
        (folder / "routes.yaml").write_text(
            yaml.safe_dump(
                {
                    "routes": [
                        {"name": "refill", "match": {"prefix": "/"}, "upstream": f"http://127.0.0.1:{backend_port}"}
                    ]
                }
            )
        )
        rules = [{**r, "key": "client_ip" if r["key"] == "subject" else r["key"]} for r in RULES[:1]] + [
            {"name": "route-total", "key": "route", "limit": 10**9, "period": "1s"},
            {
                "name": "monthly",
                "key": ["client_ip", "route"],
                "limit": 10_000,
                "period": "30d",
                "algorithm": "sliding",
                "phase": "post_auth",
            },
        ]
        for store in ("memory", url):
            port = free_port()
            quota = {"store": store, "redis": {"key_prefix": f"bench-{os.urandom(3).hex()}"}, "rules": rules}
            config = {
                "listeners": {"http": {"host": "127.0.0.1", "port": port}, "admin": None},
                "routes_file": "routes.yaml",
                "quota": quota,
            }
            (folder / "edge.yaml").write_text(yaml.safe_dump(config))
            gateway = spawn("-m", "edge", "--log-level", "warning", "serve", "-c", str(folder / "edge.yaml"))
            try:
                wait_port(port)
                target = f"http://127.0.0.1:{port}/v1/prescriptions/refill?rx=RX-42"
                await http_rate(target, 1.0, 32)
                cpu = cpu_seconds(gateway.pid)
                rates[store] = await http_rate(target, seconds, 32)
                costs[store] = (cpu_seconds(gateway.pid) - cpu) / (rates[store] * seconds)
            finally:
                gateway.terminate()
                gateway.wait(10)
    finally:
        backend.terminate()
        backend.wait(10)
    memory, redis = rates["memory"], rates[url]
    print(f"  memory {memory:8.0f}/s   redis {redis:8.0f}/s   ratio {redis / memory:.2f}  (target >= 0.8)")
    memory, redis = costs["memory"], costs[url]
    print(
        f"  gateway CPU per reply: memory {memory * 1e6:.0f} us, redis {redis * 1e6:.0f} us;"
        f" capacity of a CPU-bound gateway: ratio {memory / redis:.2f}"
    )


def spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, *args])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), to tell the gateway's cost from the machine's."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["all", "memory", "redis", "pipeline", "http"], default="all")
    parser.add_argument("--redis-url", help="use this Redis instead of starting a private redis-server")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--calls", type=int, default=100_000)
    args = parser.parse_args()
    if args.part in ("all", "memory"):
        await bench_memory(args.calls)
    if args.part == "memory":
        return
    with PrivateRedis(args.redis_url) as url:
        if args.part in ("all", "redis"):
            await bench_redis(url, args.seconds)
        if args.part in ("all", "pipeline"):
            await bench_pipeline(url, args.seconds)
        if args.part in ("all", "http"):
            await bench_http(url, args.seconds)


if __name__ == "__main__":
    asyncio.run(main())
