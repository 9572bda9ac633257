"""One benchmark run against nginx on loopback: req/s, p50, p99 and ratios in one table.

Every case runs on this machine in the same run, alternating rounds, so the
ratios compare like with like. HTTP load comes from wrk, gRPC load from
h2load (its per-request log gives the percentiles). The backends are nginx
serving a small static JSON and a grpc.aio server answering one unary method;
the peers are nginx `proxy_pass` and `grpc_pass` to them. Beside the table:
the latency edge adds at concurrency 1, resident memory per worker after 200k
and 400k requests, route lookup with 10,000 routes against 10, and a cProfile
of one full-pipeline worker (top 10 functions). Started processes are stopped
at the end. Usage:
`scripts/bench [--duration 5] [--rounds 2] [--connections 64] [--workers 2] [--skip-memory] [--skip-profile]`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pstats
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
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
GRPC_MEMORY_SECONDS = 20
PATH = "/v1/prescriptions/refill?rx=RX-42"
GRPC_METHOD = "/bench.pharmacy.v1.Pharmacy/Refill"
GRPC_REPLY = b"\n\x06QUEUED\x12\x0b03-Oct-2024"  # RefillReply{status, pickup}
GRPC_REQUEST = b"\n\x05RX-42"  # RefillRequest{rx}
PROTO = """syntax = "proto3";
package bench.pharmacy.v1;
message RefillRequest { string rx = 1; }
message RefillReply { string status = 1; string pickup = 2; }
service Pharmacy { rpc Refill(RefillRequest) returns (RefillReply); }
"""
COLD_TOKENS = 4000  # cycled; more than the gateway's token cache (1000), so every request verifies
Measure = Callable[[], tuple[float, float, float]]


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float = float("nan")  # CPU of the gateway's process tree per request (workers and sealing processes)


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (proc is None or proc.poll() is None):
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s")


@contextlib.contextmanager
def process(
    command: list[str], ports: list[int], cwd: Path | None = None, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    log = open((cwd or Path(tempfile.gettempdir())) / f"proc-{ports[0]}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd, env=env)
    try:
        try:
            for port in ports:
                wait_port(port, proc=proc)
        except RuntimeError:
            log.flush()
            sys.stderr.write(Path(log.name).read_text()[-3000:])
            raise
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(p) for p in text]
    return found


def descendants(pid: int) -> list[int]:
    found = []
    for child in children(pid):
        found += [child, *descendants(child)]
    return found


def tree_cpu(pid: int) -> float:
    """CPU seconds (user and system) of a process and every process under it; ones gone since are not counted."""
    ticks = 0
    for member in [pid, *descendants(pid)]:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------- configs


def nginx_conf(folder: Path, static: int, proxy: int, grpc_proxy: int, grpc_backend: int) -> Path:
    (folder / "www").mkdir()
    (folder / "www" / "refill.json").write_text('{"status":"QUEUED","pickup":"03-Oct-2024"}')
    conf = folder / "nginx.conf"
    conf.write_text(f"""
worker_processes 2;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  http2_max_requests 1000000;
  upstream backend {{ server 127.0.0.1:{static}; keepalive 256; }}
  upstream grpc_backend {{ server 127.0.0.1:{grpc_backend}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{static} reuseport;
    location / {{ root {folder}/www; default_type application/json; try_files /refill.json =404; }}
  }}
  server {{
    listen 127.0.0.1:{proxy} reuseport;
    location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
  server {{
    listen 127.0.0.1:{grpc_proxy} http2;
    location / {{ grpc_pass grpc://grpc_backend; }}
  }}
}}
""")
    return conf


def write_keys(folder: Path) -> tuple[object, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = folder / "rs256.pub.pem"
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (folder / "rs256.key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return key, public


def mint(key_path: str, count: int) -> list[str]:
    """`count` RS256 tokens for the bench caller (run in worker processes: signing is the slow part)."""
    import uuid

    import jwt
    from cryptography.hazmat.primitives import serialization

    from edge.certs import DEV_AUDIENCE, DEV_ISSUER

    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    now = int(time.time())
    claims = {"iss": DEV_ISSUER, "aud": DEV_AUDIENCE, "sub": "veteran-42", "iat": now, "exp": now + 3600}
    return [
        jwt.encode({**claims, "jti": uuid.uuid4().hex, "roles": ["Veteran"]}, key, "RS256")  # type: ignore[arg-type]
        for _ in range(count)
    ]


def mint_many(folder: Path, count: int) -> list[str]:
    key_path = str(folder / "rs256.key.pem")
    parts = os.cpu_count() or 2
    with ProcessPoolExecutor(parts) as pool:
        batches = pool.map(mint, [key_path] * parts, [count // parts + 1] * parts)
        return [token for batch in batches for token in batch][:count]


def edge_config(folder: Path, name: str, listeners: str, routes: str, extra: str = "") -> Path:
    (folder / f"{name}-routes.yaml").write_text(routes)
    config = folder / f"{name}.yaml"
    config.write_text(f"listeners:\n{listeners}  admin: null\nroutes_file: {name}-routes.yaml\n{extra}")
    return config


def pipeline_section(folder: Path, name: str, public_key: Path, store: str, sink: str) -> str:
    """Identity (RS256, static key), local policy, quota with limits that never deny, audit to `sink`."""
    (folder / "rules.yaml").write_text(
        "rules:\n  - {name: veterans, effect: allow, roles: [Veteran], actions: ['**']}\n"
    )
    return f"""identity:
  cache: {{size: 1000}}
  providers:
    dev: {{type: jwt, issuer: "https://edge.dev.local", audience: edge, algorithms: [RS256], keys: {{pem_file: {public_key}}}}}
policy: {{engine: local, rules: rules.yaml}}
quota:
  store: {store}
  redis: {{key_prefix: bench-{name}}}
  rules:
    - {{name: per-ip, key: client_ip, limit: 1000000000, period: 1s}}
    - {{name: per-user, key: subject, limit: 1000000000, period: 1m}}
audit:
  sinks: [{sink}]
  spool: {{path: {folder}/spool-{name}}}
"""


def http_listener(port: int, engine: str = "httptools") -> str:
    return f"  http: {{host: 127.0.0.1, port: {port}, engine: {engine}}}\n"


def http_routes(backend: str) -> str:
    return f"routes:\n  - name: refill\n    match: {{prefix: /v1/prescriptions}}\n    upstream: {backend}\n    rewrite: /refill\n"


def grpc_routes(backend: str) -> str:
    return f"routes:\n  - name: refill\n    match: {{grpc: {GRPC_METHOD}}}\n    upstream: {backend}\n"


def edge_command(config: Path, workers: int) -> list[str]:
    return [PYTHON, "-m", "edge", "--log-level", "warning", "serve", "-c", str(config), "--workers", str(workers)]


# ---------------------------------------------------------------- load generators


def wrk(
    url: str,
    duration: float,
    connections: int,
    threads: int = 2,
    headers: tuple[str, ...] = (),
    script: Path | None = None,
) -> tuple[float, float, float]:
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        "--timeout",
        "5s",
    ]
    for header in headers:
        command += ["-H", header]
    if script is not None:
        command += ["-s", str(script)]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors against {url}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return rps, _latency(out, "50%"), _latency(out, "99%")


def _latency(out: str, quantile: str) -> float:
    match = re.search(rf"{quantile}\s+([\d.]+)(us|ms|s)", out)
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def h2load(
    url: str, duration: float, connections: int, streams: int, folder: Path, headers: tuple[str, ...] = ()
) -> tuple[float, float, float]:
    """gRPC unary calls; percentiles from h2load's per-request log. Any non-OK grpc-status is an error."""
    body = folder / "grpc-request.bin"
    body.write_bytes(b"\x00" + len(GRPC_REQUEST).to_bytes(4, "big") + GRPC_REQUEST)
    log = folder / "h2load.log"
    command = [
        "h2load",
        "-D",
        str(max(1, round(duration))),
        "-c",
        str(connections),
        "-m",
        str(streams),
        "-t",
        "1",
        "-d",
        str(body),
    ]
    command += ["-H", "content-type: application/grpc", "-H", "te: trailers", "--log-file", str(log)]
    for header in headers:
        command += ["-H", header]
    ran = subprocess.run([*command, url], capture_output=True, text=True)
    out = ran.stdout
    if ran.returncode:
        raise RuntimeError(f"h2load failed against {url}:\n{out}\n{ran.stderr}")
    match = re.search(r"finished in ([\d.]+)(s|ms), ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    if match is None or done is None or int(done.group(3)) or int(done.group(4)):
        raise RuntimeError(f"h2load failed against {url}:\n{out}")
    times = sorted(int(line.split("\t")[2]) for line in log.read_text().splitlines() if line.count("\t") >= 2)
    p50, p99 = times[len(times) // 2] / 1000, times[min(len(times) - 1, int(len(times) * 0.99))] / 1000
    return float(match.group(3)), p50, p99


def lua_tokens(folder: Path, tokens: list[str]) -> Path:
    """A wrk script cycling through `tokens`, each thread from its own offset."""
    (folder / "tokens.txt").write_text("\n".join(tokens) + "\n")
    script = folder / "tokens.lua"
    script.write_text(f"""
local tokens = {{}}
for line in io.lines("{folder}/tokens.txt") do tokens[#tokens + 1] = line end
local counter = 1
local threads = 0
function setup(thread) threads = threads + 1; thread:set("offset", threads * 997) end
function init(args) counter = offset end
function request()
  counter = counter + 1
  local token = tokens[(counter % #tokens) + 1]
  return wrk.format(nil, nil, {{["Authorization"] = "Bearer " .. token}})
end
""")
    return script


def lua_count(folder: Path, per_thread: int) -> Path:
    script = folder / f"count-{per_thread}.lua"
    script.write_text(f"""
local done = 0
function response(status, headers, body)
  done = done + 1
  if done >= {per_thread} then wrk.thread:stop() end
end
""")
    return script


# ---------------------------------------------------------------- gRPC backend


def serve_grpc_backend(port: int) -> None:
    """A grpc.aio server answering the bench method with a fixed message, nothing else."""
    import grpc
    from grpc import aio

    async def refill(request: bytes, context: object) -> bytes:
        return GRPC_REPLY

    class Handler(grpc.GenericRpcHandler):  # type: ignore[misc]
        def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
            return grpc.unary_unary_rpc_method_handler(refill) if details.method == GRPC_METHOD else None

    async def main() -> None:
        server = aio.server()
        server.add_generic_rpc_handlers([Handler()])
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    import uvloop

    uvloop.run(main())


def check_grpc(port: int, token: str) -> None:
    """One call through `port` must come back OK with the backend's message, or the figures mean nothing."""
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = channel.unary_unary(GRPC_METHOD)(
            GRPC_REQUEST, metadata=[("authorization", f"Bearer {token}")], timeout=5
        )
    if reply != GRPC_REPLY:
        raise RuntimeError(f"gRPC through port {port} answered {reply!r}")


# ---------------------------------------------------------------- runs and table


def run_cases(
    cases: dict[str, Measure], rounds: int, billed: dict[str, int] | None = None, duration: float = 0.0
) -> list[Result]:
    """Each case once a round, in turn; medians. `billed` names the gateway (pid) whose CPU a case's requests cost.

    CPU per request is steadier than req/s on a shared machine: it does not
    move with what else the cores are doing, only with what the gateway does.
    """
    billed = billed or {}
    samples: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, case in cases.items():
            pid = billed.get(name)
            before = tree_cpu(pid) if pid else 0.0
            rps, p50, p99 = case()
            cpu = (tree_cpu(pid) - before) / (rps * duration) * 1e6 if pid and rps and duration else float("nan")
            samples[name].append((rps, p50, p99, cpu))
    return [Result(name, *(statistics.median(r[i] for r in runs) for i in range(4))) for name, runs in samples.items()]


def print_table(results: list[Result], peers: dict[str, str]) -> None:
    """`peers` maps a case to the case its ratio is taken against."""
    rates = {r.name: r.rps for r in results}
    print(f"\n{'case':<56} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU us':>7}  ratio")
    for r in results:
        peer = peers.get(r.name)
        ratio = f"{r.rps / rates[peer]:.2f}x {peer}" if peer else ""
        cpu = f"{r.cpu_us:>7.0f}" if r.cpu_us == r.cpu_us else f"{'':>7}"
        print(f"{r.name:<56} {r.rps:>9.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {cpu}  {ratio}")
    print("(CPU us: the edge gateway's processes, workers and sealing processes, per request)")


def verdict(name: str, value: float, target: float, above: bool, unit: str = "") -> str:
    ok = value >= target if above else value <= target
    sign = ">=" if above else "<="
    return f"  [{'PASS' if ok else 'FAIL'}] {name}: {value:.2f}{unit} (target {sign} {target}{unit})"


def route_lookup() -> list[str]:
    sys.path.insert(0, str(ROOT / "scripts"))
    import bench_routes

    small, large = bench_routes.build(10), bench_routes.build(10_000)
    small_cases, large_cases = bench_routes.cases(small, 3), bench_routes.cases(large, 3333)
    lines = []
    for name in small_cases:
        fast, slow = bench_routes.rate(small_cases[name], 0.2), bench_routes.rate(large_cases[name], 0.2)
        lines.append(f"  {name:<9} 10 routes {fast:>11,.0f}/s  10,000 routes {slow:>11,.0f}/s  ratio {fast / slow:.2f}")
    return lines


def memory(supervisor: int, url: str, token: str, folder: Path, requests: int) -> list[tuple[float, ...]]:
    """RSS per worker (MiB) at start, after `requests`, and after `requests` more."""
    workers = children(supervisor) or [supervisor]
    script = lua_count(folder, requests // 2)
    seen = [tuple(rss_mib(pid) for pid in workers)]
    for _ in range(2):
        wrk(url, 120, 64, 2, (f"Authorization: Bearer {token}",), script)
        seen.append(tuple(rss_mib(pid) for pid in workers))
    return seen


def print_growth(seen: list[tuple[float, ...]]) -> float:
    """Print each worker's three RSS readings; the largest growth over the second run, as a fraction."""
    growth = 0.0
    for i, column in enumerate(zip(*seen, strict=True)):
        grew = (column[2] - column[1]) / column[1]
        growth = max(growth, grew)
        print(f"  worker {i}: {column[0]:.1f}  {column[1]:.1f}  {column[2]:.1f}  (second half {grew:+.1%})")
    return growth


def grpc_memory(supervisor: int, url: str, token: str, folder: Path, seconds: int) -> list[tuple[float, ...]]:
    """RSS per gRPC-door worker (MiB) at start and after each of two h2load runs of `seconds` (connections churn)."""
    workers = children(supervisor) or [supervisor]
    seen = [tuple(rss_mib(pid) for pid in workers)]
    for _ in range(2):
        h2load(url, seconds, 16, 8, folder, (f"authorization: Bearer {token}",))
        seen.append(tuple(rss_mib(pid) for pid in workers))
    return seen


def profile(config: Path, url: str, token: str, folder: Path, duration: float) -> list[str]:
    """cProfile of one full-pipeline gateway process under load; its top 10 functions by own time."""
    out = folder / "full-pipeline.prof"
    port = int(re.search(r"port: (\d+)", config.read_text()).group(1))  # type: ignore[union-attr]
    command = [PYTHON, "-m", "cProfile", "-o", str(out), "-m", "edge", "--log-level", "warning"]
    with process([*command, "serve", "-c", str(config)], [port], folder):
        wrk(url, duration, 64, 2, (f"Authorization: Bearer {token}",))
    for _ in range(100):
        if out.exists():
            break
        time.sleep(0.1)
    keep = ROOT / "build" / "bench" / "full-pipeline.prof"
    keep.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(out, keep)
    stats = pstats.Stats(str(out))
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)  # type: ignore[attr-defined]
    loop = [own for (file, _, function), (_, _, own, _, _) in rows if function == "_exit_wrapper"]
    rows = [row for row in rows if row[0][2] != "_exit_wrapper"][:10]
    lines = [
        f"  saved to {keep.relative_to(ROOT)} (inspect: python -m pstats); cProfile cannot see into C code, so",
        f"  {sum(loop) / total:.1%} of the time shows as the event loop itself (uvloop I/O, idle waits, C callbacks).",
        "  Top 10 Python functions by own time (share of all profiled time):",
    ]
    for (file, line, function), (_, calls, own, cumulative, _) in rows:
        where = f"{Path(file).parent.name}/{Path(file).name}:{line}" if line else file
        lines.append(f"  {own / total:6.1%} own {cumulative / total:6.1%} cum {calls:>9} calls  {function}  {where}")
    return lines


def hot_path_state() -> str | None:
    """What the gateways will run (compiled or plain Python), or None after saying which sources are stale."""
    from edge import hot_path

    notice = hot_path.stale_notice(ROOT / "src")
    if notice:
        print(notice)
        return None
    said = subprocess.run(
        [PYTHON, "-c", "import edge.server; from edge import hot_path; print(hot_path.describe())"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return said.stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--grpc-workers", type=int, default=2, help="gRPC gateway processes (the backend shares the cores)"
    )
    parser.add_argument("--memory-requests", type=int, default=200_000)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-profile", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated case name fragments to run (for quick checks)")
    parser.add_argument("--grpc-backend", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.grpc_backend:
        serve_grpc_backend(args.grpc_backend)
        return 0
    for tool in ("nginx", "wrk", "h2load", "redis-server"):
        if shutil.which(tool) is None:
            print(f"{tool} is missing: run scripts/bench (it installs it)", file=sys.stderr)
            return 1
    compiled = hot_path_state()
    if compiled is None:
        return 1
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp, contextlib.ExitStack() as stack:
        folder = Path(tmp)
        folder.chmod(0o755)  # nginx workers run as another user
        ports = {name: free_port() for name in ("static", "proxy", "grpc_proxy", "grpc_backend", "redis")}
        ports.update(
            {
                name: free_port()
                for name in ("edge", "edge_h1", "full", "full_h1", "redis_full", "grpc_edge", "grpc_edge_grpcio")
            }
        )
        _, public_key = write_keys(folder)
        tokens = mint_many(folder, COLD_TOKENS + 1)
        token, cold = tokens[0], tokens[1:]
        nginx = nginx_conf(folder, ports["static"], ports["proxy"], ports["grpc_proxy"], ports["grpc_backend"])
        stack.enter_context(
            process([PYTHON, __file__, "--grpc-backend", str(ports["grpc_backend"])], [ports["grpc_backend"]], folder)
        )
        stack.enter_context(process(["nginx", "-c", str(nginx)], [ports["proxy"], ports["grpc_proxy"]], folder))
        redis_command = [
            "redis-server",
            "--port",
            str(ports["redis"]),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        stack.enter_context(process(redis_command, [ports["redis"]], folder))
        redis_url = f"redis://127.0.0.1:{ports['redis']}/0"
        backend = f"http://127.0.0.1:{ports['static']}"
        (folder / "protos").mkdir()
        (folder / "protos" / "bench.proto").write_text(PROTO)
        configs = {
            "edge": edge_config(folder, "proxy", http_listener(ports["edge"]), http_routes(backend)),
            "edge_h1": edge_config(
                folder, "proxy-h1", http_listener(ports["edge_h1"], "aiohttp"), http_routes(backend)
            ),
            "full_h1": edge_config(
                folder,
                "full-h1",
                http_listener(ports["full_h1"], "aiohttp"),
                http_routes(backend),
                pipeline_section(
                    folder,
                    "full-h1",
                    public_key,
                    "memory",
                    f"{{type: file, path: '{folder}/audit-full-h1-${{EDGE_WORKER:-0}}.jsonl'}}",
                ),
            ),
            "full": edge_config(
                folder,
                "full",
                http_listener(ports["full"]),
                http_routes(backend),
                pipeline_section(
                    folder,
                    "full",
                    public_key,
                    "memory",
                    f"{{type: file, path: '{folder}/audit-full-${{EDGE_WORKER:-0}}.jsonl'}}",
                ),
            ),
            "redis_full": edge_config(
                folder,
                "redis",
                http_listener(ports["redis_full"]),
                http_routes(backend),
                pipeline_section(folder, "redis", public_key, redis_url, f"{{type: redis, url: '{redis_url}'}}"),
            ),
            **{
                name: edge_config(
                    folder,
                    name,
                    f"  http: null\n  grpc: {{host: 127.0.0.1, port: {ports[name]}, engine: {engine}}}\n",
                    grpc_routes("backend"),
                    pipeline_section(
                        folder,
                        name,
                        public_key,
                        "memory",
                        f"{{type: file, path: '{folder}/audit-{name}-${{EDGE_WORKER:-0}}.jsonl'}}",
                    )
                    + f"protos: {folder}/protos\n"
                    + f"upstreams:\n  backend: {{endpoints: ['grpc://127.0.0.1:{ports['grpc_backend']}'], engine: {engine}}}\n",
                )
                for name, engine in (("grpc_edge", "h2"), ("grpc_edge_grpcio", "grpcio"))
            },
        }
        gateways = {}
        for name, config in configs.items():
            workers = args.grpc_workers if name.startswith("grpc_edge") else args.workers
            gateways[name] = stack.enter_context(process(edge_command(config, workers), [ports[name]], folder))
        for name in ("grpc_backend", "grpc_proxy", "grpc_edge", "grpc_edge_grpcio"):
            check_grpc(ports[name], token)
        ready = time.monotonic()
        d, c, w = args.duration, args.connections, args.workers
        bearer = (f"Authorization: Bearer {token}",)
        cold_script = lua_tokens(folder, cold)
        url = {
            name: f"http://127.0.0.1:{ports[name]}{PATH}"
            for name in ("static", "proxy", "edge", "edge_h1", "full", "full_h1", "redis_full")
        }
        grpc_url = {
            name: f"http://127.0.0.1:{ports[name]}{GRPC_METHOD}"
            for name in ("grpc_backend", "grpc_proxy", "grpc_edge", "grpc_edge_grpcio")
        }
        names = {
            "limit": "1 backend alone (nginx static)",
            "peer": "2 nginx proxy_pass",
            "proxy": f"3 edge HTTP proxy, no stages (w={w})",
            "proxy_h1": f"3 edge HTTP proxy, aiohttp engine (w={w})",
            "full": f"4 edge full pipeline, cached JWT (w={w})",
            "full_h1": f"4 edge full pipeline, cached JWT, aiohttp (w={w})",
            "cold": f"4 edge full pipeline, new JWT per request (w={w})",
            "redis": f"5 edge full pipeline, Redis quota+audit (w={w})",
            "grpc_direct": "6 gRPC backend direct (grpc.aio)",
            "grpc_peer": "6 nginx grpc_pass",
            "grpc_edge": f"6 edge gRPC door, full pipeline (w={args.grpc_workers})",
            "grpc_edge_grpcio": f"6 edge gRPC door, full pipeline, grpcio (w={args.grpc_workers})",
        }
        cases: dict[str, Measure] = {
            names["limit"]: lambda: wrk(url["static"], d, c),
            names["peer"]: lambda: wrk(url["proxy"], d, c),
            names["proxy"]: lambda: wrk(url["edge"], d, c),
            names["proxy_h1"]: lambda: wrk(url["edge_h1"], d, c),
            names["full"]: lambda: wrk(url["full"], d, c, headers=bearer),
            names["full_h1"]: lambda: wrk(url["full_h1"], d, c, headers=bearer),
            names["cold"]: lambda: wrk(url["full"], d, c, script=cold_script),
            names["redis"]: lambda: wrk(url["redis_full"], d, c, headers=bearer),
            names["grpc_direct"]: lambda: h2load(grpc_url["grpc_backend"], d, 16, 8, folder),
            names["grpc_peer"]: lambda: h2load(grpc_url["grpc_proxy"], d, 16, 8, folder),
            names["grpc_edge"]: lambda: h2load(
                grpc_url["grpc_edge"], d, 16, 8, folder, (f"authorization: Bearer {token}",)
            ),
            names["grpc_edge_grpcio"]: lambda: h2load(
                grpc_url["grpc_edge_grpcio"], d, 16, 8, folder, (f"authorization: Bearer {token}",)
            ),
        }
        if args.only:
            wanted = args.only.split(",")
            cases = {k: v for k, v in cases.items() if any(w in k for w in wanted)}
        gateway_of = {
            "proxy": "edge",
            "proxy_h1": "edge_h1",
            "full": "full",
            "full_h1": "full_h1",
            "cold": "full",
            "redis": "redis_full",
            "grpc_edge": "grpc_edge",
            "grpc_edge_grpcio": "grpc_edge_grpcio",
        }
        billed = {names[case]: gateways[gateway].pid for case, gateway in gateway_of.items()}
        results = run_cases(cases, args.rounds, billed, d)
        peers = {
            names["limit"]: names["peer"],
            names["proxy"]: names["peer"],
            names["proxy_h1"]: names["peer"],
            names["full"]: names["peer"],
            names["full_h1"]: names["peer"],
            names["cold"]: names["peer"],
            names["redis"]: names["peer"],
            names["grpc_direct"]: names["grpc_peer"],
            names["grpc_edge"]: names["grpc_peer"],
            names["grpc_edge_grpcio"]: names["grpc_peer"],
        }
        print_table(results, {k: v for k, v in peers.items() if v in {r.name for r in results}})
        rates = {r.name: r.rps for r in results}
        checks = []
        if names["peer"] in rates:
            peer = rates[names["peer"]]
            if names["proxy"] in rates:
                checks.append(
                    verdict("edge HTTP proxy / nginx proxy_pass", rates[names["proxy"]] / peer, 0.5, True, "x")
                )
            if names["full"] in rates:
                checks.append(
                    verdict("edge full pipeline / nginx proxy_pass", rates[names["full"]] / peer, 0.4, True, "x")
                )
            if names["proxy_h1"] in rates:
                ratio = rates[names["proxy_h1"]] / peer
                checks.append(verdict("edge HTTP proxy, aiohttp engine / nginx proxy_pass", ratio, 0.5, True, "x"))
            if names["full_h1"] in rates:
                ratio = rates[names["full_h1"]] / peer
                checks.append(verdict("edge full pipeline, aiohttp engine / nginx proxy_pass", ratio, 0.4, True, "x"))
        if names["grpc_peer"] in rates and names["grpc_edge"] in rates:
            ratio = rates[names["grpc_edge"]] / rates[names["grpc_peer"]]
            checks.append(verdict("edge gRPC door / nginx grpc_pass", ratio, 0.6, True, "x"))
        if not args.only:
            latency = run_cases(
                {
                    "c=1 backend direct": lambda: wrk(url["static"], min(d, 3), 1, 1),
                    "c=1 edge HTTP proxy": lambda: wrk(url["edge"], min(d, 3), 1, 1),
                    "c=1 edge full pipeline": lambda: wrk(url["full"], min(d, 3), 1, 1, headers=bearer),
                },
                args.rounds,
            )
            direct = latency[0]
            print("\nlatency at concurrency 1 (added = against the backend direct)")
            for r in latency:
                print(f"  {r.name:<24} p50 {r.p50_ms:.3f} ms  p99 {r.p99_ms:.3f} ms  ({r.rps:.0f} req/s)")
            for r in latency[1:]:
                print(
                    f"  added by {r.name[4:]:<20} p50 {r.p50_ms - direct.p50_ms:.3f} ms  p99 {r.p99_ms - direct.p99_ms:.3f} ms"
                )
            checks.append(verdict("added p50 at c=1, HTTP proxy", latency[1].p50_ms - direct.p50_ms, 0.5, False, " ms"))
            print("\nroute lookup (in process)")
            print("\n".join(route_lookup()))
        if not args.skip_memory and not args.only:
            seen = memory(gateways["full"].pid, url["full"], token, folder, args.memory_requests)
            print(
                f"\nresident memory per full-pipeline worker (MiB): start, +{args.memory_requests}, +{args.memory_requests}"
            )
            checks.append(verdict("memory growth over the second run (%)", print_growth(seen) * 100, 5, False, "%"))
            seen = grpc_memory(gateways["grpc_edge"].pid, grpc_url["grpc_edge"], token, folder, GRPC_MEMORY_SECONDS)
            print(
                f"\nresident memory per gRPC-door worker (MiB): start, +{GRPC_MEMORY_SECONDS} s, +{GRPC_MEMORY_SECONDS} s"
                " of h2load (new connections each run)"
            )
            growth = print_growth(seen)
            checks.append(verdict("gRPC door memory growth over the second run (%)", growth * 100, 5, False, "%"))
        if not args.skip_profile and not args.only:
            single = edge_config(
                folder,
                "profiled",
                http_listener(free_port()),
                http_routes(backend),
                pipeline_section(
                    folder, "profiled", public_key, "memory", f"{{type: file, path: {folder}/audit-profiled.jsonl}}"
                ),
            )
            port = int(re.search(r"port: (\d+)", single.read_text()).group(1))  # type: ignore[union-attr]
            print("\ncProfile of one full-pipeline process under load")
            print("\n".join(profile(single, f"http://127.0.0.1:{port}{PATH}", token, folder, max(d, 5))))
        print("\ntargets")
        print("\n".join(checks))
        print(f"\n(run took {time.monotonic() - started:.0f} s; setup {ready - started:.0f} s; {compiled})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
