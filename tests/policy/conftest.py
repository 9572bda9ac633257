"""What the policy stage tests share: a rules file, an echo backend, a stand-in principal stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from edge.call import Call, Denial, Principal
from edge.server import Gateway
from tests.conftest import StartBackend

RULES = """
rules:
  - name: public-ballots
    effect: allow
    subjects: [anonymous]
    actions: ["GET ballots"]
  - name: pharmacists-refill
    effect: allow
    roles: [pharmacist]
    actions: ["hms.pharmacy.v1.Pharmacy/*"]
    headers: {x-gov-rule: refill}
  - name: suspended
    effect: deny
    roles: [suspended]
    actions: ["**"]
    reason: account suspended by governance rule 7
"""

ROUTES: list[dict[str, Any]] = [
    {"name": "ballots", "match": {"prefix": "/v1/ballots"}, "upstream": "echo"},
    {"name": "secret", "match": {"prefix": "/secret"}, "upstream": "echo"},
    {
        "name": "refill",
        "match": {"path": "/v1/prescriptions/refill"},
        "operation": "hms.pharmacy.v1.Pharmacy/Refill",
        "upstream": "echo",
    },
    {"name": "health", "match": {"path": "/health"}, "upstream": "echo", "policy": {"skip": True}},
]


def echo_app() -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"path": request.path, "headers": {k.lower(): v for k, v in request.headers.items()}})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


@pytest.fixture
async def echo(start_backend: StartBackend) -> str:
    return await start_backend(echo_app())


@pytest.fixture
def rules_path(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return path


class PrincipalFromHeader:
    """Stand-in for identity in tests: `x-test-principal: alice;pharmacist,auditor` sets the principal."""

    name = "test-principal"

    async def __call__(self, call: Call) -> Denial | None:
        given = call.metadata.get("x-test-principal")
        if given:
            subject, _, roles = str(given).partition(";")
            call.principal = Principal(subject, tuple(r for r in roles.split(",") if r), method="test")
        return None


def put_principal_stage_before_policy(gateway: Gateway) -> None:
    """Rebuild the running pipeline's stage list with the stand-in right before the policy stage."""
    stages = list(gateway.pipeline.stages)
    stages.insert(stages.index(gateway.policy), PrincipalFromHeader())  # type: ignore[arg-type]
    gateway.pipeline.stages = tuple(stages)
