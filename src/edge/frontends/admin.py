"""The admin listener: health, readiness, the live route table, reload, and Prometheus metrics.

It listens on its own port (loopback by default) so that none of this is
reachable through the public doors. `GET /metrics` renders the registry the
server hands in (`edge.metrics.gateway_registry`) in the Prometheus text
format; the collectors read the gateway's counters only when scraped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from edge.routes import LiveTable


class Reloader(Protocol):
    table: LiveTable
    last_reload_error: list[str] | None
    last_reload_at: float | None

    async def reload(self) -> list[str] | None: ...


def admin_app(gateway: Reloader, registry: CollectorRegistry | None = None) -> web.Application:
    app = web.Application()
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _bind(gateway, _readyz))
    app.router.add_get("/admin/routes", _bind(gateway, _routes))
    app.router.add_post("/admin/reload", _bind(gateway, _reload))
    app.router.add_get("/admin/reload", _bind(gateway, _reload_status))
    if registry is not None:
        app.router.add_get("/metrics", _metrics(registry))
    return app


def _metrics(registry: CollectorRegistry) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    return handler


def _bind(
    gateway: Reloader, view: Callable[[Reloader], Awaitable[web.Response]]
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        return await view(gateway)

    return handler


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(gateway: Reloader) -> web.Response:
    routes = len(gateway.table.current.routes)
    ready = routes > 0
    return web.json_response({"ready": ready, "routes": routes}, status=200 if ready else 503)


async def _routes(gateway: Reloader) -> web.Response:
    table = gateway.table
    return web.json_response(
        {
            "generation": table.generation,
            "routes": [route.describe() for route in table.current.routes],
            "last_reload_error": gateway.last_reload_error,
        }
    )


async def _reload(gateway: Reloader) -> web.Response:
    errors = await gateway.reload()
    if errors:
        return web.json_response(
            {"reloaded": False, "errors": errors, "generation": gateway.table.generation}, status=422
        )
    return web.json_response({"reloaded": True, "generation": gateway.table.generation})


async def _reload_status(gateway: Reloader) -> web.Response:
    return web.json_response(
        {
            "generation": gateway.table.generation,
            "last_reload_at": gateway.last_reload_at,
            "last_reload_error": gateway.last_reload_error,
        }
    )
