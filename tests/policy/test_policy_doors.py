"""The same policy answer for the same operation through the HTTP door and the gRPC door.

A real gateway with both listeners, real identity (JWTs from an IdP stand-in,
verified against its JWKS), local rules, an HTTP backend for the REST route
and a raw-bytes gRPC backend for the native route. The REST route names the
operation `hms.pharmacy.v1.Pharmacy/Refill`; the gRPC route is that method.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest
from grpc import aio

from edge.server import Gateway
from tests.conftest import GatewayFiles, StartBackend
from tests.identity.idp import AUDIENCE, IdP
from tests.policy.conftest import RULES
from tests.policy_client.polling import eventually

REFILL = "/hms.pharmacy.v1.Pharmacy/Refill"


class PharmacyBackend:
    """A native gRPC backend for `Pharmacy/Refill` that answers raw bytes and keeps the metadata it saw."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.server = aio.server()

        async def refill(request: bytes, context: aio.ServicerContext) -> bytes:
            self.seen.append(dict(context.invocation_metadata()))
            return b"\x0a\x06QUEUED"

        handler = grpc.method_handlers_generic_handler(
            "hms.pharmacy.v1.Pharmacy", {"Refill": grpc.unary_unary_rpc_method_handler(refill)}
        )
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")


@pytest.fixture
async def pharmacy() -> AsyncIterator[PharmacyBackend]:
    backend = PharmacyBackend()
    await backend.server.start()
    yield backend
    await backend.server.stop(None)


@pytest.fixture
async def idp(start_backend: StartBackend) -> IdP:
    provider = IdP()
    provider.add_key("k1")
    provider.issuer = await start_backend(provider.app())
    return provider


async def start(edge: GatewayFiles, idp: IdP, echo: str, pharmacy: PharmacyBackend) -> Gateway:
    (edge.folder / "rules.yaml").write_text(RULES)
    routes = [
        {
            "name": "refill-rest",
            "match": {"path": "/v1/prescriptions/refill"},
            "operation": REFILL[1:],
            "upstream": echo,
        },
        {"name": "refill-grpc", "match": {"grpc": REFILL}, "upstream": f"grpc://127.0.0.1:{pharmacy.port}"},
    ]
    identity = {
        "providers": {
            "dev": {
                "type": "jwt",
                "issuer": idp.issuer,
                "audience": AUDIENCE,
                "keys": {"jwks_url": f"{idp.issuer}/jwks"},
                "roles": {"claim": "realm_access.roles"},
            }
        }
    }
    return await edge.start(
        {"routes": routes},
        listeners={"grpc": {"host": "127.0.0.1", "port": 0}},
        identity=identity,
        policy={"rules": "rules.yaml"},
    )


async def over_http(edge: GatewayFiles, token: str) -> tuple[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{edge.url}/v1/prescriptions/refill", headers=headers) as response,
    ):
        body = await response.json()
        if response.status == 200:
            return "OK", ""
        return body["error"]["status"], body["error"]["message"]


async def over_grpc(gateway: Gateway, token: str) -> tuple[str, str]:
    async with aio.insecure_channel(f"127.0.0.1:{gateway.ports['grpc']}") as channel:
        refill = channel.unary_unary(REFILL)
        try:
            await refill(b"\x0a\x05RX-42", metadata=(("authorization", f"Bearer {token}"),), timeout=5)
        except aio.AioRpcError as error:
            return error.code().name, error.details() or ""
    return "OK", ""


@pytest.mark.parametrize(
    ("roles", "status", "message"),
    [
        (["pharmacist"], "OK", ""),
        (["patient"], "PERMISSION_DENIED", "no rule allows hms.pharmacy.v1.Pharmacy/Refill on "),
        (["pharmacist", "suspended"], "PERMISSION_DENIED", "account suspended by governance rule 7"),
    ],
)
async def test_same_answer_through_both_doors(
    edge: GatewayFiles, idp: IdP, echo: str, pharmacy: PharmacyBackend, roles: list[str], status: str, message: str
) -> None:
    gateway = await start(edge, idp, echo, pharmacy)
    token = idp.token(realm_access={"roles": roles})
    http_status, http_message = await over_http(edge, token)
    grpc_status, grpc_message = await over_grpc(gateway, token)
    assert http_status == grpc_status == status
    assert http_message.startswith(message) and grpc_message.startswith(message)
    records = await eventually(lambda: asyncio.to_thread(edge.audit_records), lambda found: len(found) >= 2)
    by_door = {r["ingress"]: r["decisions"]["policy"] for r in records}
    http, native = by_door["http"], by_door["grpc"]
    for field in ("decision", "revision", "action", "mode"):
        assert http[field] == native[field], field
    assert http["reason"].replace(http["resource"], "") == native["reason"].replace(native["resource"], "")
    assert by_door["grpc"]["action"] == "hms.pharmacy.v1.Pharmacy/Refill"
    assert {r["principal"]["subject"] for r in records} == {"veteran-42"}


async def test_obligations_reach_the_grpc_backend_as_metadata(
    edge: GatewayFiles, idp: IdP, echo: str, pharmacy: PharmacyBackend
) -> None:
    gateway = await start(edge, idp, echo, pharmacy)
    assert await over_grpc(gateway, idp.token(realm_access={"roles": ["pharmacist"]})) == ("OK", "")
    assert pharmacy.seen[0]["x-gov-rule"] == "refill"
