"""A `grpc.testing.TestService` backend (grpc.aio) for the gRPC door's behaviour tests.

It implements the server features of the published gRPC interop test
descriptions that the named client cases use: EmptyCall, UnaryCall,
StreamingOutputCall, StreamingInputCall, FullDuplexCall, HalfDuplexCall, Echo
Status, Echo Metadata, ResponseParameters.interval_us and CompressedResponse.
UnimplementedCall is left unimplemented, as the interop server does.

Beyond the interop features it records what a test needs to see from the
backend's side: the metadata, deadline and peer of every call, and which calls
were cancelled. A call carrying `x-test-status-details-bin` ends with that
value as its `grpc-status-details-bin` trailer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import ModuleType, SimpleNamespace
from typing import Any

import grpc
from grpc import aio

ECHO_INITIAL = "x-grpc-test-echo-initial"
ECHO_TRAILING = "x-grpc-test-echo-trailing-bin"
STATUS_DETAILS = "x-test-status-details-bin"
CANCEL_SETTLES = 0.02  # seconds after the end of a request stream within which a cancel shows


@dataclass
class Observed:
    method: str
    metadata: dict[str, Any]
    time_remaining: float | None
    peer: str


@dataclass
class Backend:
    """A running interop backend: its port, the servicer's records, the server."""

    port: int
    servicer: InteropServicer
    server: aio.Server

    @property
    def url(self) -> str:
        return f"grpc://127.0.0.1:{self.port}"


@dataclass
class Records:
    calls: list[Observed] = field(default_factory=list)
    called: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: list[str] = field(default_factory=list)
    cancelled_event: asyncio.Event = field(default_factory=asyncio.Event)


def servicer_class(pb: SimpleNamespace) -> type:
    base: type = pb.test_grpc.TestServiceServicer
    return type("InteropServicer", (InteropServicer, base), {})


class InteropServicer:
    def __init__(self, pb: SimpleNamespace) -> None:
        self.pb = pb
        self.messages: ModuleType = pb.messages
        self.records = Records()

    async def _begin(self, method: str, context: Any) -> dict[str, Any]:
        metadata = {m.key: m.value for m in context.invocation_metadata()}
        self.records.calls.append(Observed(method, metadata, context.time_remaining(), context.peer()))
        self.records.called.set()
        if ECHO_INITIAL in metadata:
            await context.send_initial_metadata(((ECHO_INITIAL, metadata[ECHO_INITIAL]),))
        trailing = [(ECHO_TRAILING, metadata[ECHO_TRAILING])] if ECHO_TRAILING in metadata else []
        if trailing:
            context.set_trailing_metadata(tuple(trailing))
        return metadata

    def _cancelled(self, method: str) -> None:
        self.records.cancelled.append(method)
        self.records.cancelled_event.set()

    async def _requests(self, method: str, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """The call's requests; a cancel is recorded (grpc.aio ends the stream, then cancels the handler)."""
        try:
            async for request in requests:
                yield request
            await asyncio.sleep(CANCEL_SETTLES)
        except asyncio.CancelledError:
            self._cancelled(method)
            raise

    def _end_with(self, status: Any, metadata: dict[str, Any], context: Any) -> bool:
        """Echo Status: end the call with the requested code and message; True when it did."""
        if status is None or status.code == 0:
            return False
        trailing = [(ECHO_TRAILING, metadata[ECHO_TRAILING])] if ECHO_TRAILING in metadata else []
        if STATUS_DETAILS in metadata:
            trailing.append(("grpc-status-details-bin", metadata[STATUS_DETAILS]))
        context.set_trailing_metadata(tuple(trailing))
        context.set_code(_code(status.code))
        context.set_details(status.message)
        return True

    def _payload(self, size: int) -> Any:
        return self.messages.Payload(body=bytes(size))

    async def EmptyCall(self, request: Any, context: Any) -> Any:
        await self._begin("EmptyCall", context)
        return self.pb.empty.Empty()

    async def UnaryCall(self, request: Any, context: Any) -> Any:
        metadata = await self._begin("UnaryCall", context)
        if request.HasField("response_compressed") and request.response_compressed.value:
            context.set_compression(grpc.Compression.Gzip)
        if self._end_with(request.response_status if request.HasField("response_status") else None, metadata, context):
            return self.messages.SimpleResponse()
        return self.messages.SimpleResponse(payload=self._payload(request.response_size))

    async def StreamingOutputCall(self, request: Any, context: Any) -> AsyncIterator[Any]:
        metadata = await self._begin("StreamingOutputCall", context)
        for parameters in request.response_parameters:
            try:
                await asyncio.sleep(parameters.interval_us / 1e6)
            except asyncio.CancelledError:
                self._cancelled("StreamingOutputCall")
                raise
            yield self.messages.StreamingOutputCallResponse(payload=self._payload(parameters.size))
        self._end_with(request.response_status if request.HasField("response_status") else None, metadata, context)

    async def StreamingInputCall(self, requests: AsyncIterator[Any], context: Any) -> Any:
        await self._begin("StreamingInputCall", context)
        total = 0
        async for request in self._requests("StreamingInputCall", requests):
            total += len(request.payload.body)
        return self.messages.StreamingInputCallResponse(aggregated_payload_size=total)

    async def FullDuplexCall(self, requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        metadata = await self._begin("FullDuplexCall", context)
        async for request in self._requests("FullDuplexCall", requests):
            if self._end_with(
                request.response_status if request.HasField("response_status") else None, metadata, context
            ):
                return
            for parameters in request.response_parameters:
                await asyncio.sleep(parameters.interval_us / 1e6)
                yield self.messages.StreamingOutputCallResponse(payload=self._payload(parameters.size))

    async def HalfDuplexCall(self, requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        await self._begin("HalfDuplexCall", context)
        collected = [request async for request in self._requests("HalfDuplexCall", requests)]
        for request in collected:
            for parameters in request.response_parameters:
                yield self.messages.StreamingOutputCallResponse(payload=self._payload(parameters.size))


def _code(value: int) -> grpc.StatusCode:
    return next(code for code in grpc.StatusCode if code.value[0] == value)


async def start_backend(pb: SimpleNamespace, credentials: grpc.ServerCredentials | None = None) -> Backend:
    servicer = servicer_class(pb)(pb)
    server = aio.server(options=[("grpc.so_reuseport", 0)])
    pb.test_grpc.add_TestServiceServicer_to_server(servicer, server)
    address = "127.0.0.1:0"
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    await server.start()
    return Backend(port, servicer, server)
