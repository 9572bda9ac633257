"""The h2 gRPC door's stream idle timeout (`limits.stream_idle_timeout`): a call with no frame either way is ended.

A caller that never finishes its request, and a streaming call whose backend
goes quiet, are told UNAVAILABLE within the bound, their stream slot and the
upstream call let go and the audit record shows the status; a call that
keeps moving, on either side, is never cut. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from door_harness import SERVICE, WAIT, MakeGateway, channel_to, framed, grpc_request, grpc_route, raw_client
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from interop_server import Backend

from edge.errors import Status
from edge.frontends import grpc_h2

LIMIT = 0.3
BOUND = LIMIT * (1 + 2 / grpc_h2.IDLE_CHECKS) + 0.2  # two check intervals late at most, and the loop's slack
UNAVAILABLE = str(Status.UNAVAILABLE.value)


@pytest.fixture
def grpc_engine() -> str:
    return "h2"


def _sections(tmp_path: Path) -> dict[str, Any]:
    return {
        "limits": {"stream_idle_timeout": f"{int(LIMIT * 1000)}ms"},
        "audit": {"sinks": [{"type": "file", "path": str(tmp_path / "audit.jsonl")}]},
    }


def _records(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]


def _stub(channel: aio.Channel, pb: SimpleNamespace) -> Any:
    return pb.test_grpc.TestServiceStub(channel)


async def test_a_unary_call_never_finished_ends_unavailable_and_frees_its_slot(
    backend: Backend, make_gateway: MakeGateway, listeners: list[grpc_h2.GrpcH2Listener], tmp_path: Path
) -> None:
    gateway_started = make_gateway([grpc_route(backend.url)], **_sections(tmp_path))
    async with gateway_started as gateway, raw_client(gateway) as client:
        started = time.monotonic()
        stream = client.send(grpc_request(f"/{SERVICE}/UnaryCall"), framed(b"\x08\x01")[:3], end=False)
        headers, data, trailers = await client.answer(stream)
        waited = time.monotonic() - started
        (connection,) = listeners[0].connections
        assert connection.streams == {} and connection.conn.open_inbound_streams == 0
        later = client.send(grpc_request(f"/{SERVICE}/EmptyCall"), framed(b""))
        assert (await client.answer(later))[2]["grpc-status"] == "0"  # the same connection serves on
    status = {**headers, **trailers}
    assert status["grpc-status"] == UNAVAILABLE and "stream_idle_timeout" in status["grpc-message"]
    assert data == b""
    assert LIMIT <= waited < BOUND
    assert backend.servicer.records.calls.count("UnaryCall") == 0
    cut = [r for r in _records(tmp_path) if r["path"].endswith("/UnaryCall")]
    assert [(r["grpc_status"], "stream_idle_timeout" in r["reason"]) for r in cut] == [("UNAVAILABLE", True)]


async def test_a_stream_whose_backend_goes_quiet_ends_unavailable_and_its_upstream_call_is_cancelled(
    backend: Backend, make_gateway: MakeGateway, pb: SimpleNamespace, tmp_path: Path
) -> None:
    request = pb.messages.StreamingOutputCallRequest(
        response_parameters=[
            pb.messages.ResponseParameters(size=3),
            pb.messages.ResponseParameters(size=3, interval_us=int(WAIT * 4e6)),  # quiet far past the limit
        ]
    )
    gateway_started = make_gateway([grpc_route(backend.url)], **_sections(tmp_path))
    async with gateway_started as gateway, channel_to(gateway) as channel:
        call = _stub(channel, pb).StreamingOutputCall(request)
        async with asyncio.timeout(WAIT):
            first = await call.read()
            started = time.monotonic()
            with pytest.raises(aio.AioRpcError) as ended:
                await call.read()
            waited = time.monotonic() - started
            await backend.servicer.records.cancelled_event.wait()
    assert len(first.payload.body) == 3
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "stream_idle_timeout" in (ended.value.details() or "")
    assert LIMIT <= waited < BOUND
    assert backend.servicer.records.cancelled == ["StreamingOutputCall"]
    cut = [r for r in _records(tmp_path) if r["path"].endswith("/StreamingOutputCall")]
    assert [r["grpc_status"] for r in cut] == ["UNAVAILABLE"]


async def _paced(messages: list[Any], every: float) -> AsyncIterator[Any]:
    for message in messages:
        await asyncio.sleep(every)
        yield message


async def test_a_caller_that_keeps_sending_is_not_cut(
    backend: Backend, make_gateway: MakeGateway, pb: SimpleNamespace, tmp_path: Path
) -> None:
    """The backend says nothing until the end; the caller's messages alone keep the call alive (3x the limit)."""
    requests = [pb.messages.StreamingInputCallRequest(payload=pb.messages.Payload(body=b"x")) for _ in range(9)]
    gateway_started = make_gateway([grpc_route(backend.url)], **_sections(tmp_path))
    async with gateway_started as gateway, channel_to(gateway) as channel:
        reply = await _stub(channel, pb).StreamingInputCall(_paced(requests, LIMIT / 3), timeout=WAIT)
    assert reply.aggregated_payload_size == 9


async def test_a_backend_that_keeps_sending_is_not_cut(
    backend: Backend, make_gateway: MakeGateway, pb: SimpleNamespace, tmp_path: Path
) -> None:
    """The caller said all it had to say at once; the backend's messages alone keep the call alive (3x the limit)."""
    every = pb.messages.ResponseParameters(size=1, interval_us=int(LIMIT / 3 * 1e6))
    request = pb.messages.StreamingOutputCallRequest(response_parameters=[every] * 9)
    gateway_started = make_gateway([grpc_route(backend.url)], **_sections(tmp_path))
    async with gateway_started as gateway, channel_to(gateway) as channel:
        call = _stub(channel, pb).StreamingOutputCall(request, timeout=WAIT)
        replies = [reply async for reply in call]
        assert await call.code() == grpc.StatusCode.OK
    assert len(replies) == 9
    assert [r["grpc_status"] for r in _records(tmp_path)] == ["OK"]


async def test_the_gateways_own_health_watch_is_not_cut(
    backend: Backend, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    """A Watch is idle by design once its request is in: the gateway answers it itself, holding no upstream call."""
    gateway_started = make_gateway([grpc_route(backend.url)], **_sections(tmp_path))
    async with gateway_started as gateway, channel_to(gateway) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        async with asyncio.timeout(WAIT):
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            await asyncio.sleep(LIMIT * 3)
        assert not watch.done()
        watch.cancel()


async def test_zero_turns_the_stream_idle_timeout_off(
    backend: Backend, make_gateway: MakeGateway, listeners: list[grpc_h2.GrpcH2Listener]
) -> None:
    gateway_started = make_gateway([grpc_route(backend.url)], limits={"stream_idle_timeout": 0})
    async with gateway_started as gateway, raw_client(gateway) as client:
        stream = client.send(grpc_request(f"/{SERVICE}/UnaryCall"), framed(b"\x08\x01")[:3], end=False)
        await asyncio.sleep(0.2)
        (connection,) = listeners[0].connections
        assert connection._check_in(0.0) == grpc_h2.IDLE_TIMEOUT
        assert stream in connection.streams
