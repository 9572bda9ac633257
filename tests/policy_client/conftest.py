"""A rules file and mutual-TLS material for the governance service tests, made per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from policy_client import Tls
from policy_client.engines.local import LocalEngine
from policy_client.server import PolicyServer, ServerTls
from tests.certs import CA, Issued, issue_cert, make_ca

RULES = """
rules:
  - name: pharmacists-refill
    effect: allow
    roles: [pharmacist]
    actions: ["hms.pharmacy.v1.Pharmacy/*"]
    headers: {x-gov-rule: refill}
  - name: suspended
    effect: deny
    roles: [suspended]
    actions: ["**"]
    reason: account suspended
"""


@dataclass(frozen=True)
class Pki:
    ca: CA
    server: Issued
    client: Issued
    stranger: Issued  # a client certificate from a CA the service does not trust

    def client_tls(self, client: Issued | None = None) -> Tls:
        chosen = client or self.client
        return Tls(self.ca.cert_path, chosen.cert_path, chosen.key_path)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = make_ca(tmp_path / "pki")
    other = make_ca(tmp_path / "other", "other CA")
    server = issue_cert(ca, tmp_path / "pki", "policy.test", dns=("localhost",), ips=("127.0.0.1",))
    client = issue_cert(ca, tmp_path / "pki", "edge-gateway", client=True, server=False)
    stranger = issue_cert(other, tmp_path / "other", "stranger", client=True, server=False)
    return Pki(ca, server, client, stranger)


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return path


@pytest.fixture
async def mtls_server(pki: Pki, rules_file: Path) -> AsyncIterator[PolicyServer]:
    server = PolicyServer(
        LocalEngine(rules_file, watch_interval=0.02),
        tls=ServerTls(pki.server.cert_path, pki.server.key_path, pki.ca.cert_path),
    )
    await server.start()
    yield server
    await server.aclose(grace=0)
