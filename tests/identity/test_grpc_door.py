"""Identity through the gRPC door: the same tables as the HTTP door, answered UNAUTHENTICATED.

Uses the gRPC door's own fixtures (interop protos, a grpc.aio backend, a
gateway factory with a gRPC listener) and the IdP stand-in of these tests.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from grpc import aio

from edge.certs import Issued, issue, make_ca
from edge.pipeline.identity.certs import thumbprint
from tests.identity.cases import ATTACKS, CLAIMS, claims_token
from tests.identity.conftest import identity
from tests.identity.idp import IdP

_GRPC_TESTS = str(Path(__file__).resolve().parents[1] / "grpc")
if _GRPC_TESTS not in sys.path:
    sys.path.insert(0, _GRPC_TESTS)  # the gRPC door's test modules import each other by bare name

from door_harness import MakeGateway, channel_to, grpc_route  # noqa: E402
from interop_server import Backend  # noqa: E402

from conftest import backend, descriptor_dir, grpc_engine, make_gateway, pb  # type: ignore[import-not-found]  # noqa: E402, F401 - its fixtures

WAIT = 5.0


async def empty_call(channel: aio.Channel, modules: SimpleNamespace, metadata: tuple[tuple[str, str], ...]) -> Any:
    """An EmptyCall whose outcome the caller reads from the call (code, details), not from an exception."""
    call = modules.test_grpc.TestServiceStub(channel).EmptyCall(modules.empty.Empty(), metadata=metadata, timeout=WAIT)
    with contextlib.suppress(aio.AioRpcError):
        await call
    return call


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def test_valid_token_reaches_the_backend_with_gateway_identity_metadata(
    backend: Backend,  # noqa: F811
    make_gateway: MakeGateway,  # noqa: F811
    pb: SimpleNamespace,  # noqa: F811
    idp: IdP,
) -> None:
    token = idp.token()
    spoofed = (("x-edge-subject", "admin"), ("x-edge-roles", "Admin"), ("x-edge-other", "1"))
    async with (
        make_gateway([grpc_route(backend.url)], identity=identity(idp)) as gateway,
        channel_to(gateway) as channel,
    ):
        call = await empty_call(channel, pb, bearer(token) + spoofed)
        assert await call.code() == grpc.StatusCode.OK
    seen = backend.servicer.records.calls[-1].metadata
    assert (seen["x-edge-subject"], seen["x-edge-roles"], seen["x-edge-auth-method"]) == (
        "veteran-42",
        "Veteran",
        "jwt",
    )
    assert seen["authorization"] == f"Bearer {token}" and "x-edge-other" not in seen


async def test_missing_and_refused_tokens_are_unauthenticated(
    backend: Backend,  # noqa: F811
    make_gateway: MakeGateway,  # noqa: F811
    pb: SimpleNamespace,  # noqa: F811
    idp: IdP,
) -> None:
    section = identity(idp)
    section["providers"]["dev"].update(max_token_size="2KiB", max_age="1h")
    wrongly = []
    async with make_gateway([grpc_route(backend.url)], identity=section) as gateway, channel_to(gateway) as channel:
        call = await empty_call(channel, pb, ())
        assert (await call.code(), await call.details()) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "credentials are required",
        )
        cases = [(name, expected, build(idp)) for name, expected, build in ATTACKS]
        cases += [(name, expected, claims_token(idp, overrides)) for name, expected, overrides in CLAIMS]
        for name, expected, token in cases:
            call = await empty_call(channel, pb, bearer(token))
            code, details = await call.code(), await call.details()
            if code != grpc.StatusCode.UNAUTHENTICATED or expected not in details:
                wrongly.append((name, code, details))
        assert (await (await empty_call(channel, pb, bearer(idp.token()))).code()) == grpc.StatusCode.OK
    assert wrongly == []
    assert len(backend.servicer.records.calls) == 1


@pytest.fixture
def grpc_pki(tmp_path: Path) -> SimpleNamespace:
    ca, stranger_ca = make_ca(), make_ca("stranger CA")
    folder = tmp_path / "grpc-pki"
    folder.mkdir()
    ca.write(folder / "ca.crt", folder / "ca.key")
    issue(ca, [("CN", "localhost")], hosts=["localhost", "127.0.0.1"]).write(
        folder / "server.crt", folder / "server.key"
    )
    subject = [("CN", "Pat Veteran"), ("O", "DoD"), ("OU", "CAC")]
    return SimpleNamespace(
        folder=folder,
        ca=ca,
        veteran=issue(ca, subject, emails=["pat@va.gov"], client=True),
        stranger=issue(stranger_ca, subject, emails=["eve@evil.example"], client=True),
    )


def credentials(pki: SimpleNamespace, client: Issued) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(pki.ca.cert_pem, client.key_pem, client.cert_pem)


def tls_listener(pki: SimpleNamespace) -> dict[str, Any]:
    folder = pki.folder
    tls = {
        "cert": str(folder / "server.crt"),
        "key": str(folder / "server.key"),
        "client_ca": str(folder / "ca.crt"),
        "require_client_cert": True,
    }
    return {"tls": tls}


async def test_client_certificates_on_the_grpc_door(
    backend: Backend,  # noqa: F811
    make_gateway: MakeGateway,  # noqa: F811
    pb: SimpleNamespace,  # noqa: F811
    idp: IdP,
    grpc_pki: SimpleNamespace,
) -> None:
    section = identity(idp)
    section["providers"]["cac"] = {
        "type": "client-cert",
        "subject": ["san:email"],
        "roles": [{"match": "O=DoD, OU=CAC", "roles": ["Veteran"]}],
    }
    routes = [grpc_route(backend.url)]
    async with make_gateway(routes, identity=section, listener=tls_listener(grpc_pki)) as gateway:
        async with channel_to(gateway, credentials(grpc_pki, grpc_pki.veteran)) as channel:
            call = await empty_call(channel, pb, ())
            assert await call.code() == grpc.StatusCode.OK
            seen = backend.servicer.records.calls[-1].metadata
            assert (seen["x-edge-subject"], seen["x-edge-roles"], seen["x-edge-auth-method"]) == (
                "pat@va.gov",
                "Veteran",
                "client-cert",
            )
            bound = idp.token(cnf={"x5t#S256": thumbprint(grpc_pki.veteran.der)})
            assert await (await empty_call(channel, pb, bearer(bound))).code() == grpc.StatusCode.OK
        async with channel_to(gateway, credentials(grpc_pki, grpc_pki.stranger)) as channel:
            call = await empty_call(channel, pb, ())
            assert await call.code() == grpc.StatusCode.UNAVAILABLE  # refused at the handshake
    assert len(backend.servicer.records.calls) == 2
