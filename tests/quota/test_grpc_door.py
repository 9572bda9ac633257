"""Quota through the gRPC door: RESOURCE_EXHAUSTED with RetryInfo, RateLimit-* metadata, one count for both doors.

The backend is a raw-bytes grpc.aio service (no protos: the door proxies bytes),
and the gateway serves both doors from one YAML config.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web
from google.rpc import error_details_pb2, status_pb2
from grpc import aio

from edge.server import Gateway
from tests.conftest import GatewayFiles, StartBackend

METHOD = "/edge.test.Echo/Say"


class _Echo(grpc.GenericRpcHandler):
    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        async def say(request: bytes, context: aio.ServicerContext[bytes, bytes]) -> bytes:
            return b"echo:" + request

        return grpc.unary_unary_rpc_method_handler(say) if details.method == METHOD else None


@pytest.fixture
async def grpc_backend() -> AsyncIterator[str]:
    server = aio.server()
    server.add_generic_rpc_handlers((_Echo(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"grpc://127.0.0.1:{port}"
    await server.stop(None)


async def start(
    edge: GatewayFiles, start_backend: StartBackend, grpc_backend: str, rules: list[dict[str, Any]]
) -> Gateway:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/{tail:.*}", ok)
    http_backend = await start_backend(app)
    routes = [
        {"name": "echo", "match": {"grpc": "edge.test.Echo"}, "upstream": grpc_backend},
        {"name": "web", "match": {"prefix": "/"}, "upstream": http_backend},
    ]
    return await edge.start(
        {"routes": routes}, listeners={"grpc": {"host": "127.0.0.1", "port": 0}}, quota={"rules": rules}
    )


@pytest.fixture
async def channel(edge: GatewayFiles) -> AsyncIterator[Any]:
    channels: list[aio.Channel] = []

    def open_channel() -> aio.Channel:
        assert edge.gateway is not None
        channels.append(aio.insecure_channel(f"127.0.0.1:{edge.gateway.ports['grpc']}"))
        return channels[-1]

    yield open_channel
    for opened in channels:
        await opened.close()


def retry_info(error: aio.AioRpcError) -> error_details_pb2.RetryInfo:
    trailers = dict(error.trailing_metadata() or ())
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    info = error_details_pb2.RetryInfo()
    assert any(detail.Unpack(info) for detail in status.details)
    return info


async def test_grpc_calls_get_resource_exhausted_with_retry_info(
    edge: GatewayFiles, start_backend: StartBackend, grpc_backend: str, channel: Any
) -> None:
    await start(edge, start_backend, grpc_backend, [{"name": "agents", "key": "client_ip", "limit": 2, "period": "1h"}])
    say = channel().unary_unary(METHOD)
    remaining = []
    for _ in range(2):
        call = say(b"hi", timeout=5)
        assert await call == b"echo:hi"
        metadata = dict(await call.initial_metadata())
        remaining.append(metadata["ratelimit-remaining"])
        assert metadata["ratelimit-policy"] == "2;w=3600"
    assert remaining == ["1", "0"]
    with pytest.raises(aio.AioRpcError) as raised:
        await say(b"hi", timeout=5)
    error = raised.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "agents" in (error.details() or "")
    delay = retry_info(error).retry_delay
    assert 1799 <= delay.seconds + delay.nanos / 1e9 <= 1800
    trailers = dict(error.trailing_metadata() or ())
    assert 1799 <= int(trailers["retry-after"]) <= 1800
    assert trailers["ratelimit-remaining"] == "0"


async def test_one_rule_counts_calls_from_both_doors(
    edge: GatewayFiles, start_backend: StartBackend, grpc_backend: str, channel: Any
) -> None:
    await start(
        edge,
        start_backend,
        grpc_backend,
        [{"name": "per-ip", "key": "client_ip", "limit": 3, "period": "1h", "algorithm": "sliding"}],
    )
    say = channel().unary_unary(METHOD)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{edge.url}/a") as response:
            assert response.status == 200 and response.headers["RateLimit-Remaining"] == "2"
        assert await say(b"x", timeout=5) == b"echo:x"
        async with session.get(f"{edge.url}/b") as response:
            assert response.status == 200 and response.headers["RateLimit-Remaining"] == "0"
        with pytest.raises(aio.AioRpcError) as raised:
            await say(b"x", timeout=5)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        async with session.get(f"{edge.url}/c") as response:
            assert response.status == 429


async def test_ingress_and_operation_select_grpc_calls_only(
    edge: GatewayFiles, start_backend: StartBackend, grpc_backend: str, channel: Any
) -> None:
    rules = [
        {
            "name": "agents",
            "key": "client_ip",
            "limit": 1,
            "period": "1h",
            "match": {"ingress": ["grpc"], "operations": ["edge.test.Echo/Say"]},
        }
    ]
    await start(edge, start_backend, grpc_backend, rules)
    say = channel().unary_unary(METHOD)
    assert await say(b"x", timeout=5) == b"echo:x"
    with pytest.raises(aio.AioRpcError):
        await say(b"x", timeout=5)
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            async with session.get(f"{edge.url}/a") as response:
                assert response.status == 200 and "RateLimit-Policy" not in response.headers
