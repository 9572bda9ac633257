"""The h2 gRPC door's calls: what a stream becomes once the connection has it.

`grpc_h2.py` speaks HTTP/2 and keeps each caller's streams; this module turns
a stream into a routed `Call` run through the pipeline (a unary call with its
one message, a streaming call with its messages as they come), hands it to
one of the gateway's own services (health, reflection), or answers it with a
refusal the pipeline audits, so the connection code holds no pipeline logic.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from edge.call import Call, Denial, MetaValue
from edge.frontends.grpc import GrpcDoor, grpc_call, method_kind
from edge.frontends.grpc_stream import GrpcStream
from edge.frontends.own_services import OwnServices
from edge.grpc_wire import WireError, decode_value


class GrpcH2Door:
    """What a stream becomes: a routed `Call` through the pipeline, or one of the gateway's own services."""

    def __init__(self, door: GrpcDoor, own: OwnServices) -> None:
        self.table = door.table
        self.pipeline = door.pipeline
        self.forward = door.forward
        self.forwarding = door.forwarding
        self.registry = door.registry
        self.scheme = door.scheme
        self.own = own

    def binary(self, name: str, value: str) -> MetaValue:
        """A `-bin` value as bytes; one that is not base64 is kept as its text's bytes rather than failing the call."""
        try:
            return decode_value(name, value)
        except WireError:
            return value.encode()

    def handler(self, path: str) -> Any:
        return self.own.handler(path)

    def kind(self, path: str) -> tuple[bool, bool]:
        return method_kind(self.registry, path)

    def _call(self, stream: GrpcStream) -> Call:
        connection = stream.connection
        return grpc_call(
            self.table, self.forwarding, self.scheme, stream.path, stream.metadata, connection.peer, stream.timeout
        )

    async def unary_call(self, stream: GrpcStream, message: bytes) -> None:
        call = stream.call = self._call(stream)
        call.body = message
        call.bytes_in = len(message)
        call.unary = True
        await self.pipeline.run(call, self.forward, stream.deliver)

    async def stream(self, stream: GrpcStream) -> None:
        call = stream.call = self._call(stream)
        call.body = _counted(stream.requests(), call)
        await self.pipeline.run(call, self.forward, stream.deliver)

    def audit_refusal(self, stream: GrpcStream, method: str, denial: Denial) -> None:
        """The audit record of a request the door answered without a pipeline (it was not a gRPC call)."""
        call = self._call(stream)
        call.method = method
        self.pipeline.refused(call, denial)

    async def refuse(self, stream: GrpcStream, denial: Denial) -> None:
        """Answer a call with `denial` through the pipeline, which runs no stage and writes its audit record."""
        call = stream.call = self._call(stream)
        call.rejected = denial
        await self.pipeline.run(call, self.forward, stream.deliver)


async def _counted(messages: AsyncIterator[bytes], call: Call) -> AsyncIterator[bytes]:
    async for message in messages:
        call.bytes_in += len(message)
        yield message
