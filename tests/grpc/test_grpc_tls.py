"""TLS on both sides of the gRPC door: mTLS to backends, and a listener that requires client certificates.

Certificates come from the session's own CA (tests/certs.py); nothing is committed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from door_harness import MakeGateway, channel_to, grpc_route
from interop_server import start_backend
from tests.certs import Issued, issue_cert, make_ca

from edge.call import Call

WAIT = 5.0


def _backend_credentials(pki: SimpleNamespace) -> grpc.ServerCredentials:
    backend = pki.backend
    return grpc.ssl_server_credentials(
        [(backend.key_pem, backend.cert_pem)], root_certificates=pki.ca.cert_pem, require_client_auth=True
    )


def _upstream(port: int, pki: SimpleNamespace, *, client_cert: bool) -> dict[str, Any]:
    tls: dict[str, Any] = {"ca": str(pki.ca.cert_path), "server_name": "backend.internal"}
    if client_cert:
        tls |= {"cert": str(pki.gateway_client.cert_path), "key": str(pki.gateway_client.key_path)}
    return {"pharmacy": {"endpoints": [f"grpcs://127.0.0.1:{port}"], "tls": tls, "connect_timeout": "2s"}}


@pytest.mark.parametrize(
    ("client_cert", "expected"), [(True, grpc.StatusCode.OK), (False, grpc.StatusCode.UNAVAILABLE)]
)
async def test_mutual_tls_to_the_backend(
    client_cert: bool, expected: grpc.StatusCode, pb: SimpleNamespace, pki: SimpleNamespace, make_gateway: MakeGateway
) -> None:
    backend = await start_backend(pb, _backend_credentials(pki))
    try:
        upstreams = _upstream(backend.port, pki, client_cert=client_cert)
        async with (
            make_gateway([grpc_route("pharmacy")], upstreams=upstreams) as gateway,
            channel_to(gateway) as channel,
        ):
            request = pb.messages.SimpleRequest(response_size=1000)
            call = pb.test_grpc.TestServiceStub(channel).UnaryCall(request, timeout=WAIT)
            assert await call.code() == expected
    finally:
        await backend.server.stop(None)
    assert len(backend.servicer.records.calls) == (1 if client_cert else 0)


def _listener(pki: SimpleNamespace) -> dict[str, Any]:
    edge = pki.edge
    return {
        "tls": {
            "cert": str(edge.cert_path),
            "key": str(edge.key_path),
            "client_ca": str(pki.ca.cert_path),
            "require_client_cert": True,
        }
    }


def _agent_credentials(pki: SimpleNamespace, who: str | None) -> grpc.ChannelCredentials:
    if who is None:
        return grpc.ssl_channel_credentials(root_certificates=pki.ca.cert_pem)
    issued = getattr(pki, who)
    return grpc.ssl_channel_credentials(pki.ca.cert_pem, issued.key_pem, issued.cert_pem)


@pytest.mark.parametrize(
    ("who", "expected"),
    [("agent", grpc.StatusCode.OK), (None, grpc.StatusCode.UNAVAILABLE), ("stranger", grpc.StatusCode.UNAVAILABLE)],
    ids=["trusted-client-cert", "no-client-cert", "untrusted-client-cert"],
)
async def test_listener_requires_a_client_certificate(
    who: str | None,
    expected: grpc.StatusCode,
    pb: SimpleNamespace,
    pki: SimpleNamespace,
    make_gateway: MakeGateway,
    backend: Any,
) -> None:
    seen: list[Call] = []

    async def observe(call: Call) -> None:
        seen.append(call)

    async with (
        make_gateway([grpc_route(backend.url)], listener=_listener(pki)) as gateway,
        channel_to(gateway, _agent_credentials(pki, who), **{"grpc.ssl_target_name_override": "edge.test"}) as channel,
    ):
        gateway.pipeline.stages = (observe,)
        call = pb.test_grpc.TestServiceStub(channel).EmptyCall(pb.empty.Empty(), timeout=WAIT)
        assert await call.code() == expected
    if expected == grpc.StatusCode.OK:
        assert seen[0].peer.certificate == pki.agent.der
        assert seen[0].scheme == "https"
    else:
        assert seen == []


def _install(issued: Issued, cert: Path, key: Path) -> None:
    for source, target in ((issued.key_pem, key), (issued.cert_pem, cert)):
        scratch = target.with_suffix(".new")
        scratch.write_bytes(source)
        scratch.replace(target)


async def test_listener_picks_up_a_rotated_certificate(
    pb: SimpleNamespace, pki: SimpleNamespace, make_gateway: MakeGateway, backend: Any, tmp_path: Path
) -> None:
    cert, key = tmp_path / "edge.crt", tmp_path / "edge.key"
    _install(pki.edge, cert, key)
    new_ca = make_ca(tmp_path / "rotated", "rotated CA")
    rotated = issue_cert(new_ca, tmp_path / "rotated", "edge.test", dns=("edge.test",))
    override = {"grpc.ssl_target_name_override": "edge.test"}

    async def code_with(ca_pem: bytes, gateway: Any) -> grpc.StatusCode:
        async with channel_to(gateway, grpc.ssl_channel_credentials(ca_pem), **override) as channel:
            call = pb.test_grpc.TestServiceStub(channel).EmptyCall(pb.empty.Empty(), timeout=WAIT)
            return await call.code()  # type: ignore[no-any-return]

    listener = {"tls": {"cert": str(cert), "key": str(key)}}
    async with make_gateway([grpc_route(backend.url)], listener=listener) as gateway:
        assert await code_with(pki.ca.cert_pem, gateway) == grpc.StatusCode.OK
        _install(rotated, cert, key)
        for _ in range(100):  # grpcio reloads at the next handshake, h2's listener within a watch interval
            if await code_with(new_ca.cert_pem, gateway) == grpc.StatusCode.OK:
                break
            await asyncio.sleep(0.05)
        assert await code_with(new_ca.cert_pem, gateway) == grpc.StatusCode.OK
        assert await code_with(pki.ca.cert_pem, gateway) == grpc.StatusCode.UNAVAILABLE
