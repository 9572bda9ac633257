"""A grpc.aio backend of raw-bytes methods for the gRPC upstream clients' tests (no protos needed).

`/test.Echo/<Method>`:
- Unary: answers the request bytes; echoes `x-echo-*` metadata as initial metadata and as trailers.
- Fail: ends with `x-status` / `x-message-bin` (UTF-8; trailers-only unless `x-initial` is set), `x-echo-*` in trailers.
- Sleep: sleeps `x-sleep` seconds, records whether it was cancelled.
- Size: answers `int(request)` zero bytes.
- Count: server streaming, `int(request)` messages `b"m<i>"` `x-interval` seconds apart (cancel recorded).
- Collect: client streaming, answers the messages joined with `|`.
- Echo: bidi, answers each message as it comes (cancel recorded).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc import aio

SERVICE = "test.Echo"
CANCEL_SETTLES = 0.05  # grpc.aio ends a cancelled call's request stream first, then cancels the handler


@dataclass
class Seen:
    metadata: list[dict[str, Any]] = field(default_factory=list)
    remaining: list[float | None] = field(default_factory=list)
    peers: set[str] = field(default_factory=set)
    called: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled_methods: list[str] = field(default_factory=list)


def _code(value: int) -> grpc.StatusCode:
    return next(code for code in grpc.StatusCode if code.value[0] == value)


class EchoHandlers:
    def __init__(self) -> None:
        self.seen = Seen()

    def _begin(self, context: Any) -> dict[str, Any]:
        metadata = {m.key: m.value for m in context.invocation_metadata()}
        self.seen.metadata.append(metadata)
        self.seen.remaining.append(context.time_remaining())
        self.seen.peers.add(context.peer())
        self.seen.called.set()
        return metadata

    def _cancelled(self, method: str) -> None:
        self.seen.cancelled_methods.append(method)
        self.seen.cancelled.set()

    @staticmethod
    def _echoed(metadata: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
        return tuple((k, v) for k, v in metadata.items() if k.startswith("x-echo-"))

    async def unary(self, request: bytes, context: Any) -> bytes:
        metadata = self._begin(context)
        echoed = self._echoed(metadata)
        if echoed:
            await context.send_initial_metadata(echoed)
            context.set_trailing_metadata(echoed)
        return request

    async def fail(self, request: bytes, context: Any) -> bytes:
        metadata = self._begin(context)
        if "x-initial" in metadata:
            await context.send_initial_metadata((("x-initial", metadata["x-initial"]),))
        context.set_trailing_metadata(self._echoed(metadata))
        await context.abort(_code(int(metadata["x-status"])), metadata.get("x-message-bin", b"").decode())
        return b""  # pragma: no cover - abort raises

    async def sleep(self, request: bytes, context: Any) -> bytes:
        metadata = self._begin(context)
        try:
            await asyncio.sleep(float(metadata.get("x-sleep", "5")))
        except asyncio.CancelledError:
            self._cancelled("Sleep")
            raise
        return request

    async def size(self, request: bytes, context: Any) -> bytes:
        self._begin(context)
        return bytes(int(request))

    async def count(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        metadata = self._begin(context)
        interval = float(metadata.get("x-interval", "0"))
        try:
            for i in range(int(request)):
                if interval:
                    await asyncio.sleep(interval)
                yield b"m%d" % i
        except asyncio.CancelledError:
            self._cancelled("Count")
            raise
        context.set_trailing_metadata(self._echoed(metadata))

    async def collect(self, requests: AsyncIterator[bytes], context: Any) -> bytes:
        self._begin(context)
        return b"|".join([message async for message in requests])

    async def echo(self, requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        self._begin(context)
        try:
            async for message in requests:
                yield message
            await asyncio.sleep(CANCEL_SETTLES)
        except asyncio.CancelledError:
            self._cancelled("Echo")
            raise

    def generic_handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
                "Fail": grpc.unary_unary_rpc_method_handler(self.fail),
                "Sleep": grpc.unary_unary_rpc_method_handler(self.sleep),
                "Size": grpc.unary_unary_rpc_method_handler(self.size),
                "Count": grpc.unary_stream_rpc_method_handler(self.count),
                "Collect": grpc.stream_unary_rpc_method_handler(self.collect),
                "Echo": grpc.stream_stream_rpc_method_handler(self.echo),
            },
        )


@dataclass
class EchoBackend:
    port: int
    handlers: EchoHandlers
    server: aio.Server

    @property
    def seen(self) -> Seen:
        return self.handlers.seen

    async def stop(self) -> None:
        await self.server.stop(None)


async def start_echo(
    port: int = 0, credentials: grpc.ServerCredentials | None = None, options: list[tuple[str, Any]] | None = None
) -> EchoBackend:
    handlers = EchoHandlers()
    server = aio.server(options=[("grpc.so_reuseport", 0), *(options or [])])
    server.add_generic_rpc_handlers((handlers.generic_handler(),))
    address = f"127.0.0.1:{port}"
    bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    await server.start()
    return EchoBackend(bound, handlers, server)
