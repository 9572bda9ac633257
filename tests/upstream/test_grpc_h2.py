"""The gRPC upstream clients against real servers on loopback: the h2 client and the grpc.aio one, side by side.

Every behaviour both clients share runs against both (`make_upstream` is
parametrized), so the h2 client is held to what the grpc.aio client does. The
grpc.aio backend (grpc_backend.py) is a real gRPC server; answers a real
server never gives (non-gRPC HTTP answers, refused streams, GOAWAY mid-call,
deaf keepalive) come from a scripted HTTP/2 server (h2_server.py).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import h2.errors
import pytest
from hyperframe.frame import GoAwayFrame

from edge.call import Body, Call, Metadata, MetaValue, Peer, Reply
from edge.config.gateway import Limits
from edge.config.gateway import Upstream as UpstreamConfig
from edge.errors import Status, UpstreamTimeout, UpstreamUnavailable
from edge.upstream import Upstream
from edge.upstream.grpc import GrpcUpstream
from edge.upstream.grpc_h2 import REFUSED_RETRIES, GrpcH2Upstream
from tests.certs import issue_cert, make_ca
from tests.net import free_port
from tests.upstream.grpc_backend import EchoBackend, start_echo
from tests.upstream.h2_server import GRPC_OK, Script, ScriptedServer, grpc_message
from tests.upstream.h2_server import Peer as ServerPeer

WAIT = 5.0
CLIENTS: dict[str, Any] = {"grpc.aio": GrpcUpstream, "h2": GrpcH2Upstream}
MakeUpstream = Callable[..., Upstream]


def grpc_call(
    method: str,
    body: Body = b"",
    *,
    unary: bool = True,
    metadata: Sequence[tuple[str, MetaValue]] = (),
    deadline: float | None = None,
) -> Call:
    return Call(
        ingress="grpc",
        method="POST",
        path=f"/test.Echo/{method}",
        peer=Peer("10.1.2.3"),
        metadata=Metadata(metadata),
        body=body,
        unary=unary,
        request_id="req-1",
        deadline=None if deadline is None else time.monotonic() + deadline,
    )


async def send(upstream: Upstream, call: Call) -> Reply:
    async with asyncio.timeout(WAIT):
        return await upstream.send(call)


async def drained(reply: Reply) -> list[bytes]:
    """Every message of the reply's body (its status is filled in after)."""
    body = reply.body
    if isinstance(body, bytes):
        return [body]
    async with asyncio.timeout(WAIT):
        return [message async for message in body]


async def stream_of(*messages: bytes) -> AsyncIterator[bytes]:
    for message in messages:
        yield message


def _factory(kind: str, made: list[Upstream]) -> MakeUpstream:
    def make(*endpoints: str, limits: Limits | None = None, **config: Any) -> Upstream:
        settings = {"endpoints": list(endpoints), "connect_timeout": 5.0, "timeout": 10.0, **config}
        upstream: Upstream = CLIENTS[kind]("test", UpstreamConfig.model_validate(settings), limits or Limits())
        made.append(upstream)
        return upstream

    make.kind = kind  # type: ignore[attr-defined]
    return make


@pytest.fixture(params=list(CLIENTS))
async def make_upstream(request: pytest.FixtureRequest) -> AsyncIterator[MakeUpstream]:
    made: list[Upstream] = []
    yield _factory(request.param, made)
    for upstream in made:
        await upstream.aclose()


@pytest.fixture
async def make_h2() -> AsyncIterator[MakeUpstream]:
    made: list[Upstream] = []
    yield _factory("h2", made)
    for upstream in made:
        await upstream.aclose()


@pytest.fixture
async def echo() -> AsyncIterator[EchoBackend]:
    backend = await start_echo()
    yield backend
    await backend.stop()


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[..., Awaitable[tuple[ScriptedServer, str]]]]:
    servers: list[ScriptedServer] = []

    async def start(script: Script, **options: Any) -> tuple[ScriptedServer, str]:
        server = ScriptedServer(script, **options)
        servers.append(server)
        return server, f"grpc://127.0.0.1:{await server.start()}"

    yield start
    for server in servers:
        server.close()


def url(backend: EchoBackend) -> str:
    return f"grpc://127.0.0.1:{backend.port}"


# calls and their endings


async def test_unary_carries_metadata_both_ways(make_upstream: MakeUpstream, echo: EchoBackend) -> None:
    metadata = [("x-echo-text", "plain"), ("x-echo-blob-bin", b"\x00\xff\x01="), ("x-forwarded-for", "1.1.1.1")]
    reply = await send(make_upstream(url(echo)), grpc_call("Unary", b"hello", metadata=metadata))

    assert (reply.status, reply.http_status, reply.body, reply.message) == (Status.OK, 200, b"hello", "")
    echoed = [("x-echo-text", "plain"), ("x-echo-blob-bin", b"\x00\xff\x01=")]
    assert [pair for pair in reply.headers if pair[0].startswith("x-echo-")] == echoed
    assert [pair for pair in reply.trailers if pair[0].startswith("x-echo-")] == echoed
    seen = echo.seen.metadata[0]
    assert seen["x-echo-blob-bin"] == b"\x00\xff\x01="
    assert (seen["x-forwarded-for"], seen["x-request-id"]) == ("1.1.1.1, 10.1.2.3", "req-1")
    remaining = echo.seen.remaining[0]
    assert remaining is not None and 5 < remaining <= 10.5  # grpc-core "may round up" a grpc-timeout it encodes


@pytest.mark.parametrize("initial", [False, True], ids=["trailers-only", "headers-then-trailers"])
async def test_status_message_and_trailers_pass_through(
    make_upstream: MakeUpstream, echo: EchoBackend, initial: bool
) -> None:
    text = "nicht gefunden: 100% ünïcödé ✓ %41"
    metadata: list[tuple[str, MetaValue]] = [
        ("x-status", "5"),
        ("x-message-bin", text.encode()),
        ("x-echo-why-bin", b"\x01\x02"),
    ]
    if initial:
        metadata.append(("x-initial", "yes"))
    reply = await send(make_upstream(url(echo)), grpc_call("Fail", b"", metadata=metadata))

    assert (reply.status, reply.http_status, reply.message) == (Status.NOT_FOUND, 404, text)
    assert list(reply.headers) == ([("x-initial", "yes")] if initial else [])
    assert ("x-echo-why-bin", b"\x01\x02") in reply.trailers
    assert await drained(reply) == []


async def test_server_streaming(make_upstream: MakeUpstream, echo: EchoBackend) -> None:
    call = grpc_call("Count", b"3", unary=False, metadata=[("x-echo-end", "done")])
    reply = await send(make_upstream(url(echo)), call)

    assert await drained(reply) == [b"m0", b"m1", b"m2"]
    assert (reply.status, reply.http_status, reply.message) == (Status.OK, 200, "")
    assert ("x-echo-end", "done") in reply.trailers


async def test_client_streaming(make_upstream: MakeUpstream, echo: EchoBackend) -> None:
    reply = await send(make_upstream(url(echo)), grpc_call("Collect", stream_of(b"a", b"b", b"c"), unary=False))

    assert await drained(reply) == [b"a|b|c"]
    assert reply.status is Status.OK


async def test_bidi_ping_pong(make_upstream: MakeUpstream, echo: EchoBackend) -> None:
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def requests() -> AsyncIterator[bytes]:
        while (message := await queue.get()) is not None:
            yield message

    queue.put_nowait(b"ping 0")
    reply = await send(make_upstream(url(echo)), grpc_call("Echo", requests(), unary=False))
    assert isinstance(reply.body, AsyncIterable)
    answers = aiter(reply.body)
    async with asyncio.timeout(WAIT):
        assert await anext(answers) == b"ping 0"
        for i in range(1, 4):
            queue.put_nowait(b"ping %d" % i)
            assert await anext(answers) == b"ping %d" % i
        queue.put_nowait(None)
        assert [message async for message in answers] == []
    assert reply.status is Status.OK


async def test_large_messages_both_ways(make_upstream: MakeUpstream, echo: EchoBackend) -> None:
    upstream = make_upstream(url(echo))
    big = os.urandom(3 * 2**20 + 7)
    reply = await send(upstream, grpc_call("Unary", big))
    assert (reply.status, reply.body) == (Status.OK, big)

    pieces = [os.urandom(3 * 2**19), os.urandom(2**20 + 1)]
    reply = await send(upstream, grpc_call("Echo", stream_of(*pieces), unary=False))
    assert await drained(reply) == pieces
    assert reply.status is Status.OK


async def test_a_message_above_the_limit_is_resource_exhausted(make_upstream: MakeUpstream, echo: EchoBackend) -> None:
    upstream = make_upstream(url(echo), limits=Limits(max_grpc_message=1024))
    reply = await send(upstream, grpc_call("Size", b"4096"))
    assert (reply.status, reply.http_status) == (Status.RESOURCE_EXHAUSTED, 429)

    reply = await send(upstream, grpc_call("Size", b"1000"))
    assert (reply.status, reply.body) == (Status.OK, bytes(1000))


@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "client-streaming"])
async def test_a_request_message_above_the_limit_never_leaves(
    make_upstream: MakeUpstream, echo: EchoBackend, streamed: bool
) -> None:
    upstream = make_upstream(url(echo), limits=Limits(max_grpc_message=1024))
    body: Body = stream_of(bytes(2000)) if streamed else bytes(2000)
    reply = await send(upstream, grpc_call("Collect" if streamed else "Unary", body, unary=not streamed))
    assert await drained(reply) == []
    if streamed and make_upstream.kind == "grpc.aio":  # type: ignore[attr-defined]
        assert reply.status in (Status.INTERNAL, Status.RESOURCE_EXHAUSTED)  # grpc-core's answer depends on timing
    else:
        assert reply.status is Status.RESOURCE_EXHAUSTED
    assert echo.seen.metadata == [] or streamed


# deadlines and cancellation


async def test_deadline_exceeded_on_a_unary_call(make_upstream: MakeUpstream, echo: EchoBackend) -> None:
    upstream = make_upstream(url(echo), timeout=0.3)
    started = time.monotonic()
    reply = await send(upstream, grpc_call("Sleep", metadata=[("x-sleep", "5")]))

    assert (reply.status, reply.http_status) == (Status.DEADLINE_EXCEEDED, 504)
    assert time.monotonic() - started < 2
    async with asyncio.timeout(WAIT):
        await echo.seen.cancelled.wait()


async def test_deadline_exceeded_mid_stream(make_upstream: MakeUpstream, echo: EchoBackend) -> None:
    call = grpc_call("Count", b"100", unary=False, metadata=[("x-interval", "0.1")], deadline=0.35)
    reply = await send(make_upstream(url(echo)), call)

    messages = await drained(reply)
    assert 1 <= len(messages) < 10
    assert reply.status is Status.DEADLINE_EXCEEDED


async def test_a_spent_deadline_never_reaches_the_upstream(make_upstream: MakeUpstream, echo: EchoBackend) -> None:
    with pytest.raises(UpstreamTimeout):
        await send(make_upstream(url(echo)), grpc_call("Unary", b"x", deadline=-1))
    assert echo.seen.metadata == []


async def test_a_caller_that_goes_away_cancels_the_upstream_call(
    make_upstream: MakeUpstream, echo: EchoBackend
) -> None:
    upstream = make_upstream(url(echo))
    reply = await send(upstream, grpc_call("Count", b"1000", unary=False, metadata=[("x-interval", "0.02")]))
    assert isinstance(reply.body, AsyncIterable)

    async def consume() -> None:
        async for _ in reply.body:  # type: ignore[union-attr]
            pass

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.1)
    consumer.cancel()
    async with asyncio.timeout(WAIT):
        await echo.seen.cancelled.wait()
    assert echo.seen.cancelled_methods == ["Count"]


async def test_closing_the_reply_body_cancels_the_upstream_call(make_upstream: MakeUpstream, echo: EchoBackend) -> None:
    async def one_then_silence() -> AsyncIterator[bytes]:
        yield b"1"
        await asyncio.Event().wait()

    reply = await send(make_upstream(url(echo)), grpc_call("Echo", one_then_silence(), unary=False))
    body: Any = reply.body
    async with asyncio.timeout(WAIT):
        assert await anext(aiter(body)) == b"1"
        await body.aclose()
        await echo.seen.cancelled.wait()


async def test_a_cancelled_unary_call_is_cancelled_upstream(make_upstream: MakeUpstream, echo: EchoBackend) -> None:
    upstream = make_upstream(url(echo))
    task = asyncio.create_task(upstream.send(grpc_call("Sleep", metadata=[("x-sleep", "5")])))
    async with asyncio.timeout(WAIT):
        await echo.seen.called.wait()
    task.cancel()
    async with asyncio.timeout(WAIT):
        await echo.seen.cancelled.wait()
    with pytest.raises(asyncio.CancelledError):
        await task


# endpoints and connections


async def test_a_refused_endpoint_is_skipped(make_upstream: MakeUpstream, echo: EchoBackend) -> None:
    dead = f"grpc://127.0.0.1:{free_port()}"
    upstream = make_upstream(dead, url(echo))
    call = grpc_call("Unary", b"hi")
    reply = await send(upstream, call)
    assert (reply.status, reply.body, call.endpoint) == (Status.OK, b"hi", url(echo))


async def test_no_endpoint_accepting_is_unavailable(make_upstream: MakeUpstream) -> None:
    upstream = make_upstream(f"grpc://127.0.0.1:{free_port()}", f"grpc://127.0.0.1:{free_port()}")
    with pytest.raises(UpstreamUnavailable):
        await send(upstream, grpc_call("Unary", b"hi"))


async def test_a_restarted_backend_is_reached_again(make_upstream: MakeUpstream) -> None:
    backend = await start_echo()
    upstream = make_upstream(url(backend))
    try:
        assert (await send(upstream, grpc_call("Unary", b"one"))).body == b"one"
        await backend.stop()
        await asyncio.sleep(0.05)
        backend = await start_echo(backend.port)
        reply = await send(upstream, grpc_call("Unary", b"two"))
        assert (reply.status, reply.body) == (Status.OK, b"two")
    finally:
        await backend.stop()


async def test_many_calls_share_one_connection_at_the_servers_stream_limit(make_upstream: MakeUpstream) -> None:
    if make_upstream.kind == "grpc.aio":  # type: ignore[attr-defined]
        pytest.xfail("grpc-core opens more streams than the limit before the server's SETTINGS arrive: GOAWAY")
    backend = await start_echo(options=[("grpc.max_concurrent_streams", 4)])
    try:
        upstream = make_upstream(url(backend))
        payloads = [b"call %d" % i for i in range(500)]
        async with asyncio.timeout(20):
            replies = await asyncio.gather(*(upstream.send(grpc_call("Unary", p)) for p in payloads))
        assert [(r.status, r.body) for r in replies] == [(Status.OK, p) for p in payloads]
        assert len(backend.seen.peers) == 1
    finally:
        await backend.stop()


# TLS


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder: Path = tmp_path_factory.mktemp("pki")
    ca, other = make_ca(folder), make_ca(folder / "other", "other CA")
    return {
        "ca": ca,
        "other": other,
        "backend": issue_cert(ca, folder, "backend.internal", dns=("backend.internal",)),
        "client": issue_cert(ca, folder, "edge-gateway", client=True, server=False),
    }


@pytest.fixture
async def tls_backend(pki: dict[str, Any]) -> AsyncIterator[EchoBackend]:
    backend = pki["backend"]
    credentials = grpc.ssl_server_credentials(
        [(backend.key_pem, backend.cert_pem)], root_certificates=pki["ca"].cert_pem, require_client_auth=True
    )
    running = await start_echo(credentials=credentials)
    yield running
    await running.stop()


@pytest.mark.parametrize(
    ("ca", "client_cert", "works"),
    [("ca", True, True), ("other", True, False), ("ca", False, False)],
    ids=["mutual-tls", "wrong-ca", "no-client-cert"],
)
async def test_grpcs_with_mutual_tls(
    make_upstream: MakeUpstream,
    tls_backend: EchoBackend,
    pki: dict[str, Any],
    ca: str,
    client_cert: bool,
    works: bool,
) -> None:
    tls: dict[str, Any] = {"ca": str(pki[ca].cert_path), "server_name": "backend.internal"}
    if client_cert:
        tls |= {"cert": str(pki["client"].cert_path), "key": str(pki["client"].key_path)}
    upstream = make_upstream(f"grpcs://127.0.0.1:{tls_backend.port}", tls=tls)
    if works:
        reply = await send(upstream, grpc_call("Unary", b"secret"))
        assert (reply.status, reply.body) == (Status.OK, b"secret")
        assert tls_backend.seen.metadata
    else:
        with pytest.raises(UpstreamUnavailable) as caught:
            await send(upstream, grpc_call("Unary", b"secret"))
        assert caught.value.status is Status.UNAVAILABLE
        assert tls_backend.seen.metadata == []


# answers only a scripted HTTP/2 server gives


def answer_with(
    headers: list[tuple[str, str]], data: bytes = b"", trailers: list[tuple[str, str]] | None = None
) -> Script:
    def script(peer: ServerPeer, stream_id: int, number: int) -> None:
        peer.conn.send_headers(stream_id, headers, end_stream=not data and trailers is None)
        if data:
            peer.conn.send_data(stream_id, data, end_stream=trailers is None)
        if trailers is not None:
            peer.conn.send_headers(stream_id, trailers, end_stream=True)

    return script


@pytest.mark.parametrize(
    ("script", "status"),
    [
        (answer_with([(":status", "404"), ("content-type", "text/html")], b"<h1>no</h1>"), Status.UNIMPLEMENTED),
        (answer_with([(":status", "503"), ("content-type", "text/plain")], b"busy"), Status.UNAVAILABLE),
        (answer_with([(":status", "401")]), Status.UNAUTHENTICATED),
        (answer_with(GRPC_OK, grpc_message(b"x"), [("x-no-status", "1")]), Status.UNKNOWN),
        (answer_with(GRPC_OK, grpc_message(b"x")), Status.UNKNOWN),
        (answer_with([*GRPC_OK, ("grpc-status", "7"), ("grpc-message", "no%20way")]), Status.PERMISSION_DENIED),
    ],
    ids=["404-html", "503", "401-empty", "trailers-without-status", "no-trailers", "trailers-only"],
)
async def test_answers_that_are_not_plain_grpc(
    make_upstream: MakeUpstream, scripted: Any, script: Script, status: Status
) -> None:
    _, endpoint = await scripted(script)
    reply = await send(make_upstream(endpoint), grpc_call("Unary", b"x"))
    assert reply.status is status
    if status is Status.PERMISSION_DENIED:
        assert reply.message == "no way"


def refuse_first(how: str) -> Script:
    def script(peer: ServerPeer, stream_id: int, number: int) -> None:
        if number > 0:
            peer.answer(stream_id, b"second try")
        elif how == "rst":
            peer.conn.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
        else:
            peer.conn.close_connection(last_stream_id=0)

    return script


@pytest.mark.parametrize("how", ["rst", "goaway"])
async def test_a_stream_the_server_refused_is_retried(make_upstream: MakeUpstream, scripted: Any, how: str) -> None:
    if make_upstream.kind == "grpc.aio" and how == "rst":  # type: ignore[attr-defined]
        pytest.xfail("grpc-core gives up on a REFUSED_STREAM: UNAVAILABLE")
    server, endpoint = await scripted(refuse_first(how))
    reply = await send(make_upstream(endpoint), grpc_call("Unary", b"x"))
    assert (reply.status, reply.body) == (Status.OK, b"second try")
    assert server.count == 2


async def test_a_server_that_refuses_every_stream_gets_a_bounded_number_of_tries(
    make_h2: MakeUpstream, scripted: Any
) -> None:
    def refuse(peer: ServerPeer, stream_id: int, number: int) -> None:
        peer.conn.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)

    server, endpoint = await scripted(refuse)
    reply = await send(make_h2(endpoint), grpc_call("Unary", b"x"))
    assert reply.status is Status.UNAVAILABLE and "reset the stream" in reply.message
    assert server.count == REFUSED_RETRIES + 1


async def test_streams_in_flight_finish_after_a_graceful_goaway(make_h2: MakeUpstream, scripted: Any) -> None:
    async def later(peer: ServerPeer, stream_id: int) -> None:
        await asyncio.sleep(0.1)
        peer.answer(stream_id, b"finished after goaway")

    tasks: list[asyncio.Task[None]] = []

    def script(peer: ServerPeer, stream_id: int, number: int) -> None:
        if number == 0:
            assert peer.transport is not None
            peer.transport.write(GoAwayFrame(0, last_stream_id=stream_id).serialize())
            tasks.append(asyncio.create_task(later(peer, stream_id)))
        else:
            peer.answer(stream_id, b"new connection")

    server, endpoint = await scripted(script)
    upstream = make_h2(endpoint)
    reply = await send(upstream, grpc_call("Unary", b"x"))
    assert (reply.status, reply.body) == (Status.OK, b"finished after goaway")
    reply = await send(upstream, grpc_call("Unary", b"y"))
    assert (reply.status, reply.body) == (Status.OK, b"new connection")
    assert len(server.peers) == 2


async def test_a_connection_lost_mid_call_is_unavailable(make_upstream: MakeUpstream, scripted: Any) -> None:
    def script(peer: ServerPeer, stream_id: int, number: int) -> None:
        assert peer.transport is not None
        peer.conn.send_headers(stream_id, GRPC_OK)
        peer.flush()
        peer.transport.abort()

    _, endpoint = await scripted(script)
    reply = await send(make_upstream(endpoint), grpc_call("Unary", b"x"))
    assert (reply.status, reply.http_status) == (Status.UNAVAILABLE, 503)


async def test_request_headers(make_h2: MakeUpstream, scripted: Any) -> None:
    server, endpoint = await scripted(lambda peer, stream_id, number: peer.answer(stream_id, b"ok"))
    call = grpc_call("Unary", b"x", metadata=[("x-blob-bin", b"\xff\x00"), ("te", "gzip")], deadline=3)
    call.upstream_path = "/other.Service/Method"
    await send(make_h2(endpoint), call)

    headers = server.requests[0]
    assert headers[":path"] == "/other.Service/Method"
    assert headers[":authority"] == endpoint.removeprefix("grpc://")
    assert (headers[":method"], headers[":scheme"], headers["te"]) == ("POST", "http", "trailers")
    assert headers["content-type"] == "application/grpc"
    assert headers["user-agent"].startswith("edge/")
    assert headers["x-blob-bin"] == "/wA"
    timeout = headers["grpc-timeout"]
    assert timeout.endswith("u") and 2.5e6 < int(timeout[:-1]) <= 3e6


async def test_a_connection_that_does_not_answer_pings_is_dropped(make_h2: MakeUpstream, scripted: Any) -> None:
    _, endpoint = await scripted(lambda peer, stream_id, number: None, acks_pings=False)
    upstream = make_h2(endpoint, grpc_keepalive={"time": 0.2, "timeout": 0.2})
    started = time.monotonic()
    reply = await send(upstream, grpc_call("Unary", b"x"))
    assert reply.status is Status.UNAVAILABLE
    assert time.monotonic() - started < 2


async def test_aclose_ends_calls_in_flight_as_unavailable(make_h2: MakeUpstream, echo: EchoBackend) -> None:
    upstream = make_h2(url(echo))
    task = asyncio.create_task(upstream.send(grpc_call("Sleep", metadata=[("x-sleep", "5")])))
    async with asyncio.timeout(WAIT):
        await echo.seen.called.wait()
    await upstream.aclose()
    async with asyncio.timeout(WAIT):
        reply = await task
    assert reply.status is Status.UNAVAILABLE
