"""The policy stage through the HTTP door: a real gateway from YAML, real backends, real policy engines."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from policy_client.engines.local import LocalEngine
from policy_client.server import PolicyServer, ServerTls
from tests.certs import issue_cert, make_ca
from tests.conftest import GatewayFiles
from tests.policy.conftest import ROUTES, RULES, put_principal_stage_before_policy
from tests.policy_client.polling import eventually


async def get(url: str, **headers: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        return response.status, await response.json(), {k.lower(): v for k, v in response.headers.items()}


async def audit(edge: GatewayFiles, count: int) -> list[dict[str, Any]]:
    """The audit records, once `count` have been written (the writer is asynchronous)."""
    return await eventually(lambda: asyncio.to_thread(edge.audit_records), lambda records: len(records) >= count)


def policy_of(record: dict[str, Any]) -> dict[str, Any]:
    return dict(record["decisions"]["policy"])


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_without_a_policy_section_every_call_goes_through(edge: GatewayFiles, echo: str) -> None:
    gateway = await edge.start({"routes": ROUTES}, upstreams={"echo": {"endpoints": [echo]}})
    assert gateway.policy is None
    status, _, _ = await get(f"{edge.url}/secret/x")
    assert status == 200
    assert "policy" not in (await audit(edge, 1))[0].get("decisions", {})


async def test_allow_and_deny_with_local_rules(edge: GatewayFiles, echo: str, rules_path: Path) -> None:
    await edge.start({"routes": ROUTES}, upstreams={"echo": {"endpoints": [echo]}}, policy={"rules": "rules.yaml"})
    status, body, _ = await get(f"{edge.url}/v1/ballots/7")
    assert status == 200 and body["path"] == "/v1/ballots/7"
    status, body, headers = await get(f"{edge.url}/secret/plans")
    assert status == 403
    assert body["error"]["code"] == 403 and body["error"]["status"] == "PERMISSION_DENIED"
    assert body["error"]["message"] == "no rule allows GET secret on /secret/plans"
    assert body["error"]["details"][0]["reason"] == "POLICY_DENIED"
    assert headers["x-request-id"]


async def test_audit_records_decision_reason_revision_and_cache(
    edge: GatewayFiles, echo: str, rules_path: Path
) -> None:
    await edge.start({"routes": ROUTES}, upstreams={"echo": {"endpoints": [echo]}}, policy={"rules": "rules.yaml"})
    for path in ("/v1/ballots/1", "/v1/ballots/1", "/secret/x"):
        await get(edge.url + path)
    first, second, denied = (policy_of(r) for r in await audit(edge, 3))
    revision = LocalEngine(rules_path).revision
    assert first == {
        "decision": "allow",
        "reason": "allowed by rule public-ballots",
        "revision": revision,
        "cache": "miss",
        "mode": "live",
        "action": "GET ballots",
        "resource": "/v1/ballots/1",
    }
    assert second["cache"] == "hit" and second["mode"] == "cache" and second["decision"] == "allow"
    assert denied["decision"] == "deny" and denied["reason"].startswith("no rule allows")


async def test_principal_roles_obligations_and_a_deny_that_overrides(
    edge: GatewayFiles, echo: str, rules_path: Path
) -> None:
    """The principal comes from a stand-in stage placed before policy (identity has its own tests)."""
    gateway = await edge.start(
        {"routes": ROUTES}, upstreams={"echo": {"endpoints": [echo]}}, policy={"rules": "rules.yaml"}
    )
    put_principal_stage_before_policy(gateway)
    refill = f"{edge.url}/v1/prescriptions/refill"
    status, body, _ = await get(refill, **{"x-test-principal": "ann;pharmacist", "x-gov-rule": "forged"})
    assert status == 200
    assert body["headers"]["x-gov-rule"] == "refill"  # the obligation, replacing what the client sent
    status, body, _ = await get(refill, **{"x-test-principal": "pat;patient"})
    assert status == 403 and "hms.pharmacy.v1.Pharmacy/Refill" in body["error"]["message"]
    status, body, _ = await get(refill, **{"x-test-principal": "mal;pharmacist,suspended"})
    assert status == 403 and body["error"]["message"] == "account suspended by governance rule 7"
    status, _, _ = await get(refill)
    assert status == 403  # anonymous


@pytest.mark.parametrize(
    ("section", "route"), [({"deny_message": "not allowed"}, None), ({}, {"deny_message": "not allowed"})]
)
async def test_deny_text_can_hide_the_reason(
    edge: GatewayFiles, echo: str, rules_path: Path, section: dict[str, Any], route: dict[str, Any] | None
) -> None:
    routes = [{**r, "policy": route} if r["name"] == "secret" and route else r for r in ROUTES]
    await edge.start(
        {"routes": routes}, upstreams={"echo": {"endpoints": [echo]}}, policy={"rules": "rules.yaml", **section}
    )
    status, body, _ = await get(f"{edge.url}/secret/plans")
    assert status == 403 and body["error"]["message"] == "not allowed"
    assert policy_of((await audit(edge, 1))[0])["reason"] == "no rule allows GET secret on /secret/plans"


async def test_a_skipped_route_is_not_checked(edge: GatewayFiles, echo: str, rules_path: Path) -> None:
    await edge.start({"routes": ROUTES}, upstreams={"echo": {"endpoints": [echo]}}, policy={"rules": "rules.yaml"})
    status, _, _ = await get(f"{edge.url}/health")
    assert status == 200
    assert policy_of((await audit(edge, 1))[0]) == {"mode": "skip"}


async def test_a_rules_change_is_in_force_without_restart(edge: GatewayFiles, echo: str, rules_path: Path) -> None:
    await edge.start(
        {"routes": ROUTES},
        upstreams={"echo": {"endpoints": [echo]}},
        policy={"rules": "rules.yaml", "watch_interval": "20ms"},
    )
    assert (await get(f"{edge.url}/secret/x"))[0] == 403
    await asyncio.to_thread(
        rules_path.write_text, RULES + "  - {name: open-secret, effect: allow, actions: ['GET secret']}\n"
    )
    await eventually(lambda: get(f"{edge.url}/secret/x"), lambda answer: answer[0] == 200)
    records = await eventually(  # the allowed call's record may land after the denied ones polled before it
        lambda: asyncio.to_thread(edge.audit_records),
        lambda records: any(policy_of(r)["decision"] == "allow" for r in records),
    )
    allowed = next(r for r in records if policy_of(r)["decision"] == "allow")
    assert policy_of(records[0])["decision"] == "deny"
    assert policy_of(records[0])["revision"] != policy_of(allowed)["revision"]


@pytest.fixture
async def black_hole() -> AsyncIterator[int]:
    """A port that accepts connections and never answers: a hung policy service."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize(
    ("service", "reason"), [("refusing", "UNAVAILABLE"), ("hung", "no policy decision within 200 ms")]
)
async def test_policy_service_down_fails_closed_within_the_timeout(
    edge: GatewayFiles, echo: str, black_hole: int, service: str, reason: str
) -> None:
    port = closed_port() if service == "refusing" else black_hole
    policy = {"engine": "grpc", "target": f"127.0.0.1:{port}", "plaintext": True, "timeout": "200ms"}
    await edge.start({"routes": ROUTES}, upstreams={"echo": {"endpoints": [echo]}}, policy=policy)
    started = time.monotonic()
    status, body, _ = await get(f"{edge.url}/v1/ballots/1")
    assert time.monotonic() - started < 0.6
    assert status == 503 and body["error"]["status"] == "UNAVAILABLE"
    assert body["error"]["message"].startswith("the policy service could not decide")
    assert reason not in body["error"]["message"]  # internals stay in the audit record
    record = policy_of((await audit(edge, 1))[0])
    assert record["decision"] == "deny" and record["mode"] == "fail-closed" and reason in record["reason"]


async def test_policy_service_down_fails_open_where_configured(edge: GatewayFiles, echo: str) -> None:
    policy = {"engine": "grpc", "target": f"127.0.0.1:{closed_port()}", "plaintext": True, "timeout": "200ms"}
    routes = [{**r, "policy": {"on_error": "allow"}} if r["name"] == "ballots" else r for r in ROUTES]
    await edge.start({"routes": routes}, upstreams={"echo": {"endpoints": [echo]}}, policy=policy)
    assert (await get(f"{edge.url}/v1/ballots/1"))[0] == 200
    assert (await get(f"{edge.url}/secret/x"))[0] == 503
    opened, closed = (policy_of(r) for r in await audit(edge, 2))
    assert opened["mode"] == "fail-open" and opened["decision"] == "allow"
    assert closed["mode"] == "fail-closed"


async def test_remote_governance_service_over_mutual_tls(
    edge: GatewayFiles, echo: str, rules_path: Path, tmp_path: Path
) -> None:
    ca = make_ca(tmp_path / "pki")
    server_cert = issue_cert(ca, tmp_path / "pki", "policy.test", dns=("policy.test",))
    client_cert = issue_cert(ca, tmp_path / "pki", "edge-gateway", client=True, server=False)
    service = PolicyServer(
        LocalEngine(rules_path), tls=ServerTls(server_cert.cert_path, server_cert.key_path, ca.cert_path)
    )
    await service.start()
    try:
        policy = {
            "engine": "grpc",
            "target": f"127.0.0.1:{service.port}",
            "tls": {
                "ca": str(ca.cert_path),
                "cert": str(client_cert.cert_path),
                "key": str(client_cert.key_path),
                "server_name": "policy.test",
            },
        }
        gateway = await edge.start({"routes": ROUTES}, upstreams={"echo": {"endpoints": [echo]}}, policy=policy)
        put_principal_stage_before_policy(gateway)
        assert (await get(f"{edge.url}/v1/ballots/1"))[0] == 200
        status, body, _ = await get(f"{edge.url}/v1/prescriptions/refill", **{"x-test-principal": "ann;pharmacist"})
        assert status == 200 and body["headers"]["x-gov-rule"] == "refill"
        assert (await get(f"{edge.url}/secret/x"))[0] == 403
        assert service.checks >= 3
        record = policy_of((await audit(edge, 3))[0])
        assert record["revision"] == service.engine.revision
    finally:
        await edge.stop()
        await service.aclose(grace=0)
