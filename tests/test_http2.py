"""The HTTP/2 connection base both gRPC sides share: what it keeps once its connection is gone."""

from __future__ import annotations

import asyncio
from typing import Any

import h2.config
import h2.connection
import h2.events

from edge.http2 import H2Protocol

WAIT = 5.0


class Served(H2Protocol):
    def __init__(self) -> None:
        super().__init__(client_side=False)
        self.resets = 0
        self.all_reset = asyncio.Event()
        self.lost = asyncio.Event()

    def handle_event(self, event: Any) -> None:
        if isinstance(event, h2.events.StreamReset):
            self.resets += 1
            if self.resets == 20:
                self.all_reset.set()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.lost.set()


async def test_a_closed_connection_lets_go_of_its_streams() -> None:
    """h2's connection is a reference cycle, freed only by a full collection: its stream state must not wait for that."""
    accepted: asyncio.Future[Served] = asyncio.get_running_loop().create_future()

    def protocol() -> Served:
        accepted.set_result(Served())
        return accepted.result()

    server = await asyncio.get_running_loop().create_server(protocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    request = [(":method", "POST"), (":scheme", "http"), (":path", "/a.B/C"), (":authority", "edge")]
    for _ in range(20):
        stream = client.get_next_available_stream_id()
        client.send_headers(stream, request)
        client.reset_stream(stream)
    writer.write(client.data_to_send())
    try:
        async with asyncio.timeout(WAIT):
            served = await accepted
            await served.all_reset.wait()
            assert served.conn._closed_streams or served.conn.streams
            writer.close()
            await served.lost.wait()
    finally:
        server.close()
        await server.wait_closed()
    assert served.conn.streams == {} and len(served.conn._closed_streams) == 0
