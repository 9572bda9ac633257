"""The `edge` command: serve, check, routes, demo.

`check` runs exactly the validation `serve` runs, without serving, and exits
1 listing every problem. `serve` installs signal handlers: SIGHUP reloads the
routes file, SIGTERM and SIGINT drain and stop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import signal
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from edge.config import ConfigError, Settings, load

T = TypeVar("T")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return int(args.run(args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge", description="The one front door of a data center.")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="serve the gateway")
    serve.add_argument("-c", "--config", type=Path, help="edge.yaml (default: the embedded example config)")
    serve.add_argument("--workers", type=int, default=1, help="gateway processes sharing the ports (default 1)")
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(run=_serve)

    check = commands.add_parser("check", help="validate edge.yaml and its routes file, serve nothing")
    check.add_argument("-c", "--config", type=Path, required=True)
    check.set_defaults(run=_check)

    routes = commands.add_parser("routes", help="print the route table, most specific first per kind")
    routes.add_argument("-c", "--config", type=Path, required=True)
    routes.add_argument("--json", action="store_true")
    routes.set_defaults(run=_routes)

    demo = commands.add_parser(
        "demo", help="the whole pipeline: example backend, gateway with identity, policy, quota, audit, and real calls"
    )
    demo.add_argument("--port", type=int, default=8080, help="HTTP listener (default 8080; 0: any free port)")
    demo.add_argument("--admin-port", type=int, default=9901, help="admin listener (default 9901)")
    demo.add_argument("--backend-port", type=int, default=7001, help="the example pharmacy backend (default 7001)")
    demo.add_argument(
        "--dir", type=Path, help="keep the demo's config, keys and audit trail here (default: a temp folder)"
    )
    demo.set_defaults(run=_demo)

    certs = commands.add_parser("certs", help="write a dev CA, server and client certificates, and a token signing key")
    certs.add_argument("--dir", type=Path, default=Path("dev-certs"), help="where to write them (default: dev-certs)")
    certs.add_argument("--host", action="append", help="server name or IP (repeatable; default: localhost, 127.0.0.1)")
    certs.add_argument(
        "--client", action="append", help="client certificate CN or email (repeatable; default: veteran)"
    )
    certs.add_argument("--org", default="DoD", help="O= of client certificates (default: DoD)")
    certs.add_argument("--unit", action="append", help="OU= of client certificates (repeatable; default: CAC)")
    certs.add_argument("--force", action="store_true", help="overwrite files already there")
    certs.set_defaults(run=_certs)

    token = commands.add_parser("token", help="mint a JWT with the dev signing key that `edge certs` wrote")
    token.add_argument("--sub", required=True, help="subject")
    token.add_argument("--role", action="append", default=[], help="role (repeatable)")
    token.add_argument("--dir", type=Path, default=Path("dev-certs"), help="where `edge certs` wrote the key")
    token.add_argument("--issuer", default=None, help="iss (default: the dev issuer)")
    token.add_argument("--aud", default=None, help="aud (default: edge)")
    token.add_argument("--ttl", type=float, default=3600, help="seconds until exp (default: 3600)")
    token.set_defaults(run=_token)

    audit = commands.add_parser("audit", help="audit trail tools").add_subparsers(required=True, metavar="ACTION")
    verify = audit.add_parser("verify", help="check the hash chain, sequence and signatures of audit files")
    verify.add_argument("files", nargs="+", type=Path, metavar="FILE", help="audit files (rotated ones too), any order")
    verify.add_argument("--key", type=Path, help="Ed25519 public key (PEM) that signed the checkpoints")
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(run=_audit_verify)
    keygen = audit.add_parser("keygen", help="write an Ed25519 key pair for signing checkpoints")
    keygen.add_argument("private", type=Path, help="where the private key goes (audit.signing_key)")
    keygen.add_argument("public", type=Path, help="where the public key goes (edge audit verify --key)")
    keygen.set_defaults(run=_audit_keygen)
    return parser


def _load(path: Path | None) -> Settings | None:
    try:
        return load(path if path is not None else _example_config())
    except ConfigError as error:
        print(f"{len(error.problems)} problem(s) in the configuration:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


def _example_config() -> Path:
    return Path(__file__).parent / "examples" / "edge.yaml"


def _check(args: argparse.Namespace) -> int:
    from edge.routes import RouteTable

    settings = _load(args.config)
    if settings is None:
        return 1
    table = RouteTable.from_specs(settings.routes.routes)
    print(f"{args.config}: ok ({len(table.routes)} routes, {len(settings.upstreams())} upstreams)")
    return 0


def _routes(args: argparse.Namespace) -> int:
    from edge.routes import RouteTable

    settings = _load(args.config)
    if settings is None:
        return 1
    routes = RouteTable.from_specs(settings.routes.routes).ordered()
    if args.json:
        print(json.dumps([route.describe() for route in routes], indent=2))
        return 0
    for route in routes:
        methods = ",".join(sorted(route.methods)) or "*"
        rewrite = f"  rewrite {route.rewrite}" if route.rewrite else ""
        print(f"{route.kind:<9} {methods:<10} {route.host or '*':<20} {route.pattern:<40} -> {route.upstream}{rewrite}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    if settings is None:
        return 1
    if args.workers > 1:
        from edge.workers import supervise

        return supervise(args.config, args.workers, args.log_level)
    _run(_serve_until_signal(settings, reuse_port=args.reuse_port))
    return 0


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


async def _serve_until_signal(settings: Settings, ready: asyncio.Event | None = None, reuse_port: bool = False) -> None:
    """Serve until SIGTERM/SIGINT; SIGHUP reloads the routes file.

    The handlers are installed before the listeners open, so a signal sent as
    soon as the port answers never meets the default action (which for SIGHUP
    would kill the process). A SIGHUP during start-up is ignored: the table
    being loaded is already the file's current content, and the watcher
    catches later changes.
    """
    from edge.server import Gateway

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    running: list[Gateway] = []
    reloads: set[asyncio.Task[object]] = set()

    def reload() -> None:
        if running:
            task = loop.create_task(running[0].reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with Gateway(settings, reuse_port=reuse_port) as gateway:
            running.append(gateway)
            _settle_heap()
            logging.getLogger("edge").info("serving; ports %s", gateway.ports)
            if ready is not None:
                ready.set()
            await stop.wait()
            logging.getLogger("edge").info("stopping: draining in-flight calls, flushing audit")
    finally:
        with contextlib.suppress(NotImplementedError):
            for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)


def _settle_heap() -> None:
    """Hide what start-up built from the cyclic collector, and collect young objects less often.

    A serving process keeps its configuration, route table, keys and modules
    for its whole life; frozen, they are no longer walked by every full
    collection. A call's objects are short-lived and mostly acyclic, so a
    first generation of 50,000 instead of 700 objects costs a few MB at most
    and saves a few percent of CPU per call (docs/performance.md).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _audit_verify(args: argparse.Namespace) -> int:
    from edge.pipeline.audit.checkpoint import load_public_key
    from edge.pipeline.audit.verify import verify_files

    try:
        report = verify_files(args.files, load_public_key(args.key) if args.key else None)
    except (OSError, ValueError) as error:
        print(f"cannot verify: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.render())
    return 0 if report.ok else 1


def _audit_keygen(args: argparse.Namespace) -> int:
    from edge.pipeline.audit.checkpoint import write_key_pair

    try:
        write_key_pair(args.private, args.public)
    except OSError as error:
        print(f"cannot write the key pair: {error}", file=sys.stderr)
        return 1
    print(f"{args.private}\n{args.public}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from edge.demo import DemoPorts, run_demo

    return _run(run_demo(DemoPorts(args.port, args.admin_port, args.backend_port), args.dir))


def _certs(args: argparse.Namespace) -> int:
    from edge.certs import identity_snippet, write_dev_set

    if (args.dir / "ca.key").exists() and not args.force:
        print(f"{args.dir}/ca.key exists; use --force to write a new set", file=sys.stderr)
        return 1
    hosts = args.host or ["localhost", "127.0.0.1"]
    written = write_dev_set(args.dir, hosts, args.client or ["veteran"], args.org, args.unit or ["CAC"])
    for path in written:
        print(path)
    print(f"\nTo use them, add to edge.yaml:\n\n{identity_snippet(args.dir.resolve())}")
    return 0


def _token(args: argparse.Namespace) -> int:
    from edge.certs import DEV_AUDIENCE, DEV_ISSUER, load_signing_key, mint_token

    try:
        key = load_signing_key(args.dir / "signing.key")
    except (OSError, ValueError) as error:
        print(f"cannot read the dev signing key ({error}); run `edge certs` first", file=sys.stderr)
        return 1
    print(
        mint_token(
            key, args.sub, args.role, issuer=args.issuer or DEV_ISSUER, audience=args.aud or DEV_AUDIENCE, ttl=args.ttl
        )
    )
    return 0
