"""The `edge` command: serve, check, routes, demo.

`check` runs exactly the validation `serve` runs, without serving, and exits
1 listing every problem. `serve` installs signal handlers: SIGHUP reloads the
routes file, SIGTERM and SIGINT drain and stop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from edge.config import ConfigError, Settings, load


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

    demo = commands.add_parser("demo", help="start an example backend and the gateway in front of it, and call it once")
    demo.add_argument("--port", type=int, default=8080)
    demo.set_defaults(run=_demo)
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
    settings = _load(args.config)
    if settings is None:
        return 1
    print(f"{args.config}: ok ({len(settings.routes.routes)} routes, {len(settings.upstreams())} upstreams)")
    return 0


def _routes(args: argparse.Namespace) -> int:
    from edge.routes import RouteTable

    settings = _load(args.config)
    if settings is None:
        return 1
    table = RouteTable.from_specs(settings.routes.routes)
    rows = [route.describe() for route in table.routes]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        methods = ",".join(row["methods"]) or "*"  # type: ignore[arg-type]
        print(
            f"{row['kind']:<9} {methods:<10} {row['match']!s:<40} -> {row['upstream']}{'  rewrite ' + str(row['rewrite']) if row['rewrite'] else ''}"
        )
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


def _run(coro: object) -> None:
    try:
        import uvloop

        uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        asyncio.run(coro)  # type: ignore[arg-type]


async def _serve_until_signal(settings: Settings, ready: asyncio.Event | None = None, reuse_port: bool = False) -> None:
    from edge.server import Gateway

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    async with Gateway(settings, reuse_port=reuse_port) as gateway:
        reloads: set[asyncio.Task[object]] = set()

        def reload() -> None:
            task = loop.create_task(gateway.reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, reload)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        logging.getLogger("edge").info("serving; ports %s", gateway.ports)
        if ready is not None:
            ready.set()
        await stop.wait()
        logging.getLogger("edge").info("stopping: draining in-flight calls, flushing audit")
    with contextlib.suppress(NotImplementedError):
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _demo(args: argparse.Namespace) -> int:
    from edge.demo import run_demo

    _run(run_demo(args.port))
    return 0
