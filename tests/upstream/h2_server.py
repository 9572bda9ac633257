"""A scripted HTTP/2 server on loopback (h2, server side) for answers a real gRPC server never gives.

Each request's headers go to `script(peer, stream_id, number)`, `number`
counting requests across connections from 0; the script answers with the
connection's h2 calls (`peer.conn`) and `peer.flush()`. Request DATA is read
and acknowledged, nothing more. `acks_pings=False` makes the server deaf to
keepalive pings (h2 answers them itself otherwise).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import h2.events

GRPC_OK = [(":status", "200"), ("content-type", "application/grpc")]


def grpc_message(payload: bytes) -> bytes:
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


class Peer(asyncio.Protocol):
    def __init__(self, server: ScriptedServer) -> None:
        self.server = server
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.peers.append(self)
        self.conn.initiate_connection()
        self.flush()

    def data_received(self, data: bytes) -> None:
        if not self.server.acks_pings and b"\x00\x00\x08\x06\x00" in data:
            return  # a PING frame: read as if it never came (and everything with it)
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                self.server.requests.append(dict(event.headers))  # type: ignore[arg-type]
                number = self.server.count
                self.server.count += 1
                self.server.script(self, event.stream_id, number)  # type: ignore[arg-type]
            elif isinstance(event, h2.events.DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)  # type: ignore[arg-type]
            elif isinstance(event, h2.events.StreamReset):
                self.server.resets.append((event.stream_id, event.error_code))
        self.flush()

    def flush(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.conn.data_to_send())

    def answer(self, stream_id: int, payload: bytes, status: str = "0", message: str = "") -> None:
        self.conn.send_headers(stream_id, GRPC_OK)
        self.conn.send_data(stream_id, grpc_message(payload))
        trailers = [("grpc-status", status)] + ([("grpc-message", message)] if message else [])
        self.conn.send_headers(stream_id, trailers, end_stream=True)
        self.flush()


Script = Callable[[Peer, int, int], Any]


class ScriptedServer:
    def __init__(self, script: Script, acks_pings: bool = True) -> None:
        self.script = script
        self.acks_pings = acks_pings
        self.peers: list[Peer] = []
        self.requests: list[dict[str, str]] = []
        self.resets: list[tuple[int | None, Any]] = []
        self.count = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: Peer(self), "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    def close(self) -> None:
        for peer in self.peers:
            if peer.transport is not None:
                peer.transport.abort()
        if self.server is not None:
            self.server.close()
