"""What the gRPC door tests share besides fixtures: route specs, a channel to a gateway, a raw HTTP/2 client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
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


WAIT = 5.0


class RawClient:
    """One HTTP/2 connection to the h2 door, spoken with h2 directly, to see the frames a caller gets back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.writer.write(self.conn.data_to_send())

    def send(self, headers: list[tuple[str, str]], body: bytes | None = None, end: bool = True) -> int:
        stream = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream, headers, end_stream=body is None and end)
        if body is not None:
            self.send_data(stream, body, end)
        self.flush()
        return stream

    def send_data(self, stream: int, body: bytes, end: bool) -> None:
        """`body` as DATA frames of the largest size the door allows (its windows must have room)."""
        size = self.conn.max_outbound_frame_size
        for start in range(0, max(len(body), 1), size):
            piece = body[start : start + size]
            self.conn.send_data(stream, piece, end_stream=end and start + size >= len(body))

    def flush(self) -> None:
        self.writer.write(self.conn.data_to_send())

    async def answer(self, stream: int) -> tuple[dict[str, str], bytes, dict[str, str]]:
        """Response headers, DATA and trailers of one stream (trailers-only answers come as headers)."""
        headers: dict[str, str] = {}
        trailers: dict[str, str] = {}
        data = b""
        async with asyncio.timeout(WAIT):
            while True:
                chunk = await self.reader.read(65536)
                assert chunk, "the door closed the connection"
                for event in self.conn.receive_data(chunk):
                    if getattr(event, "stream_id", None) != stream:
                        continue
                    if isinstance(event, h2.events.ResponseReceived):
                        headers = dict(event.headers)
                    elif isinstance(event, h2.events.TrailersReceived):
                        trailers = dict(event.headers)
                    elif isinstance(event, h2.events.DataReceived):
                        data += event.data
                        self.conn.acknowledge_received_data(event.flow_controlled_length, stream)
                    elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                        self.flush()
                        return headers, data, trailers
                self.flush()

    async def until(self, wanted: Callable[[Any], bool], wait: float = WAIT) -> Any:
        """Read (acknowledging DATA) until an event `wanted` accepts arrives, and return it."""
        async with asyncio.timeout(wait):
            while True:
                chunk = await self.reader.read(65536)
                assert chunk, "the door closed the connection"
                for event in self.conn.receive_data(chunk):
                    if isinstance(event, h2.events.DataReceived):
                        self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    if wanted(event):
                        self.flush()
                        return event
                self.flush()

    async def closed(self, wait: float = WAIT) -> list[Any]:
        """Read until the door closes the connection; the events on the way."""
        events: list[Any] = []
        async with asyncio.timeout(wait):
            while chunk := await self.reader.read(65536):
                events.extend(self.conn.receive_data(chunk))
        return events


@asynccontextmanager
async def raw_client(gateway: Gateway) -> AsyncIterator[RawClient]:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.ports["grpc"])
    try:
        yield RawClient(reader, writer)
    finally:
        writer.close()


def grpc_request(path: str, **extra: str) -> list[tuple[str, str]]:
    """A gRPC request's headers; `method` and `content_type` override those, the rest are metadata."""
    return [
        (":method", extra.pop("method", "POST")),
        (":scheme", "http"),
        (":path", path),
        (":authority", "edge.test"),
        ("content-type", extra.pop("content_type", "application/grpc")),
        ("te", "trailers"),
        *extra.items(),
    ]


def framed(message: bytes, compressed: bool = False) -> bytes:
    return (b"\x01" if compressed else b"\x00") + len(message).to_bytes(4, "big") + message
