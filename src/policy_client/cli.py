"""The `edge-policy` command: serve the governance service, or ask a rules file one question.

`edge-policy serve -c rules.yaml [--listen 127.0.0.1:50061] [--cert --key [--client-ca]]`
prints `listening on HOST:PORT` once it serves (port 0 picks a free one),
reloads the rules file when it changes, and stops on SIGINT / SIGTERM.
`edge-policy check -c rules.yaml --subject alice --role pharmacist --action A --resource R`
prints the decision as JSON and exits 0 for allow, 1 for deny.
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

from policy_client.errors import RulesError
from policy_client.model import PolicyRequest, Principal
from policy_client.rules import load_rules


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.run(args))
    except RulesError as error:
        print(f"{len(error.problems)} problem(s) in the rules:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-policy", description="The HMS-GOV policy service over a rules file.")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="serve hms.gov.v1.PolicyService over gRPC")
    serve.add_argument("-c", "--rules", type=Path, required=True, help="the rules file (YAML)")
    serve.add_argument("--listen", default="127.0.0.1:50061", help="HOST:PORT (default 127.0.0.1:50061)")
    serve.add_argument("--cert", type=Path, help="server certificate (PEM): serve TLS")
    serve.add_argument("--key", type=Path, help="server key (PEM)")
    serve.add_argument("--client-ca", type=Path, help="CA of client certificates: require mutual TLS")
    serve.add_argument("--insecure", action="store_true", help="allow plaintext on a non-loopback address")
    serve.add_argument("--watch-interval", type=float, default=1.0, help="seconds between rules file checks")
    serve.set_defaults(run=_serve)

    check = commands.add_parser("check", help="evaluate one request against a rules file")
    check.add_argument("-c", "--rules", type=Path, required=True)
    check.add_argument("--subject", default="anonymous")
    check.add_argument("--role", action="append", default=[], dest="roles")
    check.add_argument("--action", required=True)
    check.add_argument("--resource", default="/")
    check.set_defaults(run=_check)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from policy_client.engines.local import LocalEngine
    from policy_client.server import PolicyServer, ServerTls, is_loopback

    host, _, port = args.listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if (args.cert is None) != (args.key is None):
        print("--cert and --key go together", file=sys.stderr)
        return 2
    if args.client_ca is not None and args.cert is None:
        print("--client-ca (mutual TLS) needs --cert and --key", file=sys.stderr)
        return 2
    if args.cert is None and not is_loopback(host) and not args.insecure:
        print(f"refusing plaintext on {host}: give --cert/--key (and --client-ca), or --insecure", file=sys.stderr)
        return 2
    tls = ServerTls(args.cert, args.key, args.client_ca) if args.cert is not None else None
    server = PolicyServer(LocalEngine(args.rules, args.watch_interval), host, int(port), tls)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        bound = await server.start()
        mode = "mutual TLS" if args.client_ca else "TLS" if tls else "plaintext"
        print(f"listening on {host}:{bound} ({mode}, revision {server.engine.revision})", flush=True)
        try:
            await stop.wait()
        finally:
            await server.aclose()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


def _check(args: argparse.Namespace) -> int:
    rules = load_rules(args.rules)
    request = PolicyRequest(Principal(args.subject, tuple(args.roles)), args.action, args.resource)
    decision = rules.evaluate(request)
    obligations = [{"add_header": {"name": o.name, "value": o.value}} for o in decision.obligations]
    print(
        json.dumps(
            {
                "allow": decision.allow,
                "reason": decision.reason,
                "revision": decision.revision,
                "obligations": obligations,
            }
        )
    )
    return 0 if decision.allow else 1
