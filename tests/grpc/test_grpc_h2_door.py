"""What only the h2 engine of the gRPC door does: the wire seen by a raw HTTP/2 client, and TLS grpcio cannot offer.

The door tests in test_grpc_door.py and test_interop.py run on both engines
through grpc clients; these speak HTTP/2 with h2 directly, to see the frames a
malformed or unusual caller gets back.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import ssl
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from door_harness import SERVICE, WAIT, MakeGateway, channel_to, grpc_route, raw_client
from door_harness import framed as _framed
from door_harness import grpc_request as _request
from interop_server import Backend

from edge.call import Call


@pytest.fixture
def grpc_engine() -> str:
    return "h2"


EMPTY_CALL = f"/{SERVICE}/EmptyCall"
UNARY_CALL = f"/{SERVICE}/UnaryCall"


async def test_a_unary_call_over_raw_http2(backend: Backend, make_gateway: MakeGateway) -> None:
    async with make_gateway([grpc_route(backend.url)]) as gateway, raw_client(gateway) as client:
        stream = client.send(_request(EMPTY_CALL, **{"x-trace-me": "yes"}), _framed(b""))
        headers, data, trailers = await client.answer(stream)
    assert headers[":status"] == "200" and headers["content-type"] == "application/grpc"
    assert headers["x-request-id"]
    assert data == _framed(b"")
    assert trailers["grpc-status"] == "0"


@pytest.mark.parametrize(
    ("extra", "status"),
    [({"method": "GET"}, "405"), ({"content_type": "application/json"}, "415")],
    ids=["not-post", "not-grpc"],
)
async def test_a_request_that_is_not_grpc_gets_an_http_status(
    extra: dict[str, str], status: str, backend: Backend, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    audit = {"sinks": [{"type": "file", "path": str(tmp_path / "audit.jsonl")}]}
    async with make_gateway([grpc_route(backend.url)], audit=audit) as gateway, raw_client(gateway) as client:
        stream = client.send(_request(EMPTY_CALL, **extra), _framed(b""))
        headers, _, _ = await client.answer(stream)
    assert headers[":status"] == status
    assert headers["grpc-status"] != "0" and headers["grpc-message"]
    assert backend.servicer.records.calls == []
    (record,) = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert (record["status"], record["method"], record["reason"]) == (
        int(status),
        extra.get("method", "POST"),
        headers["grpc-message"],
    )
    assert record["path"] == EMPTY_CALL and record["trace_id"]


async def test_gzip_messages_from_the_caller_are_inflated(
    backend: Backend, make_gateway: MakeGateway, pb: SimpleNamespace
) -> None:
    request = pb.messages.SimpleRequest(response_size=3, payload=pb.messages.Payload(body=b"x" * 5000))
    packed = gzip.compress(request.SerializeToString())
    async with make_gateway([grpc_route(backend.url)]) as gateway, raw_client(gateway) as client:
        stream = client.send(_request(UNARY_CALL, **{"grpc-encoding": "gzip"}), _framed(packed, compressed=True))
        _, data, trailers = await client.answer(stream)
    assert trailers["grpc-status"] == "0"
    assert pb.messages.SimpleResponse.FromString(data[5:]).payload.body == bytes(3)


@pytest.mark.parametrize(
    ("extra", "body", "status"),
    [
        ({"grpc-encoding": "snappy"}, _framed(b""), "12"),
        ({}, _framed(b"", compressed=True), "13"),
        ({}, b"\x00\x00\x00\x00\x09abc", "13"),
    ],
    ids=["unknown-encoding", "compressed-without-encoding", "cut-message"],
)
async def test_a_malformed_call_ends_with_a_status(
    extra: dict[str, str], body: bytes, status: str, backend: Backend, make_gateway: MakeGateway
) -> None:
    async with make_gateway([grpc_route(backend.url)]) as gateway, raw_client(gateway) as client:
        stream = client.send(_request(EMPTY_CALL, **extra), body)
        headers, _, trailers = await client.answer(stream)
        assert {**headers, **trailers}["grpc-status"] == status
        ok = client.send(_request(EMPTY_CALL), _framed(b""))
        assert (await client.answer(ok))[2]["grpc-status"] == "0"  # the connection still serves


async def test_a_message_above_the_limit_is_refused_from_its_prefix(
    backend: Backend, make_gateway: MakeGateway
) -> None:
    limits = {"max_grpc_message": "1KiB"}
    async with make_gateway([grpc_route(backend.url)], limits=limits) as gateway, raw_client(gateway) as client:
        stream = client.send(_request(UNARY_CALL), b"\x00" + (1 << 20).to_bytes(4, "big") + b"x" * 100, end=False)
        headers, _, trailers = await client.answer(stream)
    assert {**headers, **trailers}["grpc-status"] == "8"


async def test_the_callers_deadline_ends_a_call_that_waits_on_the_caller(
    backend: Backend, make_gateway: MakeGateway
) -> None:
    async with make_gateway([grpc_route(backend.url)], protos=False) as gateway, raw_client(gateway) as client:
        stream = client.send(_request(f"/{SERVICE}/FullDuplexCall", **{"grpc-timeout": "200m"}), end=False)
        headers, _, trailers = await client.answer(stream)
    assert {**headers, **trailers}["grpc-status"] == "4"


async def test_a_caller_reset_cancels_the_upstream_call(
    backend: Backend, make_gateway: MakeGateway, pb: SimpleNamespace
) -> None:
    seen: list[Call] = []

    async def observe(call: Call) -> None:
        seen.append(call)

    async with make_gateway([grpc_route(backend.url)], audit={"sinks": []}) as gateway:
        gateway.pipeline.stages = (observe,)
        async with raw_client(gateway) as client:
            stream = client.send(_request(f"/{SERVICE}/FullDuplexCall"), end=False)
            await asyncio.sleep(0.2)
            client.conn.reset_stream(stream)
            client.writer.write(client.conn.data_to_send())
            for _ in range(100):
                if backend.servicer.records.cancelled:
                    break
                await asyncio.sleep(0.02)
    assert seen and backend.servicer.records.cancelled


def _server_tls(pki: SimpleNamespace, **extra: Any) -> dict[str, Any]:
    return {"tls": {"cert": str(pki.edge.cert_path), "key": str(pki.edge.key_path), **extra}}


@pytest.mark.parametrize("with_cert", [True, False], ids=["certificate", "none"])
async def test_an_optional_client_certificate(
    with_cert: bool, pki: SimpleNamespace, make_gateway: MakeGateway, backend: Backend, pb: SimpleNamespace
) -> None:
    seen: list[Call] = []

    async def observe(call: Call) -> None:
        seen.append(call)

    listener = _server_tls(pki, client_ca=str(pki.ca.cert_path), require_client_cert=False)
    agent = pki.agent
    credentials = grpc.ssl_channel_credentials(
        pki.ca.cert_pem, agent.key_pem if with_cert else None, agent.cert_pem if with_cert else None
    )
    override = {"grpc.ssl_target_name_override": "edge.test"}
    async with make_gateway([grpc_route(backend.url)], listener=listener) as gateway:
        gateway.pipeline.stages = (observe,)
        async with channel_to(gateway, credentials, **override) as channel:
            call = pb.test_grpc.TestServiceStub(channel).EmptyCall(pb.empty.Empty(), timeout=WAIT)
            assert await call.code() == grpc.StatusCode.OK
    assert seen[0].peer.certificate == (agent.der if with_cert else None)


async def test_a_minimum_tls_version(pki: SimpleNamespace, make_gateway: MakeGateway, backend: Backend) -> None:
    listener = _server_tls(pki, min_version="1.3")
    async with make_gateway([grpc_route(backend.url)], listener=listener) as gateway:
        old = ssl.create_default_context(cafile=str(pki.ca.cert_path))
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        old.set_alpn_protocols(["h2"])
        with pytest.raises((ssl.SSLError, ConnectionError)):  # the TLS 1.2 handshake is refused
            await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", gateway.ports["grpc"], ssl=old, server_hostname="edge.test"), WAIT
            )
        new = ssl.create_default_context(cafile=str(pki.ca.cert_path))
        new.set_alpn_protocols(["h2"])
        _, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", gateway.ports["grpc"], ssl=new, server_hostname="edge.test"), WAIT
        )
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        writer.close()


async def test_accepted_connections_have_tcp_keepalive(backend: Backend, make_gateway: MakeGateway) -> None:
    """A caller that vanishes with calls open is found by the kernel's keepalive probes (timer 2 in /proc/net/tcp)."""
    async with make_gateway([grpc_route(backend.url)]) as gateway, raw_client(gateway) as client:
        await client.answer(client.send(_request(EMPTY_CALL), _framed(b"")))
        port = f"{gateway.ports['grpc']:04X}"
        table = await asyncio.to_thread(Path("/proc/net/tcp").read_text)
        rows = [line.split() for line in table.splitlines()[1:]]
        accepted = [row for row in rows if row[1].endswith(f":{port}") and row[3] == "01"]
    assert accepted, "the accepted connection is not in /proc/net/tcp"
    assert all(row[5].split(":")[0] == "02" for row in accepted)


async def test_a_unary_call_without_its_message_is_internal(backend: Backend, make_gateway: MakeGateway) -> None:
    async with make_gateway([grpc_route(backend.url)]) as gateway, raw_client(gateway) as client:
        headers, _, trailers = await client.answer(client.send(_request(EMPTY_CALL)))
    assert {**headers, **trailers}["grpc-status"] == "13"
    assert backend.servicer.records.calls == []


async def test_calls_the_door_ends_itself_are_audited_with_what_the_caller_was_told(
    backend: Backend, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    """Calls refused for their headers, their messages (none, two, too large, framed wrongly): all audited."""
    sections: dict[str, Any] = {
        "limits": {"max_grpc_message": "1KiB", "max_headers": 20},
        "audit": {"sinks": [{"type": "file", "path": str(tmp_path / "audit.jsonl")}]},
    }
    duplex = f"/{SERVICE}/FullDuplexCall"
    async with make_gateway([grpc_route(backend.url)], **sections) as gateway, raw_client(gateway) as client:
        told = []
        for request, body, end in [
            (_request(EMPTY_CALL, **{"grpc-encoding": "snappy"}), _framed(b""), True),
            (_request(EMPTY_CALL, **{f"x-h{i}": "v" for i in range(30)}), _framed(b""), True),
            (_request(EMPTY_CALL), None, True),
            (_request(EMPTY_CALL), _framed(b"") * 2, True),
            (_request(UNARY_CALL), b"\x00" + (1 << 20).to_bytes(4, "big") + b"x" * 100, False),
            (_request(duplex), _framed(b"", compressed=True), False),  # compressed without grpc-encoding
        ]:
            headers, _, trailers = await client.answer(client.send(request, body, end))
            told.append({**headers, **trailers}["grpc-status"])
        assert told == ["12", "8", "13", "13", "8", "13"]
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(r["path"].rsplit("/", 1)[1], r["grpc_status"]) for r in records] == [
        ("EmptyCall", "UNIMPLEMENTED"),
        ("EmptyCall", "RESOURCE_EXHAUSTED"),
        ("EmptyCall", "INTERNAL"),
        ("EmptyCall", "INTERNAL"),
        ("UnaryCall", "RESOURCE_EXHAUSTED"),
        ("FullDuplexCall", "INTERNAL"),
    ]
    assert "snappy" in records[0]["reason"] and "more than one message" in records[3]["reason"]
    assert "grpc-encoding" in records[5]["reason"]
