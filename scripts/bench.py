"""One benchmark run against nginx on loopback: req/s, p50, p99 and ratios in one table.

Every case runs on this machine in the same run, alternating rounds, so the
ratios compare like with like. Started processes are stopped at the end.
Usage: scripts/bench [--duration 5] [--rounds 2] [--connections 64] [--workers 2]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s")


def nginx_conf(folder: Path, static_port: int, proxy_port: int) -> Path:
    (folder / "www").mkdir()
    (folder / "www" / "refill.json").write_text('{"status":"QUEUED","pickup":"03-Oct-2024"}')
    conf = folder / "nginx.conf"
    conf.write_text(f"""
worker_processes 2;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 100000;
  upstream backend {{ server 127.0.0.1:{static_port}; keepalive 256; }}
  server {{
    listen 127.0.0.1:{static_port} reuseport;
    location / {{ root {folder}/www; default_type application/json; try_files /refill.json =404; }}
  }}
  server {{
    listen 127.0.0.1:{proxy_port} reuseport;
    location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
""")
    return conf


def edge_config(folder: Path, name: str, port: int, backend: str, extra: str = "") -> Path:
    (folder / f"{name}-routes.yaml").write_text(
        f"routes:\n  - name: refill\n    match: {{prefix: /v1/prescriptions}}\n    upstream: {backend}\n    rewrite: /refill\n"
    )
    config = folder / f"{name}.yaml"
    config.write_text(
        f"listeners:\n  http: {{host: 127.0.0.1, port: {port}}}\n  admin: null\n"
        f"routes_file: {name}-routes.yaml\n{extra}"
    )
    return config


@contextlib.contextmanager
def process(command: list[str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_port(port)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def wrk(url: str, duration: int, connections: int, threads: int = 2) -> tuple[float, float, float]:
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", url],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return rps, _latency(out, "50%"), _latency(out, "99%")


def _latency(out: str, quantile: str) -> float:
    match = re.search(rf"{quantile}\s+([\d.]+)(us|ms|s)", out)
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def run_cases(cases: dict[str, Callable[[], tuple[float, float, float]]], rounds: int) -> list[Result]:
    samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, case in cases.items():
            samples[name].append(case())
    results = []
    for name, runs in samples.items():
        results.append(
            Result(name, statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs), statistics.median(r[2] for r in runs))
        )
    return results


def print_table(results: list[Result], peer: str) -> None:
    base = next(r.rps for r in results if r.name == peer)
    print(f"\n{'case':<44} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'vs ' + peer:>22}")
    for r in results:
        print(f"{r.name:<44} {r.rps:>10.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.rps / base:>21.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            print(f"{tool} is missing: run scripts/bench (it installs it)", file=sys.stderr)
            return 1
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp, contextlib.ExitStack() as stack:
        folder = Path(tmp)
        static_port, proxy_port, edge_port = free_port(), free_port(), free_port()
        stack.enter_context(process(["nginx", "-c", str(nginx_conf(folder, static_port, proxy_port))], proxy_port))
        backend = f"http://127.0.0.1:{static_port}"
        proxy_config = edge_config(folder, "proxy", edge_port, backend)
        stack.enter_context(
            process([PYTHON, "-m", "edge", "--log-level", "warning", "serve", "-c", str(proxy_config), "--workers", str(args.workers)], edge_port)
        )
        path = "/v1/prescriptions/refill?rx=RX-42"
        d, c = args.duration, args.connections
        cases = {
            "backend alone (nginx static)": lambda: wrk(f"{backend}{path}", d, c),
            "nginx proxy_pass": lambda: wrk(f"http://127.0.0.1:{proxy_port}{path}", d, c),
            f"edge HTTP proxy, no stages (workers={args.workers})": lambda: wrk(f"http://127.0.0.1:{edge_port}{path}", d, c),
        }
        results = run_cases(cases, args.rounds)
        print_table(results, "nginx proxy_pass")
        latency = run_cases(
            {
                "c=1 backend direct": lambda: wrk(f"{backend}{path}", d, 1, 1),
                "c=1 through edge": lambda: wrk(f"http://127.0.0.1:{edge_port}{path}", d, 1, 1),
            },
            args.rounds,
        )
        direct, through = latency
        print(f"\nadded latency at concurrency 1: p50 {through.p50_ms - direct.p50_ms:.3f} ms, p99 {through.p99_ms - direct.p99_ms:.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
