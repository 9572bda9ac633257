"""Client certificates (CAC/PIV style) and TLS on the HTTP listener: identity, roles, binding, reload."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from cryptography import x509

from edge.certs import Issued, issue, make_ca
from edge.pipeline.identity.certs import thumbprint
from tests.conftest import GatewayFiles
from tests.identity.conftest import headers_seen, identity
from tests.identity.idp import IdP

ROUTES = {
    "routes": [
        {"name": "cac", "match": {"prefix": "/cac"}, "upstream": "svc", "auth": {"providers": ["cac"]}},
        {"name": "any", "match": {"prefix": "/"}, "upstream": "svc"},
    ]
}


@pytest.fixture
def pki(tmp_path: Path) -> SimpleNamespace:
    ca, stranger_ca = make_ca(), make_ca("stranger CA")
    folder = tmp_path / "pki"
    folder.mkdir()
    ca.write(folder / "ca.crt", folder / "ca.key")
    server = issue(ca, [("CN", "localhost")], hosts=["localhost", "127.0.0.1"])
    server.write(folder / "server.crt", folder / "server.key")

    def client(subject: Sequence[tuple[str, str]], email: str, by: Issued = ca) -> Issued:
        return issue(by, subject, emails=[email], client=True)

    return SimpleNamespace(
        folder=folder,
        ca=ca,
        veteran=client([("CN", "Pat Veteran"), ("O", "DoD"), ("OU", "CAC")], "pat@va.gov"),
        contractor=client([("CN", "Sam Vendor"), ("O", "Acme"), ("OU", "CAC")], "sam@acme.example"),
        stranger=client([("CN", "Eve"), ("O", "DoD"), ("OU", "CAC")], "eve@evil.example", stranger_ca),
    )


def tls_section(pki: SimpleNamespace) -> dict[str, Any]:
    folder = pki.folder
    tls = {"cert": str(folder / "server.crt"), "key": str(folder / "server.key"), "client_ca": str(folder / "ca.crt")}
    return {"http": {"host": "127.0.0.1", "port": 0, "tls": tls}}


def client_context(pki: SimpleNamespace, certificate: Issued | None, tmp: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.folder / "ca.crt"))
    if certificate is not None:
        cert, key = tmp / f"{id(certificate)}.crt", tmp / f"{id(certificate)}.key"
        certificate.write(cert, key)
        context.load_cert_chain(cert, key)
    return context


async def start(edge: GatewayFiles, pki: SimpleNamespace, idp: IdP, echo: str) -> str:
    section = identity(idp)
    section["providers"]["cac"] = {
        "type": "client-cert",
        "subject": ["san:email", "dn:CN"],
        "roles": [{"match": "O=DoD, OU=CAC", "roles": ["Veteran"]}, {"match": {"O": "Acme"}, "roles": "Vendor"}],
    }
    await edge.start(ROUTES, upstreams={"svc": {"endpoints": [echo]}}, identity=section, listeners=tls_section(pki))
    assert edge.gateway is not None
    return f"https://127.0.0.1:{edge.gateway.ports['http']}"


async def fetch(url: str, context: ssl.SSLContext, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session, session.get(url, ssl=context, headers=headers) as response:
        return response.status, await response.json()


@pytest.mark.parametrize(
    ("who", "subject", "roles"),
    [("veteran", "pat@va.gov", "Veteran"), ("contractor", "sam@acme.example", "Vendor")],
)
async def test_client_certificate_identity_and_roles(
    edge: GatewayFiles, pki: SimpleNamespace, idp: IdP, echo: str, tmp_path: Path, who: str, subject: str, roles: str
) -> None:
    base = await start(edge, pki, idp, echo)
    certificate = getattr(pki, who)
    status, body = await fetch(base + "/cac/records", client_context(pki, certificate, tmp_path))
    seen = headers_seen(body)
    assert status == 200
    assert (seen["x-edge-subject"], seen["x-edge-roles"], seen["x-edge-auth-method"]) == (
        [subject],
        [roles],
        ["client-cert"],
    )
    await edge.stop()
    record = edge.audit_records()[-1]
    assert record["principal"]["subject"] == subject
    assert record["principal"]["certificate_fingerprint"] == hashlib.sha256(certificate.der).hexdigest()


async def test_route_requiring_a_certificate_refuses_calls_without_one(
    edge: GatewayFiles, pki: SimpleNamespace, idp: IdP, echo: str, tmp_path: Path
) -> None:
    base = await start(edge, pki, idp, echo)
    status, body = await fetch(base + "/cac/records", client_context(pki, None, tmp_path))
    assert status == 401 and body["error"]["message"] == "credentials are required"
    status, _ = await fetch(base + "/cac/records", client_context(pki, None, tmp_path), idp.token())
    assert status == 401  # a token is not what this route accepts


async def test_certificate_from_another_ca_is_refused_at_the_handshake(
    edge: GatewayFiles, pki: SimpleNamespace, idp: IdP, echo: str, tmp_path: Path
) -> None:
    base = await start(edge, pki, idp, echo)
    with pytest.raises((aiohttp.ClientError, ssl.SSLError)):
        await fetch(base + "/cac/records", client_context(pki, pki.stranger, tmp_path))


async def test_token_wins_over_certificate_where_both_are_accepted(
    edge: GatewayFiles, pki: SimpleNamespace, idp: IdP, echo: str, tmp_path: Path
) -> None:
    base = await start(edge, pki, idp, echo)
    context = client_context(pki, pki.veteran, tmp_path)
    status, body = await fetch(base + "/records", context, idp.token())
    assert status == 200 and headers_seen(body)["x-edge-auth-method"] == ["jwt"]
    status, body = await fetch(base + "/records", context)
    assert status == 200 and headers_seen(body)["x-edge-auth-method"] == ["client-cert"]


async def test_certificate_bound_token(
    edge: GatewayFiles, pki: SimpleNamespace, idp: IdP, echo: str, tmp_path: Path
) -> None:
    base = await start(edge, pki, idp, echo)
    token = idp.token(cnf={"x5t#S256": thumbprint(pki.veteran.der)})
    assert (await fetch(base + "/records", client_context(pki, pki.veteran, tmp_path), token))[0] == 200
    for certificate in (None, pki.contractor):  # the token is cached now: binding is checked on every call
        status, body = await fetch(base + "/records", client_context(pki, certificate, tmp_path), token)
        assert status == 401 and "bound to a client certificate" in body["error"]["message"]


async def test_listener_certificate_reloads_when_its_files_change(
    edge: GatewayFiles, pki: SimpleNamespace, idp: IdP, echo: str, tmp_path: Path
) -> None:
    await start(edge, pki, idp, echo)
    assert edge.gateway is not None
    port = edge.gateway.ports["http"]

    async def served_serial() -> int:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context(pki, None, tmp_path))
        der = writer.get_extra_info("ssl_object").getpeercert(True)
        writer.close()
        await writer.wait_closed()
        return x509.load_der_x509_certificate(der).serial_number

    first = await served_serial()
    renewed = issue(pki.ca, [("CN", "localhost")], hosts=["localhost", "127.0.0.1"])
    renewed.write(pki.folder / "server.new.crt", pki.folder / "server.new.key")
    (pki.folder / "server.new.key").replace(pki.folder / "server.key")
    (pki.folder / "server.new.crt").replace(pki.folder / "server.crt")
    for _ in range(100):  # the watcher polls every 50 ms here; 5 s at most
        if (serial := await served_serial()) != first:
            break
        await asyncio.sleep(0.05)
    assert serial == renewed.certificate.serial_number
