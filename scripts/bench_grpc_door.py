"""CPU per call of the gRPC front door: one gateway process, with and without stages, against a minimal proxy.

grpc.aio's own work happens in its Cython layer and in threads cProfile does
not see, and the machine is shared, so req/s alone says little. This starts
the bench's grpc.aio backend, then one single-process gateway per variant —
`bare` (no stages), `full` (RS256 identity, local policy, two memory quota
rules, audit to a file), `nosink` (the same without an audit sink) and
`minimal`, a grpc.aio raw-bytes unary proxy of a dozen lines (the floor a
grpc.aio door cannot go under) — drives each with h2load (4 connections x 8
streams) in alternating rounds, and prints the gateway's CPU seconds (utime +
stime from /proc/<pid>/stat, the process and its live children, such as the
audit sealing process) per answered call, the context switches of all their
threads per call, and each variant's difference to the first one within
the same round (paired, which cancels most of the noise of a shared machine).

A variant runs on the h2 engines (listener and upstream client) unless it
names another: `full@grpcio` is the same gateway on grpc.aio's server and client.
A variant may carry a label, `bare:LABEL`, to run from another copy of the
package (`--src LABEL=DIR`, DIR holding `edge/`, e.g. `git archive HEAD src |
tar -x -C /tmp/base` then `--src before=/tmp/base/src`) and/or with extra
environment variables (`--env LABEL:NAME=VALUE`, e.g. GRPC_POLL_STRATEGY;
without `LABEL:` for every gateway): one change at a time, same rounds.
`--baseline-src DIR` adds `bare:before` and `full:before` from DIR. `--pin`
puts the gateways on core 0, the backend and h2load on core 1. `--profile
VARIANT` runs that variant under cProfile instead and prints microseconds per
call by function. Usage: `.venv/bin/python scripts/bench_grpc_door.py [--pin]
[--duration 5] [--rounds 3] [--variants bare,full,minimal] [--src L=DIR]`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # scripts/bench.py: processes, configs, load generators

TICKS = os.sysconf("SC_CLK_TCK")


def family(pid: int) -> list[int]:
    """The process and its live children (the audit sealing process, when the gateway runs one)."""
    with contextlib.suppress(OSError):
        return [pid, *bench.children(pid)]
    return [pid]


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process and its live children."""
    total = 0
    for member in family(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


def switches(pid: int) -> int:
    """Context switches of all threads of the process and its live children."""
    total = 0
    for member in family(pid):
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{member}/task").iterdir():
                for line in (task / "status").read_text().splitlines():
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
    return total


def serve_minimal_proxy(port: int, backend: int) -> None:
    """A grpc.aio server whose one raw-bytes unary handler forwards to the backend: no pipeline at all.

    MINIMAL_TIMEOUT (seconds), MINIMAL_METADATA=1 (forward the caller's metadata)
    and MINIMAL_INITIAL=1 (send initial metadata in its own batch, as the door
    does) add one grpc feature at a time, to price each; MINIMAL_OPTIONS is a
    JSON list of [name, value] grpc arguments for its server and channel;
    MINIMAL_HEALTH=1 adds grpc's health service (three registered methods).
    """
    import grpc
    from grpc import aio

    async def main() -> None:
        options = json.loads(os.environ.get("MINIMAL_OPTIONS", "[]"))
        channel = aio.insecure_channel(f"127.0.0.1:{backend}", options=options)
        upstream = channel.unary_unary(bench.GRPC_METHOD)

        timeout = float(os.environ["MINIMAL_TIMEOUT"]) if "MINIMAL_TIMEOUT" in os.environ else None
        forward = bool(os.environ.get("MINIMAL_METADATA"))
        initial = bool(os.environ.get("MINIMAL_INITIAL"))

        async def refill(request: bytes, context: Any) -> bytes:
            metadata = tuple(context.invocation_metadata()) if forward else None
            reply = bytes(await upstream(request, metadata=metadata, timeout=timeout))
            if initial:
                await context.send_initial_metadata((("x-request-id", "0123456789abcdef"),))
            return reply

        class Handler(grpc.GenericRpcHandler):  # type: ignore[misc]
            def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
                return grpc.unary_unary_rpc_method_handler(refill)

        server = aio.server(options=options)
        if os.environ.get("MINIMAL_HEALTH"):
            from grpc_health.v1 import health, health_pb2_grpc

            servicer = health.aio.HealthServicer()
            health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        server.add_generic_rpc_handlers([Handler()])
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    import uvloop

    uvloop.run(main())


def variant_env(specs: list[str], label: str) -> dict[str, str]:
    """`NAME=VALUE` for every gateway, `LABEL:NAME=VALUE` for the variants with that label."""
    env = {}
    for spec in specs:
        head, _, value = spec.partition("=")
        scope, _, name = head.rpartition(":")
        if scope in ("", label):
            env[name] = value
    return env


def pinned(command: list[str], core: int | None) -> list[str]:
    return command if core is None else ["taskset", "-c", str(core), *command]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--variants", default="bare,full,minimal")
    parser.add_argument("--baseline-src", type=Path)
    parser.add_argument("--pin", action="store_true")
    parser.add_argument("--src", action="append", default=[], help="LABEL=DIR: variants KIND:LABEL run from DIR")
    parser.add_argument("--env", action="append", default=[], help="[LABEL:]NAME=VALUE for the gateways")
    parser.add_argument("--profile", metavar="VARIANT", help="instead: cProfile one variant under load, per call")
    parser.add_argument("--minimal-proxy", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.minimal_proxy:
        serve_minimal_proxy(*args.minimal_proxy)
        return 0
    gateway_core, load_core = (0, 1) if args.pin else (None, None)
    variants = args.variants.split(",")
    if args.baseline_src:
        variants += [f"{v}:before" for v in variants if v in ("bare", "full")]
    trees = dict(item.split("=", 1) for item in args.src)
    if args.baseline_src:
        trees["before"] = str(args.baseline_src)
    with tempfile.TemporaryDirectory(prefix="edge-grpc-bench-") as tmp, contextlib.ExitStack() as stack:
        folder = Path(tmp)
        backend = bench.free_port()
        _, public_key = bench.write_keys(folder)
        token = bench.mint(str(folder / "rs256.key.pem"), 1)[0]
        backend_command = pinned([bench.PYTHON, bench.__file__, "--grpc-backend", str(backend)], load_core)
        stack.enter_context(bench.process(backend_command, [backend], folder))
        (folder / "protos").mkdir()
        (folder / "protos" / "bench.proto").write_text(bench.PROTO)
        gateways: dict[str, tuple[int, int]] = {}
        for name in variants:
            port = bench.free_port()
            kind, _, label = name.partition(":")
            kind, _, engine = kind.partition("@")
            env = {**os.environ, **variant_env(args.env, label)}
            if label in trees:
                env["PYTHONPATH"] = str(Path(trees[label]).resolve())
            if kind == "minimal":
                command = [bench.PYTHON, __file__, "--minimal-proxy", str(port), str(backend)]
            else:
                section = f"protos: {folder}/protos\n"
                if kind in ("full", "nosink"):
                    tag = name.replace(":", "-")
                    spec = f"{{type: file, path: '{folder}/audit-{tag}.jsonl'}}"
                    pipeline = bench.pipeline_section(folder, tag, public_key, "memory", spec)
                    section += pipeline.replace(f"sinks: [{spec}]", "sinks: []") if kind == "nosink" else pipeline
                engine = engine or "h2"
                listener = f"  http: null\n  grpc: {{host: 127.0.0.1, port: {port}, engine: {engine}}}\n"
                routes = bench.grpc_routes("backend")
                section += f"upstreams:\n  backend: {{endpoints: ['grpc://127.0.0.1:{backend}'], engine: {engine}}}\n"
                config = bench.edge_config(folder, name.replace(":", "-").replace("@", "-"), listener, routes, section)
                command = bench.edge_command(config, 1)
            if name == args.profile:
                command = [*command[:1], "-m", "cProfile", "-o", str(folder / "door.prof"), *command[1:]]
            proc = stack.enter_context(bench.process(pinned(command, gateway_core), [port], folder, env))
            bench.check_grpc(port, token)
            gateways[name] = (proc.pid, port)
        header = (f"authorization: Bearer {token}",)
        if args.profile:
            pid, port = gateways[args.profile]
            url = f"http://127.0.0.1:{port}{bench.GRPC_METHOD}"
            rps, _, _ = h2load(url, args, folder, header, load_core)
            stack.close()
            print_profile(folder / "door.prof", rps * round(args.duration))
            return 0
        figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in gateways}
        for _ in range(args.rounds):
            for name, (pid, port) in gateways.items():
                before, switched = cpu_seconds(pid), switches(pid)
                url = f"http://127.0.0.1:{port}{bench.GRPC_METHOD}"
                rps, _, _ = h2load(url, args, folder, header, load_core)
                calls = rps * round(args.duration)
                used, switched = cpu_seconds(pid) - before, switches(pid) - switched
                figures[name].append((used / calls * 1e6, rps, switched / calls))
        print(f"gateway CPU per call (median of {args.rounds} rounds of {args.duration:.0f} s; one process each)")
        for name, samples in figures.items():
            us = statistics.median(s[0] for s in samples)
            rps = statistics.median(s[1] for s in samples)
            hops = statistics.median(s[2] for s in samples)
            rounds = ", ".join(f"{s[0]:.0f}" for s in samples)
            print(f"  {name:16} {us:6.0f} us/call  {rps:7.0f} calls/s  {hops:5.1f} switches/call  ({rounds})")
        first, *others = figures
        for name in others:
            paired = [b[0] - a[0] for a, b in zip(figures[first], figures[name], strict=True)]
            shown = ", ".join(f"{d:+.0f}" for d in paired)
            print(f"  {name} - {first}, same round: median {statistics.median(paired):+.0f} us/call  ({shown})")
    return 0


def print_profile(path: Path, calls: float) -> None:
    """Own and cumulative microseconds per call of the 25 most expensive Python functions (under cProfile)."""
    import pstats

    stats = pstats.Stats(str(path))
    rows = sorted(stats.stats.items(), key=lambda item: item[1][3], reverse=True)  # type: ignore[attr-defined]
    print(f"cProfile, {calls:.0f} calls; us per call (own, cumulative), by cumulative time")
    for (file, line, function), (_, count, own, cumulative, _) in rows[:60]:
        where = f"{Path(file).parent.name}/{Path(file).name}:{line}" if line else file
        print(f"  {own / calls * 1e6:7.1f} {cumulative / calls * 1e6:7.1f}  {count / calls:5.1f}x  {function}  {where}")


def h2load(
    url: str, args: argparse.Namespace, folder: Path, headers: tuple[str, ...], core: int | None
) -> tuple[float, float, float]:
    if core is None:
        return bench.h2load(url, args.duration, args.connections, args.streams, folder, headers)
    with pinned_self(core):
        return bench.h2load(url, args.duration, args.connections, args.streams, folder, headers)


@contextlib.contextmanager
def pinned_self(core: int) -> Iterator[None]:
    """h2load inherits this process's CPU affinity."""
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


if __name__ == "__main__":
    raise SystemExit(main())
