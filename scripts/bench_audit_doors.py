"""What the audit trail costs each front door: gateway CPU per call with the file sink and without a sink.

The audit writer thread's work does not show in latency or in cProfile of the
event loop, but it is CPU the gateway process spends per call, and on a small
machine that is throughput. This starts a grpc.aio backend and nginx (static
JSON), then one single-process gateway per variant (full pipeline: RS256
identity, local policy, memory quota; audit to a file, or no sink), drives
the HTTP door with wrk and the gRPC door with h2load (C clients, so the load
generator takes little of the two cores) at fixed concurrency, alternating
variants over rounds, and prints the gateway's CPU seconds (utime + stime from
/proc/<pid>/stat) divided by the calls it answered. `--switch-interval`
starts the gateways with `sys.setswitchinterval(seconds)`, to test GIL
hand-over as a cause. `--baseline-src DIR` adds a third gateway per door
with the file sink, run from another copy of `src` (e.g. the last commit's,
from `git archive`), so before and after are measured in the same rounds;
`--variant NAME=DIR` (repeatable) adds more such copies, e.g. prototypes.
The CPU of the gateway's child processes (a sealing subprocess, if a variant
has one) is read from /proc the same way and printed beside it, so a design
that moves work out of the gateway process is charged for it too.
Usage: `.venv/bin/python scripts/bench_audit_doors.py [--duration 5]
[--rounds 3] [--doors http,grpc] [--baseline-src DIR] [--variant NAME=DIR]`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # scripts/bench.py: processes, configs, load generators

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def children_cpu_seconds(pid: int) -> float:
    """CPU of the live descendants of `pid` (utime + stime of each, read from /proc)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                with contextlib.suppress(OSError):
                    total += cpu_seconds(int(child)) + children_cpu_seconds(int(child))
    return total


def switches(pid: int) -> int:
    """Context switches of all the process's threads: each GIL hand-over between threads is one or two."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
    return total


def gateway_command(config: Path, switch_interval: float | None) -> list[str]:
    command = bench.edge_command(config, 1)
    if switch_interval is None:
        return command
    boot = (
        f"import sys; sys.setswitchinterval({switch_interval}); "
        "from edge.cli import main; sys.argv = ['edge', *sys.argv[1:]]; sys.exit(main())"
    )
    return [bench.PYTHON, "-c", boot, *command[3:]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (HTTP door)")
    parser.add_argument("--streams", type=int, default=8, help="h2load: 4 connections x this many streams (gRPC)")
    parser.add_argument("--doors", default="http,grpc")
    parser.add_argument("--switch-interval", type=float)
    parser.add_argument("--baseline-src", type=Path)
    parser.add_argument("--variant", action="append", default=[], help="NAME=DIR: a file-sink gateway from DIR")
    args = parser.parse_args()
    doors = args.doors.split(",")
    sources = {name: Path(path) for name, path in (spec.split("=", 1) for spec in args.variant)}
    if args.baseline_src:
        sources["baseline"] = args.baseline_src
    variants = ["file", "none", *sources]
    with tempfile.TemporaryDirectory(prefix="edge-audit-bench-") as tmp, contextlib.ExitStack() as stack:
        folder = Path(tmp)
        folder.chmod(0o755)  # nginx workers run as another user
        ports = {name: bench.free_port() for name in ("static", "proxy", "grpc_proxy", "grpc_backend")}
        _, public_key = bench.write_keys(folder)
        token = bench.mint(str(folder / "rs256.key.pem"), 1)[0]
        nginx = bench.nginx_conf(folder, ports["static"], ports["proxy"], ports["grpc_proxy"], ports["grpc_backend"])
        backend_command = [bench.PYTHON, bench.__file__, "--grpc-backend", str(ports["grpc_backend"])]
        stack.enter_context(bench.process(backend_command, [ports["grpc_backend"]], folder))
        stack.enter_context(bench.process(["nginx", "-c", str(nginx)], [ports["static"]], folder))
        (folder / "protos").mkdir()
        (folder / "protos" / "bench.proto").write_text(bench.PROTO)
        gateways: dict[str, tuple[int, int]] = {}
        for door in doors:
            for sink in variants:
                name = f"{door}-{sink}"
                port = bench.free_port()
                spec = f"{{type: file, path: '{folder}/audit-{name}.jsonl'}}"
                section = bench.pipeline_section(folder, name, public_key, "memory", spec)
                if sink == "none":
                    section = section.replace(f"sinks: [{spec}]", "sinks: []")
                if door == "http":
                    listener = bench.http_listener(port)
                    routes = bench.http_routes(f"http://127.0.0.1:{ports['static']}")
                else:
                    listener = f"  http: null\n  grpc: {{host: 127.0.0.1, port: {port}}}\n"
                    routes = bench.grpc_routes(f"grpc://127.0.0.1:{ports['grpc_backend']}")
                    section += f"protos: {folder}/protos\n"
                config = bench.edge_config(folder, name, listener, routes, section)
                env = None
                if sink in sources:
                    env = {**os.environ, "PYTHONPATH": str(sources[sink].resolve())}
                command = gateway_command(config, args.switch_interval)
                proc = stack.enter_context(bench.process(command, [port], folder, env))
                if door == "grpc":
                    bench.check_grpc(port, token)
                gateways[name] = (proc.pid, port)
        header = f"authorization: Bearer {token}"
        figures: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in gateways}
        for _ in range(args.rounds):
            for name, (pid, port) in gateways.items():
                before, switched, children = cpu_seconds(pid), switches(pid), children_cpu_seconds(pid)
                if name.startswith("http"):
                    url = f"http://127.0.0.1:{port}{bench.PATH}"
                    rps, _, _ = bench.wrk(url, args.duration, args.connections, headers=(header,))
                else:
                    url = f"http://127.0.0.1:{port}{bench.GRPC_METHOD}"
                    rps, _, _ = bench.h2load(url, args.duration, 4, args.streams, folder, (header,))
                calls = rps * round(args.duration)
                used, switched = cpu_seconds(pid) - before, switches(pid) - switched
                children = children_cpu_seconds(pid) - children
                figures[name].append((used / calls * 1e6, rps, switched / calls, children / calls * 1e6))
        print(f"gateway CPU per call (median of {args.rounds} rounds of {args.duration:.0f} s; one process each)")
        for door in doors:
            medians = {}
            for sink in variants:
                samples = figures[f"{door}-{sink}"]
                medians[sink] = statistics.median(us for us, _, _, _ in samples)
                rates = statistics.median(rps for _, rps, _, _ in samples)
                hops = statistics.median(hops for _, _, hops, _ in samples)
                spawned = statistics.median(child for _, _, _, child in samples)
                rounds = ", ".join(f"{us:.0f}" for us, _, _, _ in samples)
                print(
                    f"  {door:4} audit {sink:8}: {medians[sink]:6.0f} us/call  {rates:7.0f} calls/s  "
                    f"{hops:5.2f} context switches/call  +{spawned:4.0f} us/call in child processes  ({rounds})"
                )
            for sink in ["file", *sources]:
                print(f"  {door:4} {sink:8} audit cost: {medians[sink] - medians['none']:6.0f} us/call in the gateway")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
