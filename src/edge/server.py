"""The gateway's lifetimes in one place: listeners, upstream clients, audit writer, reload watcher.

`Gateway` is an async context manager built on an `AsyncExitStack`: whatever
it starts, it stops in reverse order. Shutdown drains: listeners stop
accepting, in-flight calls get up to `server.drain_timeout` to finish, then the
audit queue is flushed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import time
from collections.abc import Awaitable
from contextlib import AsyncExitStack, suppress
from pathlib import Path
from types import TracebackType

from aiohttp import web

from edge import hot_path
from edge.call import Call, Reply
from edge.config import ConfigError, Settings, load_routes
from edge.config.gateway import Listener
from edge.errors import UpstreamUnavailable
from edge.frontends.admin import admin_app
from edge.frontends.grpc import GrpcDoor, GrpcListener
from edge.frontends.grpc_h2 import GrpcH2Listener
from edge.frontends.h1_door import H1Door
from edge.frontends.http import HttpDoor
from edge.frontends.own_services import OwnServices
from edge.metrics import gateway_registry
from edge.pipeline import Pipeline, Stage
from edge.pipeline.audit import AuditLog
from edge.pipeline.identity import IdentityStage
from edge.pipeline.policy import PolicyStage
from edge.pipeline.quota import Quota
from edge.routes import LiveTable, RouteTable
from edge.tls import server_context, watch_server_tls
from edge.transcode.descriptors import load_registry
from edge.upstream import Upstream
from edge.upstream.fetch import HttpFetcher
from edge.upstream.grpc import GrpcUpstream
from edge.upstream.grpc_h2 import GrpcH2Upstream
from edge.upstream.http import HttpUpstream
from policy_client import PolicyClient

log = logging.getLogger("edge.server")


def bind(listener: Listener, reuse_port: bool = False) -> socket.socket:
    """A listening socket; binding here (not in aiohttp) lets port 0 report the port it got.

    With `reuse_port`, worker processes bind the same port and the kernel spreads connections.
    """
    family = socket.AF_INET6 if ":" in listener.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((listener.host, listener.port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def default_instance_id() -> str:
    """Host name, plus the worker index under `serve --workers`, so every process has its own audit chain."""
    worker = os.environ.get("EDGE_WORKER")
    return f"{socket.gethostname()}-{worker}" if worker else socket.gethostname()


class Gateway:
    def __init__(self, settings: Settings, reuse_port: bool = False) -> None:
        self.settings = settings
        self.reuse_port = reuse_port
        config = settings.config
        self.table = LiveTable(RouteTable.from_specs(settings.routes.routes))
        self.upstreams: dict[str, Upstream] = {}
        self.audit = AuditLog.from_config(config.audit, config.server.instance_id or default_instance_id())
        self.quota = Quota(config.quota)
        self.identity = IdentityStage(config.identity, HttpFetcher)
        self.policy = (
            PolicyStage(PolicyClient(config.policy.client_settings()), config.policy) if config.policy else None
        )
        self.pipeline = Pipeline(self._stages(), self.audit)
        self.ports: dict[str, int] = {}
        self.last_reload_error: list[str] | None = None
        self.last_reload_at: float | None = None
        self.reloads = {"ok": 0, "rejected": 0}  # for metrics
        self._routes_signature = _signature(settings.routes_path)
        self._stack = AsyncExitStack()
        self._reload_lock = asyncio.Lock()

    def _stages(self) -> list[Stage]:
        policy = [self.policy] if self.policy is not None else []
        return [*self.quota.pre_auth, self.identity, *policy, *self.quota.post_auth]

    def forward(self, call: Call) -> Awaitable[Reply]:
        """The route's upstream call, handed back to the pipeline to await (no frame of its own per call)."""
        assert call.route is not None
        upstream = self.upstreams.get(call.route.upstream)
        if upstream is None:
            raise UpstreamUnavailable(f"upstream {call.route.upstream!r} is not configured")
        return upstream.send(call)

    async def __aenter__(self) -> Gateway:
        stack = self._stack
        await stack.__aenter__()
        try:
            await self._start(stack)
        except BaseException:
            await stack.aclose()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    async def _start(self, stack: AsyncExitStack) -> None:
        config = self.settings.config
        await self.audit.start()
        stack.push_async_callback(self.audit.aclose)
        await self.quota.start()
        stack.push_async_callback(self.quota.aclose)
        await self.identity.start()
        stack.push_async_callback(self.identity.aclose)
        if self.policy is not None:
            await self.policy.start()
            stack.push_async_callback(self.policy.aclose)
        stack.push_async_callback(self._close_upstreams)
        self._ensure_upstreams(self.settings)
        self.protos = await asyncio.to_thread(load_registry, config.protos)
        listeners = config.listeners
        if listeners.http is not None:
            door = HttpDoor(
                self.table,
                self.pipeline,
                self.forward,
                config.limits,
                config.forwarding,
                "https" if listeners.http.tls else "http",
            )
            await self._serve("http", listeners.http, door, stack)
        if listeners.grpc is not None:
            await self._serve_grpc(listeners.grpc, stack)
        log.info("%s", hot_path.describe())
        if listeners.admin is not None:
            runner = web.AppRunner(admin_app(self, gateway_registry(self)), access_log=None)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            sock = bind(listeners.admin, self.reuse_port)
            self.ports["admin"] = sock.getsockname()[1]
            await web.SockSite(runner, sock).start()
        if self.settings.routes_path is not None:
            watcher = asyncio.get_running_loop().create_task(
                self._watch(self.settings.routes_path), name="routes-watcher"
            )
            stack.push_async_callback(_cancel, watcher)

    async def _serve(self, name: str, listener: Listener, door: HttpDoor, stack: AsyncExitStack) -> None:
        drain_timeout = self.settings.config.server.drain_timeout
        if listener.engine == "httptools":
            h1 = H1Door(door).listener()
            stack.push_async_callback(h1.aclose, drain_timeout)
        else:
            runner = web.ServerRunner(door.server(), shutdown_timeout=drain_timeout, handle_signals=False)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
        sock = bind(listener, self.reuse_port)
        self.ports[name] = sock.getsockname()[1]
        ssl_context = self._tls_context(name, listener, stack)
        if listener.engine == "httptools":
            await h1.start(sock, ssl_context)
        else:
            await web.SockSite(runner, sock, ssl_context=ssl_context).start()
        log.info("%s listener on %s:%d (%s)", name, listener.host, self.ports[name], listener.engine)

    def _tls_context(self, name: str, listener: Listener, stack: AsyncExitStack) -> ssl.SSLContext | None:
        """The listener's TLS context, reloaded when its files change; None for plaintext."""
        if listener.tls is None:
            return None
        context = server_context(listener.tls)
        interval = self.settings.config.server.watch_interval
        reloader = asyncio.get_running_loop().create_task(
            watch_server_tls(context, listener.tls, interval), name=f"{name}-tls-watcher"
        )
        stack.push_async_callback(_cancel, reloader)
        return context

    async def _serve_grpc(self, listener: Listener, stack: AsyncExitStack) -> None:
        config = self.settings.config
        scheme = "https" if listener.tls else "http"
        door = GrpcDoor(self.table, self.pipeline, self.forward, config.forwarding, self.protos, scheme)
        own = OwnServices(self.table, self.protos)
        if listener.engine == "grpcio":
            server = GrpcListener(door, listener, config.limits, own, self.reuse_port)
            stack.push_async_callback(server.stop, config.server.drain_timeout)
            self.ports["grpc"] = await server.start()
        else:
            h2 = GrpcH2Listener(door, config.limits, own)
            stack.push_async_callback(h2.aclose, config.server.drain_timeout)
            sock = bind(listener, self.reuse_port)
            self.ports["grpc"] = sock.getsockname()[1]
            await h2.start(sock, self._tls_context("grpc", listener, stack))
        log.info("grpc listener on %s:%d (%s)", listener.host, self.ports["grpc"], listener.engine)

    def _ensure_upstreams(self, settings: Settings) -> None:
        """Start clients for upstreams not seen before; existing ones (and their channels) are kept."""
        limits = settings.config.limits
        for name, config in settings.upstreams().items():
            if name in self.upstreams:
                continue
            if config.protocol == "http":
                self.upstreams[name] = HttpUpstream(name, config)
            elif config.engine == "grpcio":
                self.upstreams[name] = GrpcUpstream(name, config, limits)
            else:
                self.upstreams[name] = GrpcH2Upstream(name, config, limits)

    async def _close_upstreams(self) -> None:
        for upstream in self.upstreams.values():
            await upstream.aclose()

    async def reload(self) -> list[str] | None:
        """Load the routes file again; all or nothing. Returns the problems, or None when it took."""
        path = self.settings.routes_path
        if path is None:
            return ["no routes file is configured"]
        async with self._reload_lock:
            self.last_reload_at = time.time()
            try:
                routes = await asyncio.to_thread(load_routes, path, self.settings.config)
                table = RouteTable.from_specs(routes.routes)
            except ConfigError as error:
                self.last_reload_error = error.problems
                self.reloads["rejected"] += 1
                log.error(
                    "routes reload rejected, still serving generation %d:\n  %s",
                    self.table.generation,
                    "\n  ".join(error.problems),
                )
                return error.problems
            self.settings = Settings(self.settings.config, routes, self.settings.config_path, path)
            self._ensure_upstreams(self.settings)
            self.table.swap(table)
            self.last_reload_error = None
            self.reloads["ok"] += 1
            log.info("routes reloaded: %d routes, generation %d", len(table.routes), self.table.generation)
            return None

    async def _watch(self, path: Path) -> None:
        interval = self.settings.config.server.watch_interval
        while True:
            await asyncio.sleep(interval)
            signature = _signature(path)
            if signature != self._routes_signature and signature is not None:
                self._routes_signature = signature
                await self.reload()


def _signature(path: Path | None) -> tuple[int, int, int] | None:
    """What the watcher compares each tick: cheap to read, and changed by every write or rename."""
    if path is None:
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task
