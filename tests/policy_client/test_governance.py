"""The governance gRPC engine against a real policy service (`policy_client.server`) over mutual TLS."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from pathlib import Path

import pytest

from policy_client import (
    AddHeader,
    ClientSettings,
    GovernanceService,
    PolicyClient,
    PolicyError,
    PolicyRequest,
    PolicyTimeout,
    Principal,
    Tls,
)
from policy_client.server import PolicyServer
from tests.policy_client.conftest import Pki
from tests.policy_client.polling import eventually

REFILL = "hms.pharmacy.v1.Pharmacy/Refill"
ALICE = PolicyRequest(Principal("alice", ("pharmacist",)), REFILL, "/hms.pharmacy.v1.Pharmacy/Refill")


def settings(target: str, tls: Tls | None, **extra: float) -> ClientSettings:
    poll = extra.pop("revision_poll", 0.0)
    return ClientSettings(GovernanceService(target, tls, revision_poll=poll), **extra)  # type: ignore[arg-type]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_check_over_mutual_tls(mtls_server: PolicyServer, pki: Pki) -> None:
    async with PolicyClient(settings(f"127.0.0.1:{mtls_server.port}", pki.client_tls())) as policy:
        allowed = await policy.check(ALICE)
        assert allowed.allow and allowed.reason == "allowed by rule pharmacists-refill"
        assert allowed.revision == mtls_server.engine.revision
        assert allowed.obligations == (AddHeader("x-gov-rule", "refill"),)
        suspended = PolicyRequest(Principal("mallory", ("pharmacist", "suspended")), REFILL, "/x")
        denied = await policy.check(suspended)
        assert not denied.allow and denied.reason == "account suspended"
        nobody = await policy.check(PolicyRequest(Principal("anonymous"), REFILL, "/x"))
        assert not nobody.allow and nobody.reason.startswith("no rule allows")
    assert mtls_server.checks == 3


async def test_cached_decision_makes_no_call_to_the_service(mtls_server: PolicyServer, pki: Pki) -> None:
    async with PolicyClient(settings(f"127.0.0.1:{mtls_server.port}", pki.client_tls())) as policy:
        await policy.check(ALICE)
        await policy.check(ALICE)  # first answer named the revision; this one is stored
        calls = mtls_server.checks
        for _ in range(10):
            assert (await policy.check(ALICE)).cached
        assert mtls_server.checks == calls


@pytest.mark.parametrize("who", ["no client certificate", "certificate from another CA"])
async def test_service_refuses_clients_without_a_trusted_certificate(
    mtls_server: PolicyServer, pki: Pki, who: str
) -> None:
    tls = Tls(pki.ca.cert_path) if who == "no client certificate" else pki.client_tls(pki.stranger)
    async with PolicyClient(settings(f"127.0.0.1:{mtls_server.port}", tls, timeout=2.0)) as policy:
        with pytest.raises(PolicyError, match="UNAVAILABLE"):
            await policy.check(ALICE)
    assert mtls_server.checks == 0


async def test_client_refuses_a_service_it_cannot_verify(mtls_server: PolicyServer, pki: Pki, tmp_path: Path) -> None:
    from tests.certs import make_ca

    unrelated = make_ca(tmp_path / "unrelated", "unrelated CA")
    tls = Tls(unrelated.cert_path, pki.client.cert_path, pki.client.key_path)
    async with PolicyClient(settings(f"127.0.0.1:{mtls_server.port}", tls, timeout=2.0)) as policy:
        with pytest.raises(PolicyError):
            await policy.check(ALICE)


async def test_service_down_fails_within_the_timeout(pki: Pki) -> None:
    async with PolicyClient(settings(f"127.0.0.1:{closed_port()}", pki.client_tls(), timeout=0.2)) as policy:
        started = time.monotonic()
        with pytest.raises(PolicyError):
            await policy.check(ALICE)
        assert time.monotonic() - started < 0.5


async def test_a_revision_change_on_the_service_invalidates_the_cache(
    mtls_server: PolicyServer, pki: Pki, rules_file: Path
) -> None:
    target = f"127.0.0.1:{mtls_server.port}"
    async with PolicyClient(settings(target, pki.client_tls(), revision_poll=0.05)) as policy:
        await policy.check(ALICE)
        await policy.check(ALICE)
        assert (await policy.check(ALICE)).cached
        await asyncio.to_thread(
            rules_file.write_text, "rules: [{effect: deny, roles: [pharmacist], actions: ['**'], reason: revoked}]\n"
        )
        decision = await eventually(lambda: policy.check(ALICE), lambda d: not d.allow)
        assert decision.reason == "revoked" and not decision.cached


async def test_edge_policy_serve_runs_the_service(rules_file: Path, pki: Pki) -> None:
    """The `edge-policy` console script as a separate process: prints its port, answers, stops on SIGTERM."""
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "edge-policy"),
        "serve",
        "-c",
        str(rules_file),
        "--listen",
        "127.0.0.1:0",
        "--cert",
        str(pki.server.cert_path),
        "--key",
        str(pki.server.key_path),
        "--client-ca",
        str(pki.ca.cert_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        assert "listening on 127.0.0.1:" in line and "mutual TLS" in line, line
        port = int(line.split("127.0.0.1:")[1].split()[0])
        async with PolicyClient(settings(f"127.0.0.1:{port}", pki.client_tls(), timeout=2.0)) as policy:
            assert (await policy.check(ALICE)).allow
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 10) == 0


async def test_a_timeout_shorter_than_the_service_is_a_policy_timeout(pki: Pki) -> None:
    """A listener that accepts and never answers: the check ends at the timeout, not later."""
    sockets: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sockets.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with PolicyClient(settings(f"127.0.0.1:{port}", pki.client_tls(), timeout=0.1)) as policy:
            started = time.monotonic()
            with pytest.raises(PolicyError) as caught:
                await policy.check(ALICE)
            assert time.monotonic() - started < 0.5
            assert isinstance(caught.value, PolicyTimeout) or "DEADLINE_EXCEEDED" in str(caught.value)
    finally:
        for writer in sockets:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_python_m_server_serves_plaintext_on_loopback(rules_file: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "policy_client.server",
        "-c",
        str(rules_file),
        "--listen",
        "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        assert "plaintext" in line, line
        port = int(line.split("127.0.0.1:")[1].split()[0])
        async with PolicyClient(settings(f"127.0.0.1:{port}", None, timeout=2.0)) as policy:
            assert not (await policy.check(PolicyRequest(Principal("anonymous"), REFILL, "/x"))).allow
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 10) == 0


def test_plaintext_on_a_public_address_is_refused(rules_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from policy_client.cli import main

    assert main(["serve", "-c", str(rules_file), "--listen", "0.0.0.0:0"]) == 2
    assert "refusing plaintext" in capsys.readouterr().err
