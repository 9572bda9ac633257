"""The gRPC door as a caller and a backend see it: bytes, metadata, status, deadlines, cancellation.

Every test talks to a real grpc.aio backend on loopback through a gateway
started from YAML, and asserts what the caller receives or what the backend
observed.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from door_harness import MakeGateway, channel_to, grpc_route
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from interop_server import STATUS_DETAILS, Backend

from edge.call import Call, Denial
from edge.errors import Status

WAIT = 5.0
BIG = 400_000
SPECIAL = "\t\ntab, CR/LF \r\n, BMP \u263a, non-BMP \U0001f608 and %percent\t\n"


def stub(channel: aio.Channel, pb: SimpleNamespace) -> Any:
    return pb.test_grpc.TestServiceStub(channel)


async def test_messages_over_300kb_both_ways(backend: Backend, make_gateway: MakeGateway, pb: SimpleNamespace) -> None:
    async with make_gateway([grpc_route(backend.url)]) as gateway, channel_to(gateway) as channel:
        request = pb.messages.SimpleRequest(response_size=BIG, payload=pb.messages.Payload(body=b"\x01" * BIG))
        response = await stub(channel, pb).UnaryCall(request, timeout=WAIT)
        assert response.payload.body == bytes(BIG)
        call = stub(channel, pb).FullDuplexCall(timeout=WAIT)
        for _ in range(2):
            await call.write(
                pb.messages.StreamingOutputCallRequest(
                    payload=pb.messages.Payload(body=b"\x02" * BIG),
                    response_parameters=[pb.messages.ResponseParameters(size=BIG)],
                )
            )
            assert len((await call.read()).payload.body) == BIG
        await call.done_writing()
        assert await call.code() == grpc.StatusCode.OK


async def test_request_metadata_reaches_the_backend_intact(
    backend: Backend, make_gateway: MakeGateway, pb: SimpleNamespace
) -> None:
    binary = bytes(range(256))
    metadata = (("x-tenant", "va-north"), ("x-blob-bin", binary), ("x-request-id", "req-123"))
    async with make_gateway([grpc_route(backend.url)]) as gateway, channel_to(gateway) as channel:
        call = stub(channel, pb).EmptyCall(pb.empty.Empty(), metadata=metadata, timeout=WAIT)
        await call
        assert ("x-request-id", "req-123") in tuple(await call.initial_metadata())
    seen = backend.servicer.records.calls[0].metadata
    assert seen["x-tenant"] == "va-north"
    assert seen["x-blob-bin"] == binary
    assert seen["x-request-id"] == "req-123"
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["traceparent"].startswith("00-")


@pytest.mark.parametrize("code", [c for c in grpc.StatusCode if c is not grpc.StatusCode.OK], ids=lambda c: c.name)
async def test_every_status_passes_through(
    code: grpc.StatusCode, backend: Backend, make_gateway: MakeGateway, pb: SimpleNamespace
) -> None:
    status = pb.messages.EchoStatus(code=code.value[0], message=f"{code.name}: {SPECIAL}")
    async with make_gateway([grpc_route(backend.url)]) as gateway, channel_to(gateway) as channel:
        call = stub(channel, pb).UnaryCall(pb.messages.SimpleRequest(response_status=status), timeout=WAIT)
        assert await call.code() == code
        assert await call.details() == status.message


async def test_status_details_pass_through_byte_for_byte(
    backend: Backend, make_gateway: MakeGateway, pb: SimpleNamespace
) -> None:
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason="STOCK_EMPTY", domain="pharmacy", metadata={"rx": "RX-42"}))
    details = status_pb2.Status(code=9, message="no refills left", details=[detail]).SerializeToString()
    request = pb.messages.SimpleRequest(response_status=pb.messages.EchoStatus(code=9, message="no refills left"))
    async with make_gateway([grpc_route(backend.url)]) as gateway, channel_to(gateway) as channel:
        call = stub(channel, pb).UnaryCall(request, metadata=((STATUS_DETAILS, details),), timeout=WAIT)
        assert await call.code() == grpc.StatusCode.FAILED_PRECONDITION
        trailers = dict(tuple(await call.trailing_metadata()))
    assert trailers["grpc-status-details-bin"] == details


async def test_caller_deadline_reaches_the_backend(
    backend: Backend, make_gateway: MakeGateway, pb: SimpleNamespace
) -> None:
    async with make_gateway([grpc_route(backend.url)]) as gateway, channel_to(gateway) as channel:
        await stub(channel, pb).EmptyCall(pb.empty.Empty(), timeout=4.0)
    remaining = backend.servicer.records.calls[0].time_remaining
    assert remaining is not None and 3.0 < remaining <= 4.01


async def test_route_timeout_caps_the_deadline(
    backend: Backend, make_gateway: MakeGateway, pb: SimpleNamespace
) -> None:
    slow = pb.messages.StreamingOutputCallRequest(
        response_parameters=[pb.messages.ResponseParameters(size=1, interval_us=3_000_000)]
    )
    async with make_gateway([grpc_route(backend.url, timeout="300ms")]) as gateway, channel_to(gateway) as channel:
        started = time.monotonic()
        call = stub(channel, pb).StreamingOutputCall(slow, timeout=WAIT)
        assert await call.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 2.0
    remaining = backend.servicer.records.calls[0].time_remaining
    assert remaining is not None and remaining <= 0.31


async def test_cancel_after_first_response_reaches_the_backend(
    backend: Backend, make_gateway: MakeGateway, pb: SimpleNamespace
) -> None:
    async with make_gateway([grpc_route(backend.url)]) as gateway, channel_to(gateway) as channel:
        call = stub(channel, pb).FullDuplexCall(timeout=WAIT)
        await call.write(
            pb.messages.StreamingOutputCallRequest(response_parameters=[pb.messages.ResponseParameters(size=10)])
        )
        await call.read()
        call.cancel()
        await asyncio.wait_for(backend.servicer.records.cancelled_event.wait(), WAIT)
    assert backend.servicer.records.cancelled == ["FullDuplexCall"]


async def test_unreachable_backend_is_unavailable(make_gateway: MakeGateway, pb: SimpleNamespace) -> None:
    with_closed_port = grpc_route("grpc://127.0.0.1:1")
    async with make_gateway([with_closed_port]) as gateway, channel_to(gateway) as channel:
        call = stub(channel, pb).EmptyCall(pb.empty.Empty(), timeout=WAIT)
        assert await call.code() == grpc.StatusCode.UNAVAILABLE
        assert "unreachable" in await call.details()


@pytest.mark.parametrize(("request_size", "response_size"), [(100_000, 10), (10, 100_000)], ids=["request", "response"])
async def test_message_size_limit_is_resource_exhausted(
    request_size: int, response_size: int, backend: Backend, make_gateway: MakeGateway, pb: SimpleNamespace
) -> None:
    request = pb.messages.SimpleRequest(
        response_size=response_size, payload=pb.messages.Payload(body=bytes(request_size))
    )
    async with (
        make_gateway([grpc_route(backend.url)], limits={"max_grpc_message": "64KiB"}) as gateway,
        channel_to(gateway) as channel,
    ):
        call = stub(channel, pb).UnaryCall(request, timeout=WAIT)
        assert await call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_one_connection_per_endpoint_is_reused(
    backend: Backend, make_gateway: MakeGateway, pb: SimpleNamespace
) -> None:
    async with make_gateway([grpc_route(backend.url)]) as gateway:
        for _ in range(3):
            async with channel_to(gateway) as channel:
                await stub(channel, pb).EmptyCall(pb.empty.Empty(), timeout=WAIT)
    assert len({c.peer for c in backend.servicer.records.calls}) == 1


async def test_compressed_messages_both_ways(backend: Backend, make_gateway: MakeGateway, pb: SimpleNamespace) -> None:
    request = pb.messages.SimpleRequest(
        response_size=50_000,
        payload=pb.messages.Payload(body=bytes(50_000)),
        response_compressed=pb.messages.BoolValue(value=True),
    )
    async with make_gateway([grpc_route(backend.url)]) as gateway, channel_to(gateway) as channel:
        response = await stub(channel, pb).UnaryCall(request, compression=grpc.Compression.Gzip, timeout=WAIT)
    assert response.payload.body == bytes(50_000)


async def test_a_denial_is_a_status_with_trailers(
    backend: Backend, make_gateway: MakeGateway, pb: SimpleNamespace
) -> None:
    async def deny(call: Call) -> Denial:
        return Denial(
            Status.PERMISSION_DENIED,
            "refills need a pharmacist role \u263a",
            headers=(("Retry-After", "30"),),
            details=({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "ROLE_MISSING"},),
        )

    async with make_gateway([grpc_route(backend.url)]) as gateway, channel_to(gateway) as channel:
        gateway.pipeline.stages = (deny,)
        call = stub(channel, pb).FullDuplexCall(timeout=WAIT)
        assert await call.code() == grpc.StatusCode.PERMISSION_DENIED
        assert await call.details() == "refills need a pharmacist role \u263a"
        trailers = dict(tuple(await call.trailing_metadata()))
    assert trailers["retry-after"] == "30"
    assert trailers["x-request-id"]
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info) and info.reason == "ROLE_MISSING"
    assert backend.servicer.records.calls == []


@pytest.mark.parametrize("deny", [False, True], ids=["proxied", "denied"])
async def test_stage_reply_headers_reach_the_caller(
    deny: bool, backend: Backend, make_gateway: MakeGateway, pb: SimpleNamespace
) -> None:
    async def count(call: Call) -> Denial | None:
        call.reply_headers.append(("RateLimit-Limit", "10"))
        return Denial(Status.RESOURCE_EXHAUSTED, "slow down") if deny else None

    async with make_gateway([grpc_route(backend.url)]) as gateway, channel_to(gateway) as channel:
        gateway.pipeline.stages = (count,)
        call = stub(channel, pb).EmptyCall(pb.empty.Empty(), timeout=WAIT)
        assert await call.code() == (grpc.StatusCode.RESOURCE_EXHAUSTED if deny else grpc.StatusCode.OK)
        metadata = await call.trailing_metadata() if deny else await call.initial_metadata()
    assert ("ratelimit-limit", "10") in tuple(metadata)


async def test_a_method_route_leaves_the_other_methods_unimplemented(
    backend: Backend, make_gateway: MakeGateway, pb: SimpleNamespace
) -> None:
    empty_only = grpc_route(backend.url, "/grpc.testing.TestService/EmptyCall")
    async with make_gateway([empty_only]) as gateway, channel_to(gateway) as channel:
        assert await stub(channel, pb).EmptyCall(pb.empty.Empty(), timeout=WAIT) == pb.empty.Empty()
        call = stub(channel, pb).UnaryCall(pb.messages.SimpleRequest(), timeout=WAIT)
        assert await call.code() == grpc.StatusCode.UNIMPLEMENTED
        assert await call.details() == "no route for this path"
    assert [c.method for c in backend.servicer.records.calls] == ["EmptyCall"]


async def test_an_unexpected_error_is_internal(
    backend: Backend, make_gateway: MakeGateway, pb: SimpleNamespace
) -> None:
    async def broken(call: Call) -> None:
        raise RuntimeError("bug")

    async with make_gateway([grpc_route(backend.url)]) as gateway, channel_to(gateway) as channel:
        gateway.pipeline.stages = (broken,)
        call = stub(channel, pb).EmptyCall(pb.empty.Empty(), timeout=WAIT)
        assert await call.code() == grpc.StatusCode.INTERNAL
        assert await call.details() == "internal error"


async def test_stages_see_the_grpc_call(backend: Backend, make_gateway: MakeGateway, pb: SimpleNamespace) -> None:
    seen: list[Call] = []

    async def observe(call: Call) -> None:
        seen.append(call)

    method = grpc_route(backend.url, "/grpc.testing.TestService/EmptyCall", name="empty")
    async with make_gateway([method]) as gateway, channel_to(gateway) as channel:
        gateway.pipeline.stages = (observe,)
        await stub(channel, pb).EmptyCall(pb.empty.Empty(), metadata=(("authorization", "Bearer t"),), timeout=WAIT)
    (call,) = seen
    assert (call.ingress, call.method, call.path) == ("grpc", "POST", "/grpc.testing.TestService/EmptyCall")
    assert call.route is not None and call.route.name == "empty"
    assert call.decisions["operation"] == "grpc.testing.TestService/EmptyCall"
    assert call.peer.address == "127.0.0.1" and call.peer.port > 0
    assert call.metadata.get("authorization") == "Bearer t"
    assert call.deadline is not None


async def test_every_call_is_audited(
    backend: Backend, make_gateway: MakeGateway, pb: SimpleNamespace, tmp_path: Path
) -> None:
    audit = {"sinks": [{"type": "file", "path": str(tmp_path / "audit.jsonl")}]}
    async with make_gateway([grpc_route(backend.url)], audit=audit) as gateway, channel_to(gateway) as channel:
        await stub(channel, pb).EmptyCall(pb.empty.Empty(), timeout=WAIT)
        unrouted = pb.test_grpc.UnimplementedServiceStub(channel).UnimplementedCall(pb.empty.Empty(), timeout=WAIT)
        assert await unrouted.code() == grpc.StatusCode.UNIMPLEMENTED
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    summary = [(r["ingress"], r["path"], r["grpc_status"], r["route"] is not None) for r in records]
    assert summary == [
        ("grpc", "/grpc.testing.TestService/EmptyCall", "OK", True),
        ("grpc", "/grpc.testing.UnimplementedService/UnimplementedCall", "UNIMPLEMENTED", False),
    ]


async def test_a_dead_endpoint_is_skipped(backend: Backend, make_gateway: MakeGateway, pb: SimpleNamespace) -> None:
    upstreams = {"pharmacy": {"endpoints": ["grpc://127.0.0.1:1", backend.url]}}
    async with make_gateway([grpc_route("pharmacy")], upstreams=upstreams) as gateway, channel_to(gateway) as channel:
        for _ in range(4):
            await stub(channel, pb).EmptyCall(pb.empty.Empty(), timeout=WAIT)
    assert len(backend.servicer.records.calls) == 4


async def test_shutdown_lets_in_flight_calls_finish(
    backend: Backend, make_gateway: MakeGateway, pb: SimpleNamespace
) -> None:
    slow = pb.messages.StreamingOutputCallRequest(
        response_parameters=[pb.messages.ResponseParameters(size=7, interval_us=300_000)]
    )
    async with make_gateway([grpc_route(backend.url)]) as gateway:
        channel = aio.insecure_channel(f"127.0.0.1:{gateway.ports['grpc']}")
        call = stub(channel, pb).StreamingOutputCall(slow, timeout=WAIT)
        await asyncio.wait_for(backend.servicer.records.called.wait(), WAIT)
    try:
        assert [len(r.payload.body) async for r in call] == [7]
        assert await call.code() == grpc.StatusCode.OK
    finally:
        await channel.close()


async def test_routes_reload_reaches_the_grpc_door(
    backend: Backend, make_gateway: MakeGateway, pb: SimpleNamespace, tmp_path: Path
) -> None:
    async with make_gateway([]) as gateway, channel_to(gateway) as channel:
        call = stub(channel, pb).EmptyCall(pb.empty.Empty(), timeout=WAIT)
        assert await call.code() == grpc.StatusCode.UNIMPLEMENTED
        (tmp_path / "routes.yaml").write_text(json.dumps({"routes": [grpc_route(backend.url)]}))
        assert await gateway.reload() is None
        assert await stub(channel, pb).EmptyCall(pb.empty.Empty(), timeout=WAIT) == pb.empty.Empty()


async def test_a_call_ended_by_the_callers_deadline_is_audited_as_deadline_exceeded(
    backend: Backend, make_gateway: MakeGateway, pb: SimpleNamespace, tmp_path: Path
) -> None:
    """The caller's client cancels at its deadline, usually before the gateway's own timers: still DEADLINE_EXCEEDED."""
    slow = pb.messages.StreamingOutputCallRequest(
        response_parameters=[pb.messages.ResponseParameters(size=1, interval_us=3_000_000)]
    )
    audit = {"sinks": [{"type": "file", "path": str(tmp_path / "audit.jsonl")}]}
    async with make_gateway([grpc_route(backend.url)], audit=audit) as gateway, channel_to(gateway) as channel:
        for _ in range(3):
            call = stub(channel, pb).StreamingOutputCall(slow, timeout=0.3)
            assert await call.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await stub(channel, pb).EmptyCall(pb.empty.Empty(), timeout=WAIT)
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(r["grpc_status"], r["status"]) for r in records] == [("DEADLINE_EXCEEDED", 504)] * 3 + [("OK", 200)]
