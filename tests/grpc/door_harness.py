"""What the gRPC door tests share besides fixtures: route specs and a channel to a gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from grpc import aio

from edge.server import Gateway

SERVICE = "grpc.testing.TestService"
PROTOS = Path(__file__).resolve().parents[1] / "protos"
INTEROP_PROTOS = ("interop/empty.proto", "interop/messages.proto", "interop/test.proto")

MakeGateway = Callable[..., AbstractAsyncContextManager[Gateway]]


def grpc_route(upstream: str, match: str = SERVICE, **extra: Any) -> dict[str, Any]:
    return {"match": {"grpc": match}, "upstream": upstream, **extra}


@asynccontextmanager
async def channel_to(gateway: Gateway, credentials: Any = None, **options: Any) -> AsyncIterator[aio.Channel]:
    """A channel to the gateway's gRPC listener; `options` are grpc channel arguments."""
    target = f"127.0.0.1:{gateway.ports['grpc']}"
    arguments = list(options.items())
    channel = (
        aio.secure_channel(target, credentials, arguments) if credentials else aio.insecure_channel(target, arguments)
    )
    try:
        yield channel
    finally:
        await channel.close()
