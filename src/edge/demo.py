"""`edge demo`: the whole pipeline on a laptop, in one command, with real calls through it.

It writes a working folder (a temporary one unless `--dir` is given): the
demo config (`examples/demo.yaml` as `edge.yaml`, with `routes.yaml` and the
`policy.yaml` rules), a dev signing key and its JWKS made by `edge certs`'
machinery, and an Ed25519 key for audit checkpoints. It then starts the
pharmacy backend this config forwards to, starts the gateway (identity,
policy, quota, audit), mints a token for a Veteran and shows three calls to
`GET /v1/prescriptions/refill?rx=RX-42`: with the token (200), the same again
inside 30 days (429), without a token (401). Then it keeps serving, printing
curl lines to try, until SIGINT or SIGTERM. The plain example config
(`edge serve` with no -c) needs none of these files.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TextIO

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec

from edge.certs import load_signing_key, mint_token, write_dev_set
from edge.config import ConfigError, load
from edge.pipeline.audit.checkpoint import write_key_pair

EXAMPLES = Path(__file__).parent / "examples"
REFILL = "/v1/prescriptions/refill?rx=RX-42"
DEMO_SUBJECT, TRY_SUBJECT, ROLES = "veteran", "veteran-2", ("Veteran",)
SHOWN_HEADERS = ("Retry-After", "WWW-Authenticate")


@dataclass(frozen=True, slots=True)
class DemoPorts:
    http: int = 8080
    admin: int = 9901
    backend: int = 7001


def pharmacy_app() -> web.Application:
    async def refill(request: web.Request) -> web.Response:
        rx = request.query.get("rx")
        if not rx:
            return web.json_response({"error": "rx is required"}, status=400)
        pickup = (date.today() + timedelta(days=3)).strftime("%d-%b-%Y")
        return web.json_response({"status": "QUEUED", "rx": rx, "pickup": pickup})

    async def prescription(request: web.Request) -> web.Response:
        return web.json_response({"rx": request.match_info["rx"], "drug": "atorvastatin", "refills_left": 2})

    async def ballots(request: web.Request) -> web.Response:
        return web.json_response({"ballots": [], "path": request.path})

    app = web.Application()
    app.router.add_route("*", "/refill", refill)
    app.router.add_get("/prescriptions/{rx}", prescription)
    app.router.add_route("*", "/ballots{tail:.*}", ballots)
    return app


def prepare(folder: Path) -> ec.EllipticCurvePrivateKey:
    """Write the demo's config files and dev keys into `folder`, keeping any already there; returns the token key."""
    folder.mkdir(parents=True, exist_ok=True)
    for source, target in (("demo.yaml", "edge.yaml"), ("routes.yaml", "routes.yaml"), ("policy.yaml", "policy.yaml")):
        if not (folder / target).exists():
            shutil.copyfile(EXAMPLES / source, folder / target)
    if not (folder / "signing.key").exists():
        write_dev_set(folder, ["localhost", "127.0.0.1"], ["veteran"], "DoD", ["CAC"])
    if not (folder / "audit.key").exists():
        write_key_pair(folder / "audit.key", folder / "audit.pub")
    return load_signing_key(folder / "signing.key")


@contextlib.contextmanager
def working_folder(chosen: Path | None) -> Iterator[Path]:
    """`chosen` is kept; without one, a temporary folder that is removed when the demo stops."""
    if chosen is not None:
        yield chosen.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="edge-demo-") as name:
        yield Path(name)


async def run_demo(
    ports: DemoPorts = DemoPorts(),
    folder: Path | None = None,
    out: TextIO = sys.stdout,
    stop: asyncio.Event | None = None,
) -> int:
    """Serve the demo until SIGINT/SIGTERM (or `stop`); 1 when it cannot start."""
    with working_folder(folder) as where:
        key = await asyncio.to_thread(prepare, where)
        runner = web.AppRunner(pharmacy_app(), access_log=None)
        await runner.setup()
        try:
            return await _serve(ports, where, key, runner, out, stop or asyncio.Event())
        finally:
            await runner.cleanup()


async def _serve(
    ports: DemoPorts,
    folder: Path,
    key: ec.EllipticCurvePrivateKey,
    runner: web.AppRunner,
    out: TextIO,
    stop: asyncio.Event,
) -> int:
    from edge.server import Gateway

    try:
        await web.TCPSite(runner, "127.0.0.1", ports.backend).start()
        backend = runner.addresses[0][1]
        env = {
            **os.environ,
            "EDGE_HTTP_PORT": str(ports.http),
            "EDGE_ADMIN_PORT": str(ports.admin),
            "EDGE_DEMO_BACKEND_PORT": str(backend),
        }
        settings = await asyncio.to_thread(load, folder / "edge.yaml", env)
        async with Gateway(settings) as gateway:
            url, admin = (f"http://127.0.0.1:{gateway.ports[name]}" for name in ("http", "admin"))
            _say(
                out,
                f"minted a dev token (ES256, key in {folder}/signing.key): subject={DEMO_SUBJECT} roles={','.join(ROLES)}",
            )
            await _show_calls(url, mint_token(key, DEMO_SUBJECT, ROLES), out)
            _say(out, f"edge is serving on {url} (admin {admin}; config, keys and audit trail in {folder})")
            _say(out, *_suggestions(url, admin, folder, mint_token(key, TRY_SUBJECT, ROLES)))
            _say(out, "Ctrl-C to stop")
            await _until_signal(stop)
    except OSError as error:
        print(
            f"edge demo cannot start: {error} (choose other ports with --port, --admin-port, --backend-port)",
            file=sys.stderr,
        )
        return 1
    except ConfigError as error:
        print("edge demo config problems:\n  " + "\n  ".join(error.problems), file=sys.stderr)
        return 1
    return 0


async def _show_calls(url: str, token: str, out: TextIO) -> None:
    """The three calls the demo is about; a failure is shown, the gateway keeps serving."""
    calls = [
        (f"Bearer token of {DEMO_SUBJECT}", {"Authorization": f"Bearer {token}"}),
        ("the same token again, inside 30 days", {"Authorization": f"Bearer {token}"}),
        ("no token", {}),
    ]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for what, headers in calls:
            _say(out, f"\nGET {REFILL}  ({what})")
            try:
                async with session.get(url + REFILL, headers=headers) as response:
                    shown = "".join(
                        f"{name}: {response.headers[name]}  " for name in SHOWN_HEADERS if name in response.headers
                    )
                    _say(out, f"-> {response.status} {shown}{_compact(await response.text())}")
            except (aiohttp.ClientError, TimeoutError) as error:
                _say(out, f"-> failed: {error!r}")
    _say(out, "")


def _suggestions(url: str, admin: str, folder: Path, token: str) -> list[str]:
    return [
        f"try, as {TRY_SUBJECT} (roles {','.join(ROLES)}): 200 the first time, 429 after",
        f"  curl -i -H 'Authorization: Bearer {token}' '{url}/v1/prescriptions/refill?rx=RX-7'",
        f"try, without a token (401):  curl -i '{url}{REFILL}'",
        f"try, metrics:                curl {admin}/metrics",
        f"try, another token:          edge token --dir {folder} --sub alice --role Veteran",
        f"try, the audit trail:        edge audit verify --key {folder}/audit.pub {folder}/audit.jsonl",
    ]


def _compact(text: str) -> str:
    try:
        return json.dumps(json.loads(text), separators=(",", ":"))
    except ValueError:
        return text.strip()


def _say(out: TextIO, *lines: str) -> None:
    for line in lines:
        print(line, file=out, flush=True)


async def _until_signal(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
