"""The OPA engine against a small aiohttp server that stands in for OPA.

The stand-in implements the part of OPA's REST data API contract the engine
relies on: `POST /v1/data/<path>` with `{"input": ...}` answers 200 with
`{"result": <value>}`, or `{}` when the document is undefined for that input,
and 404 with an error object for a malformed path. Its policy (in Python) is
what a Rego rule such as `allow if "pharmacist" in input.principal.roles`
would say.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from policy_client import AddHeader, ClientSettings, Opa, PolicyClient, PolicyError, PolicyRequest, Principal
from policy_client.engines.opa import decision_from_result
from tests.conftest import StartBackend

REFILL = "hms.pharmacy.v1.Pharmacy/Refill"
ALICE = PolicyRequest(Principal("alice", ("pharmacist",), (("tenant", "acme"),)), REFILL, "/refill")
BOB = PolicyRequest(Principal("bob", ("patient",)), REFILL, "/refill")


def opa_app(seen: list[dict[str, Any]], delay: float = 0.0) -> web.Application:
    def result(path: str, given: dict[str, Any]) -> Any:
        roles = given["principal"]["roles"]
        if path == "hms/edge/allow":
            return "pharmacist" in roles
        if path == "hms/edge/decision":
            if "pharmacist" in roles:
                return {"allow": True, "reason": "pharmacists refill", "headers": {"X-Tenant": "acme"}}
            return {"allow": False, "reason": "only pharmacists refill"}
        if path == "hms/edge/broken":
            return {"allowed": "yes"}
        return None

    async def data(request: web.Request) -> web.Response:
        if request.headers.get("Content-Type") != "application/json":
            return web.json_response({"code": "invalid_parameter"}, status=400)
        body = await request.json()
        seen.append(body)
        await asyncio.sleep(delay)
        path = request.match_info["path"]
        if path == "hms/edge/fails":
            return web.json_response({"code": "internal_error", "message": "boom"}, status=500)
        value = result(path, body["input"])
        return web.json_response({} if value is None else {"result": value})

    app = web.Application()
    app.router.add_post("/v1/data/{path:.*}", data)
    return app


def settings(url: str, path: str, timeout: float = 1.0) -> ClientSettings:
    return ClientSettings(Opa(url, path), timeout=timeout)


async def test_boolean_result(start_backend: StartBackend) -> None:
    seen: list[dict[str, Any]] = []
    url = await start_backend(opa_app(seen))
    async with PolicyClient(settings(url, "hms/edge/allow")) as policy:
        assert (await policy.check(ALICE)).allow
        denied = await policy.check(BOB)
        assert not denied.allow and denied.reason == "denied by OPA"
    assert seen[0] == {
        "input": {
            "principal": {"subject": "alice", "roles": ["pharmacist"], "attributes": {"tenant": "acme"}},
            "action": REFILL,
            "resource": "/refill",
            "attributes": {},
        }
    }


async def test_object_result_with_reason_and_headers(start_backend: StartBackend) -> None:
    url = await start_backend(opa_app([]))
    async with PolicyClient(settings(url, "/hms/edge/decision/")) as policy:
        allowed = await policy.check(ALICE)
        assert allowed.allow and allowed.reason == "pharmacists refill"
        assert allowed.obligations == (AddHeader("x-tenant", "acme"),)
        denied = await policy.check(BOB)
        assert not denied.allow and denied.reason == "only pharmacists refill"


async def test_undefined_result_is_a_deny(start_backend: StartBackend) -> None:
    url = await start_backend(opa_app([]))
    async with PolicyClient(settings(url, "hms/edge/missing")) as policy:
        decision = await policy.check(ALICE)
        assert not decision.allow and "undefined" in decision.reason


@pytest.mark.parametrize(("path", "problem"), [("hms/edge/fails", "HTTP 500"), ("hms/edge/broken", "boolean")])
async def test_errors_and_bad_shapes_are_no_decision(start_backend: StartBackend, path: str, problem: str) -> None:
    seen: list[dict[str, Any]] = []
    url = await start_backend(opa_app(seen))
    async with PolicyClient(settings(url, path)) as policy:
        for _ in range(2):
            with pytest.raises(PolicyError, match=problem):
                await policy.check(ALICE)
    assert len(seen) == 2  # errors are not cached


async def test_slow_opa_times_out(start_backend: StartBackend) -> None:
    url = await start_backend(opa_app([], delay=2.0))
    async with PolicyClient(settings(url, "hms/edge/allow", timeout=0.1)) as policy:
        started = time.monotonic()
        with pytest.raises(PolicyError):
            await policy.check(ALICE)
        assert time.monotonic() - started < 0.6


async def test_opa_down_is_no_decision(tmp_path: Path) -> None:
    async with PolicyClient(settings("http://127.0.0.1:9", "hms/edge/allow", timeout=0.5)) as policy:
        with pytest.raises(PolicyError):
            await policy.check(ALICE)


@pytest.mark.parametrize(
    ("body", "allow"),
    [({"result": True}, True), ({"result": False}, False), ({}, False), ({"result": {"allow": False}}, False)],
)
def test_result_shapes(body: dict[str, Any], allow: bool) -> None:
    assert decision_from_result(body).allow is allow


@pytest.mark.parametrize(
    "body", [[], {"result": "yes"}, {"result": {"allow": 1}}, {"result": {"allow": True, "headers": []}}]
)
def test_result_shapes_that_are_errors(body: Any) -> None:
    with pytest.raises(PolicyError):
        decision_from_result(body)
