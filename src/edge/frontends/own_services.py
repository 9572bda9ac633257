"""The gRPC services the gateway answers itself: `grpc.health.v1.Health` and server reflection.

Both are grpcio's servicers. The grpc.aio door registers them on its server;
the h2 door calls the same objects on its streams through `handler`, with a
context that has what they use (`abort`, `write`), so both engines answer
alike and health's graceful-shutdown state is one object.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from google.protobuf import descriptor_pb2  # type: ignore[import-untyped]
from grpc_health.v1 import health as grpc_health
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2

from edge.errors import Status
from edge.routes import LiveTable
from edge.transcode.descriptors import ProtoRegistry

if TYPE_CHECKING:
    from edge.frontends.grpc_stream import GrpcStream

HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
Handler = Callable[["GrpcStream"], Awaitable[None]]


class LiveReflection(reflection.aio.ReflectionServicer):  # type: ignore[misc]
    """Server reflection whose service list follows the route table as reloads change it.

    grpcio-reflection fixes the list when the servicer is built (it reads
    `self._service_names` when asked to list services); here that name is a
    property over the live table, so an agent discovers a service as soon as
    a reload routes it. tests/grpc/test_edge_services.py checks it.
    """

    def __init__(self, names: Callable[[], tuple[str, ...]], pool: Any) -> None:
        self._names = names
        super().__init__((), pool=pool)

    @property
    def _service_names(self) -> tuple[str, ...]:
        return self._names()

    @_service_names.setter
    def _service_names(self, _: tuple[str, ...]) -> None:
        """The base class sets the list once; the live one wins."""


class OwnServices:
    def __init__(self, table: LiveTable, registry: ProtoRegistry) -> None:
        own = {HEALTH, reflection.SERVICE_NAME}

        def listed() -> tuple[str, ...]:
            routed = table.current.grpc_services()
            return tuple(sorted(own.union(name for name in routed if registry.service(name) is not None)))

        self.health = grpc_health.aio.HealthServicer()
        self.reflection = LiveReflection(listed, reflection_pool(registry))
        self._handlers: dict[str, Handler] = {
            f"/{HEALTH}/Check": self._check,
            f"/{HEALTH}/Watch": self._watch,
            f"/{reflection.SERVICE_NAME}/ServerReflectionInfo": self._reflect,
        }

    def handler(self, path: str) -> Handler | None:
        return self._handlers.get(path)

    async def _check(self, stream: GrpcStream) -> None:
        request = await _only(stream, health_pb2.HealthCheckRequest)
        if request is None:
            return
        context = _Context(stream)
        try:
            response = await self.health.Check(request, context)
        except _Aborted as aborted:
            stream.answer(aborted.status, aborted.details)
            return
        await _reply(stream, response.SerializeToString())
        stream.end(Status.OK, "", ())

    async def _watch(self, stream: GrpcStream) -> None:
        request = await _only(stream, health_pb2.HealthCheckRequest)
        if request is None:
            return
        await self.health.Watch(request, _Context(stream))

    async def _reflect(self, stream: GrpcStream) -> None:
        requests = _parsed(stream.requests(), reflection_pb2.ServerReflectionRequest)
        async for response in self.reflection.ServerReflectionInfo(requests, _Context(stream)):
            await _reply(stream, response.SerializeToString())
        if not stream.responded:
            await _reply(stream, None)
        stream.end(Status.OK, "", ())


class _Aborted(Exception):
    def __init__(self, status: Status, details: str) -> None:
        super().__init__(details)
        self.status = status
        self.details = details


class _Context:
    """The part of `grpc.aio.ServicerContext` grpcio's health and reflection servicers use."""

    def __init__(self, stream: GrpcStream) -> None:
        self.stream = stream

    async def abort(self, code: Any, details: str = "", trailing_metadata: Any = ()) -> None:
        raise _Aborted(Status(code.value[0]), details)

    async def write(self, message: Any) -> None:
        await _reply(self.stream, message.SerializeToString())


async def _reply(stream: GrpcStream, message: bytes | None) -> None:
    """Response headers before the first message, then the message."""
    stream.open_reply(())
    if message is not None:
        await stream.send_message(message)


async def _only(stream: GrpcStream, kind: Any) -> Any:
    """The one request message of a unary call, parsed; None after answering a malformed call."""
    messages = [message async for message in stream.requests()]
    if len(messages) != 1:
        stream.answer(Status.INTERNAL, f"a unary call carried {len(messages)} messages")
        return None
    try:
        return kind.FromString(messages[0])
    except Exception:
        stream.answer(Status.INTERNAL, f"the request is not a {kind.DESCRIPTOR.full_name}")
        return None


async def _parsed(messages: AsyncIterator[bytes], kind: Any) -> AsyncIterator[Any]:
    async for message in messages:
        yield kind.FromString(message)


def reflection_pool(registry: ProtoRegistry) -> Any:
    """The registry's files plus the edge's own health and reflection protos."""
    own = [
        descriptor_pb2.FileDescriptorProto.FromString(m.DESCRIPTOR.serialized_pb) for m in (health_pb2, reflection_pb2)
    ]
    return ProtoRegistry([*registry.files.values(), *own]).pool
