"""Shared fixtures: real aiohttp backends on loopback and a gateway built from YAML files."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from edge import hot_path
from edge.config import load
from edge.server import Gateway

StartBackend = Callable[[web.Application], Awaitable[str]]

ENGINES = ("aiohttp", "httptools")
BOTH_ENGINES = ("tests.frontends.", "tests.test_reload")  # modules whose tests run once per HTTP server engine


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to test a stale build: Python would import the old extension, not the edited source."""
    notice = hot_path.stale_notice(Path(__file__).resolve().parents[1] / "src")
    if notice:
        pytest.exit(notice, returncode=2)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    chosen = any("engine" in marker.args[0] for marker in metafunc.definition.iter_markers("parametrize"))
    if "engine" in metafunc.fixturenames and metafunc.module.__name__.startswith(BOTH_ENGINES) and not chosen:
        metafunc.parametrize("engine", ENGINES)


@pytest.fixture
def engine() -> str:
    """The HTTP listener's server core; EDGE_HTTP_ENGINE=aiohttp runs the rest of the suite on aiohttp's."""
    return os.environ.get("EDGE_HTTP_ENGINE", "httptools")


@pytest.fixture
async def start_backend() -> AsyncIterator[StartBackend]:
    """Serve an aiohttp app on a free loopback port; returns its base URL."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


class GatewayFiles:
    """A gateway's edge.yaml and routes file in a temp folder, and the running gateway."""

    def __init__(self, folder: Path, stack: AsyncExitStack, engine: str = "httptools") -> None:
        self.folder = folder
        self.stack = stack
        self.engine = engine
        self.config_path = folder / "edge.yaml"
        self.routes_path = folder / "routes.yaml"
        self.audit_path = folder / "audit.jsonl"
        self.gateway: Gateway | None = None

    def write_routes(self, routes: Any) -> None:
        text = routes if isinstance(routes, str) else yaml.safe_dump(routes, sort_keys=False)
        tmp = self.routes_path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.routes_path)

    async def start(self, routes: Any, upstreams: dict[str, Any] | None = None, **sections: Any) -> Gateway:
        config: dict[str, Any] = {
            "listeners": {
                "http": {"host": "127.0.0.1", "port": 0},
                "admin": {"host": "127.0.0.1", "port": 0},
            },
            "routes_file": "routes.yaml",
            "upstreams": upstreams or {},
            "audit": {"sinks": [{"type": "file", "path": str(self.audit_path)}]},
            "server": {"drain_timeout": "2s", "watch_interval": "50ms"},
        }
        for key, value in sections.items():
            config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
        http = config["listeners"].get("http")
        if http is not None:
            config["listeners"]["http"] = {**http, "engine": self.engine}
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.write_routes(routes)
        self.gateway = await self.stack.enter_async_context(Gateway(load(self.config_path)))
        return self.gateway

    @property
    def url(self) -> str:
        assert self.gateway is not None
        return f"http://127.0.0.1:{self.gateway.ports['http']}"

    @property
    def admin(self) -> str:
        assert self.gateway is not None
        return f"http://127.0.0.1:{self.gateway.ports['admin']}"

    async def stop(self) -> None:
        await self.stack.aclose()

    def audit_records(self) -> list[dict[str, Any]]:
        if not self.audit_path.exists():
            return []
        return [json.loads(line) for line in self.audit_path.read_text().splitlines() if line]


@pytest.fixture
async def edge(tmp_path: Path, engine: str) -> AsyncIterator[GatewayFiles]:
    async with AsyncExitStack() as stack:
        yield GatewayFiles(tmp_path, stack, engine)
