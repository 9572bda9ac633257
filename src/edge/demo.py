"""`edge demo`: the example pharmacy backend, the gateway in front of it, and one real call.

The backend stands in for a service behind the gateway, so that one command
on a laptop shows a request going through: `GET /v1/prescriptions/refill?rx=RX-42`.
"""

from __future__ import annotations

import asyncio
import os
from datetime import date, timedelta

import aiohttp
from aiohttp import web

BACKEND_PORT = 7001


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


async def run_demo(port: int) -> None:
    from edge.cli import _example_config, _serve_until_signal
    from edge.config import load

    os.environ.setdefault("EDGE_HTTP_PORT", str(port))
    runner = web.AppRunner(pharmacy_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(os.environ.get("EDGE_DEMO_BACKEND_PORT", BACKEND_PORT))).start()
    ready = asyncio.Event()
    serving = asyncio.create_task(_serve_until_signal(load(_example_config()), ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        url = f"http://127.0.0.1:{os.environ['EDGE_HTTP_PORT']}/v1/prescriptions/refill?rx=RX-42"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            print(f"\nGET {url}\n-> {response.status} {await response.text()}\n")
        print(
            f"edge is serving on port {os.environ['EDGE_HTTP_PORT']}; try: curl '{url}'  (Ctrl-C to stop)\n", flush=True
        )
        await serving
    finally:
        await runner.cleanup()
