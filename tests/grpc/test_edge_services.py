"""The gRPC services the gateway answers itself: server reflection and health."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
import yaml
from door_harness import PROTOS, SERVICE, MakeGateway, channel_to, grpc_route
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from interop_server import Backend

WAIT = 5.0
OWN = {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}


async def _reflect(channel: grpc.aio.Channel, request: reflection_pb2.ServerReflectionRequest) -> object:
    call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(timeout=WAIT)
    await call.write(request)
    await call.done_writing()
    response = await call.read()
    assert await call.code() == grpc.StatusCode.OK
    return response


@pytest.mark.parametrize("protos", ["descriptor-set", "proto-sources"])
async def test_reflection_lists_the_routed_services_it_knows(
    protos: str, backend: Backend, make_gateway: MakeGateway
) -> None:
    routes = [grpc_route(backend.url), grpc_route(backend.url, "hms.unknown.v1.Ghost", name="ghost")]
    source = True if protos == "descriptor-set" else PROTOS
    async with make_gateway(routes, protos=source) as gateway, channel_to(gateway) as channel:
        listed = await _reflect(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
        described = await _reflect(channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE))
    assert {s.name for s in listed.list_services_response.service} == {SERVICE, *OWN}
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(b)
        for b in described.file_descriptor_response.file_descriptor_proto
    ]
    assert {f.name for f in files} == {"interop/test.proto", "interop/empty.proto", "interop/messages.proto"}


async def test_reflection_describes_the_edge_services(make_gateway: MakeGateway) -> None:
    async with make_gateway([], protos=False) as gateway, channel_to(gateway) as channel:
        listed = await _reflect(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
        health = await _reflect(
            channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.health.v1.Health")
        )
    assert {s.name for s in listed.list_services_response.service} == OWN
    assert health.file_descriptor_response.file_descriptor_proto


async def test_health_answers_serving(make_gateway: MakeGateway) -> None:
    async with make_gateway([], protos=False) as gateway, channel_to(gateway) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=WAIT)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_follows_the_routes_a_reload_brings(
    backend: Backend, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    other = "grpc.testing.UnimplementedService"
    async with make_gateway([grpc_route(backend.url)]) as gateway, channel_to(gateway) as channel:
        before = await _reflect(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
        routes = {"routes": [grpc_route(backend.url, other, name="other")]}
        (tmp_path / "routes.yaml").write_text(yaml.safe_dump(routes))
        assert await gateway.reload() is None
        after = await _reflect(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
    assert {s.name for s in before.list_services_response.service} == {SERVICE, *OWN}
    assert {s.name for s in after.list_services_response.service} == {other, *OWN}
