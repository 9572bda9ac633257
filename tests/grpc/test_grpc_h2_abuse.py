"""The h2 gRPC door against hostile or broken callers: each test is one way a caller misbehaves.

Spoken with a raw HTTP/2 client (door_harness.RawClient) or raw bytes, to send
what grpc clients never would: streams reset in a loop, streams past the
limit, header blocks too large, garbage instead of the preface, silence,
reads that never come. Every wait is bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from types import SimpleNamespace

import h2.events
import h2.settings
import pytest
from door_harness import SERVICE, WAIT, MakeGateway, RawClient, framed, grpc_request, grpc_route, raw_client
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame, PingFrame
from interop_server import Backend

import edge.server
from edge.call import Call, Denial
from edge.errors import Status
from edge.frontends import grpc_h2
from edge.http2 import WINDOW

EMPTY_CALL = f"/{SERVICE}/EmptyCall"
UNARY_CALL = f"/{SERVICE}/UnaryCall"
FULL_DUPLEX = f"/{SERVICE}/FullDuplexCall"
STREAMING_INPUT = f"/{SERVICE}/StreamingInputCall"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@pytest.fixture
def grpc_engine() -> str:
    return "h2"


def _server_side(listeners: list[grpc_h2.GrpcH2Listener]) -> grpc_h2.GrpcH2Connection:
    (connection,) = listeners[0].connections
    return connection


async def _served(client: RawClient) -> bool:
    """A unary call on `client`'s connection still completes."""
    stream = client.send(grpc_request(EMPTY_CALL), framed(b""))
    return (await client.answer(stream))[2].get("grpc-status") == "0"


async def _eventually(check: Callable[[], bool]) -> None:
    for _ in range(int(WAIT / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not within WAIT")


def _queued(connection: grpc_h2.GrpcH2Connection, stream_id: int, count: int) -> bool:
    stream = connection.streams.get(stream_id)
    return stream is not None and len(stream.messages) == count


def _no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert bad == [], [r.getMessage() for r in bad]


# 1. HTTP/2 Rapid Reset (CVE-2023-44487)


async def test_rapid_reset_ends_in_goaway_enhance_your_calm(
    backend: Backend, make_gateway: MakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[Call] = []

    async def observe(call: Call) -> None:
        calls.append(call)

    async with make_gateway([grpc_route(backend.url)], audit={"sinks": []}) as gateway:
        gateway.pipeline.stages = (observe,)
        async with raw_client(gateway) as client:
            for _ in range(30):  # 3000 streaming calls, each reset as soon as it is opened
                for _ in range(100):
                    stream = client.conn.get_next_available_stream_id()
                    client.conn.send_headers(stream, grpc_request(FULL_DUPLEX))
                    client.conn.reset_stream(stream)
                client.flush()
                await asyncio.sleep(0)
            events = await client.closed()
        async with raw_client(gateway) as other:
            assert await _served(other)  # other callers are not affected
    (goaway,) = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert goaway.last_stream_id < 2 * (grpc_h2.RESET_BURST + 1000)  # the door stopped near the budget, not at 3000
    assert len(calls) <= grpc_h2.RESET_BURST
    assert any("ENHANCE_YOUR_CALM" in r.getMessage() for r in caplog.records)
    _no_tracebacks(caplog)


async def test_cancelling_every_open_call_at_once_is_within_the_budget(
    backend: Backend, make_gateway: MakeGateway
) -> None:
    async with make_gateway([grpc_route(backend.url)]) as gateway, raw_client(gateway) as client:
        streams = [client.send(grpc_request(FULL_DUPLEX), end=False) for _ in range(grpc_h2.MAX_STREAMS)]
        await asyncio.sleep(0.2)
        for stream in streams:
            client.conn.reset_stream(stream)
        client.flush()
        assert await _served(client)


# 2. A caller that never reads


@asynccontextmanager
async def _not_reading(gateway: edge.server.Gateway) -> AsyncIterator[tuple[socket.socket, asyncio.StreamWriter]]:
    """A connection whose receive buffer is tiny, so what the door writes backs up in its transport."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", gateway.ports["grpc"]))
    _, writer = await asyncio.open_connection(sock=sock)
    try:
        yield sock, writer
    finally:
        writer.close()


async def _watch_write_buffer(connection: grpc_h2.GrpcH2Connection, limit: int) -> int:
    """The largest write buffer seen until the door stops reading the caller, the buffer passes `limit`, or WAIT."""
    transport = connection.transport
    assert transport is not None
    largest = 0
    for _ in range(int(WAIT / 0.005)):
        largest = max(largest, transport.get_write_buffer_size())
        if largest > limit:
            break
        if not transport.is_reading():
            await asyncio.sleep(0.2)  # paused: nothing more arrives, so nothing more is written
            return max(largest, transport.get_write_buffer_size())
        await asyncio.sleep(0.005)
    return largest


async def test_a_ping_flood_that_is_never_read_is_not_buffered(
    listeners: list[grpc_h2.GrpcH2Listener], backend: Backend, make_gateway: MakeGateway
) -> None:
    limit = 1 << 20
    async with make_gateway([grpc_route(backend.url)]) as gateway, _not_reading(gateway) as (_, writer):
        settings = h2.connection.H2Connection()
        settings.initiate_connection()
        writer.write(settings.data_to_send())
        await asyncio.sleep(0.1)
        door_side = _server_side(listeners)
        door_side.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # type: ignore[union-attr]
        writer.write(PingFrame(0, opaque_data=b"edge-abu").serialize() * (3 * limit // 17))  # 3 MiB of PINGs
        largest = await _watch_write_buffer(door_side, limit)
    assert largest < limit


async def test_calls_with_large_answers_that_are_never_read_are_not_buffered(
    listeners: list[grpc_h2.GrpcH2Listener], backend: Backend, make_gateway: MakeGateway, pb: SimpleNamespace
) -> None:
    limit = 1 << 20
    request = pb.messages.SimpleRequest(response_size=256 << 10).SerializeToString()
    async with make_gateway([grpc_route(backend.url)]) as gateway, _not_reading(gateway) as (_, writer):
        client = h2.connection.H2Connection()
        client.initiate_connection()
        client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: WINDOW})
        client.increment_flow_control_window(WINDOW)
        writer.write(client.data_to_send())
        await asyncio.sleep(0.1)
        door_side = _server_side(listeners)
        door_side.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # type: ignore[union-attr]
        for _ in range(32):  # 8 MiB of answers asked for
            stream = client.get_next_available_stream_id()
            client.send_headers(stream, grpc_request(UNARY_CALL))
            client.send_data(stream, framed(request), end_stream=True)
        writer.write(client.data_to_send())
        largest = await _watch_write_buffer(door_side, limit)
    assert largest < limit


# 3. Streams past MAX_CONCURRENT_STREAMS


async def test_a_stream_past_the_limit_is_refused_and_the_connection_serves_on(
    backend: Backend, make_gateway: MakeGateway
) -> None:
    async with make_gateway([grpc_route(backend.url)]) as gateway, raw_client(gateway) as client:
        # open the streams before the door's SETTINGS are read, as a client that ignores them would
        opened = [client.send(grpc_request(EMPTY_CALL), end=False) for _ in range(grpc_h2.MAX_STREAMS + 1)]
        refused = await client.until(lambda e: isinstance(e, h2.events.StreamReset | h2.events.ConnectionTerminated))
        assert isinstance(refused, h2.events.StreamReset), refused
        assert (refused.stream_id, refused.error_code) == (opened[-1], ErrorCodes.REFUSED_STREAM)
        client.conn.send_data(opened[0], framed(b""), end_stream=True)
        client.flush()
        assert (await client.answer(opened[0]))[2]["grpc-status"] == "0"
        assert await _served(client)


# 4. Header blocks and header fields


async def test_a_header_block_above_64_kib_ends_the_connection_cleanly(
    backend: Backend, make_gateway: MakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    big = {f"x-big-{n}": "v" * 8000 for n in range(10)}
    async with make_gateway([grpc_route(backend.url)]) as gateway, raw_client(gateway) as client:
        client.send(grpc_request(EMPTY_CALL, **big), framed(b""))
        events = await client.closed()
    (goaway,) = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert backend.servicer.records.calls == []
    _no_tracebacks(caplog)


@pytest.mark.parametrize(
    "metadata",
    [{f"x-field-{n}": "v" for n in range(101)}, {"x-long": "v" * 9000}],
    ids=["more-than-max-headers", "longer-than-max-header-line"],
)
async def test_too_many_or_too_long_header_fields_end_the_call_with_resource_exhausted(
    metadata: dict[str, str], backend: Backend, make_gateway: MakeGateway
) -> None:
    async with make_gateway([grpc_route(backend.url)]) as gateway, raw_client(gateway) as client:
        stream = client.send(grpc_request(EMPTY_CALL, **metadata), framed(b""), end=False)
        headers, _, _ = await client.answer(stream)
        assert headers["grpc-status"] == str(Status.RESOURCE_EXHAUSTED.value)
        assert await _served(client)
    assert len(backend.servicer.records.calls) == 1


# 5. Silence, half-sent frames, idle connections


@pytest.mark.parametrize(
    "sent", [b"", PREFACE[:10], PREFACE], ids=["nothing", "half-a-preface", "preface-without-settings"]
)
async def test_a_connection_that_does_not_start_http2_is_closed(
    sent: bytes, backend: Backend, make_gateway: MakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(grpc_h2, "HANDSHAKE_TIMEOUT", 0.2)
    async with make_gateway([grpc_route(backend.url)]) as gateway:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.ports["grpc"])
        writer.write(sent)
        async with asyncio.timeout(WAIT):
            while await reader.read(65536):
                pass
        writer.close()


@pytest.mark.parametrize("then", [b"", b"\x00\x00\x64\x00\x00\x00\x00\x00\x03abc"], ids=["silence", "half-a-frame"])
async def test_a_connection_without_calls_goes_away_after_the_idle_timeout(
    then: bytes, backend: Backend, make_gateway: MakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(grpc_h2, "IDLE_TIMEOUT", 0.3)
    async with make_gateway([grpc_route(backend.url)]) as gateway, raw_client(gateway) as client:
        assert await _served(client)
        client.writer.write(then)
        events = await client.closed()
    (goaway,) = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert goaway.error_code == ErrorCodes.NO_ERROR


async def test_a_call_in_flight_keeps_its_connection_past_the_idle_timeout(
    backend: Backend, make_gateway: MakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(grpc_h2, "IDLE_TIMEOUT", 0.2)
    async with make_gateway([grpc_route(backend.url)]) as gateway, raw_client(gateway) as client:
        stream = client.send(grpc_request(FULL_DUPLEX), end=False)
        await asyncio.sleep(0.5)
        client.conn.end_stream(stream)
        client.flush()
        assert (await client.answer(stream))[2]["grpc-status"] == "0"


# 6. Not HTTP/2 at all


async def test_an_http1_request_is_closed_with_one_log_line(
    backend: Backend, make_gateway: MakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with make_gateway([grpc_route(backend.url)]) as gateway:
        caplog.clear()
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.ports["grpc"])
        writer.write(b"GET / HTTP/1.1\r\nHost: edge.test\r\n\r\n" * 100)
        async with asyncio.timeout(WAIT):
            while await reader.read(65536):
                pass
        writer.close()
        await asyncio.sleep(0.05)
        lines = [r for r in caplog.records if r.name.startswith(("edge", "asyncio"))]
    assert len(lines) <= 1 and all(r.levelno <= logging.INFO for r in lines), [r.getMessage() for r in lines]
    _no_tracebacks(caplog)


# 7. A caller's reset arriving with its request, while the door answers it


@pytest.mark.parametrize(
    ("extra", "body", "end"),
    [
        ({"method": "GET"}, None, False),
        ({"grpc-encoding": "snappy"}, None, False),
        ({f"x-field-{n}": "v" for n in range(101)}, None, False),
        ({}, framed(b"") * 2, False),
        ({}, b"\x00\x00\x00\x00\x09abc", True),
        ({}, b"\x01\x00\x00\x00\x01a", False),
    ],
    ids=["not-post", "unknown-encoding", "too-many-headers", "second-unary-message", "cut-message", "not-compressed"],
)
async def test_a_reset_in_the_same_read_as_a_local_answer_breaks_nothing(
    extra: dict[str, str],
    body: bytes | None,
    end: bool,
    backend: Backend,
    make_gateway: MakeGateway,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with make_gateway([grpc_route(backend.url)]) as gateway, raw_client(gateway) as client:
        stream = client.conn.get_next_available_stream_id()
        client.conn.send_headers(stream, grpc_request(EMPTY_CALL, **extra), end_stream=body is None and end)
        if body is not None:
            client.conn.send_data(stream, body, end_stream=end)
        client.conn.reset_stream(stream)
        client.flush()
        assert await _served(client)
    _no_tracebacks(caplog)


# Flow control of the caller's messages


async def test_a_unary_call_with_a_second_message_ends_at_once(backend: Backend, make_gateway: MakeGateway) -> None:
    async with make_gateway([grpc_route(backend.url)]) as gateway, raw_client(gateway) as client:
        stream = client.send(grpc_request(EMPTY_CALL), framed(b"") * 2, end=False)
        headers, _, trailers = await client.answer(stream)
    assert {**headers, **trailers}["grpc-status"] == str(Status.INTERNAL.value)


async def test_calls_that_end_before_reading_their_messages_return_their_window(
    listeners: list[grpc_h2.GrpcH2Listener], backend: Backend, make_gateway: MakeGateway
) -> None:
    go = asyncio.Semaphore(0)

    async def deny_later(call: Call) -> Denial:
        await go.acquire()
        return Denial(Status.PERMISSION_DENIED, "no")

    body = framed(bytes(1 << 20)) * 4
    async with make_gateway([grpc_route(backend.url)], audit={"sinks": []}) as gateway:
        gateway.pipeline.stages = (deny_later,)
        async with raw_client(gateway) as client:
            conn = client.conn
            await client.until(lambda e: isinstance(e, h2.events.WindowUpdated))
            for _ in range(6):  # 24 MiB through a 16 MiB connection window
                if conn.outbound_flow_control_window < len(body):
                    await client.until(lambda _: conn.outbound_flow_control_window >= len(body))
                stream = client.send(grpc_request(FULL_DUPLEX), body, end=False)
                await _eventually(
                    partial(_queued, _server_side(listeners), stream, 4)
                )  # the door holds them unread ...
                go.release()  # ... and the call ends without reading them
                headers, _, _ = await client.answer(stream)
                assert headers["grpc-status"] == str(Status.PERMISSION_DENIED.value)


async def test_large_messages_on_concurrent_streams_do_not_exhaust_the_connection_window(
    backend: Backend, make_gateway: MakeGateway, pb: SimpleNamespace
) -> None:
    size = 3_600_000
    message = framed(
        pb.messages.StreamingInputCallRequest(payload=pb.messages.Payload(body=bytes(size))).SerializeToString()
    )
    async with make_gateway([grpc_route(backend.url)]) as gateway, raw_client(gateway) as client:
        await client.until(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
        streams = {client.send(grpc_request(STREAMING_INPUT), end=False): 0 for _ in range(5)}  # 18 MB > the window
        conn = client.conn
        async with asyncio.timeout(WAIT * 2):
            while any(sent < len(message) for sent in streams.values()):
                for stream, sent in streams.items():
                    room = min(conn.local_flow_control_window(stream), 1 << 18, len(message) - sent)
                    if room > 0:
                        client.send_data(stream, message[sent : sent + room], end=False)
                        streams[stream] = sent + room
                client.flush()
                if all(conn.local_flow_control_window(s) == 0 or n == len(message) for s, n in streams.items()):
                    await client.until(lambda e: isinstance(e, h2.events.WindowUpdated))
        for stream in streams:
            client.conn.end_stream(stream)
            client.flush()
            _, data, trailers = await client.answer(stream)
            assert trailers["grpc-status"] == "0"
            assert pb.messages.StreamingInputCallResponse.FromString(data[5:]).aggregated_payload_size == size


async def test_a_call_in_flight_is_answered_after_the_callers_goaway(
    backend: Backend, make_gateway: MakeGateway
) -> None:
    async with make_gateway([grpc_route(backend.url)]) as gateway, raw_client(gateway) as client:
        stream = client.send(grpc_request(FULL_DUPLEX), end=False)
        await asyncio.sleep(0.1)
        client.writer.write(GoAwayFrame(0, last_stream_id=0, error_code=0).serialize())
        client.conn.end_stream(stream)
        client.flush()
        assert (await client.answer(stream))[2]["grpc-status"] == "0"
        assert not any(isinstance(e, h2.events.ConnectionTerminated) for e in await client.closed())
