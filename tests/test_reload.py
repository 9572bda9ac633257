"""Hot reload of the routes file: watched, admin-triggered, all or nothing, invisible to in-flight calls."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from tests.conftest import GatewayFiles, StartBackend


def path_app(delay: float = 0.0) -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        if request.path.startswith("/slow"):
            await asyncio.sleep(delay)
        return web.json_response({"path": request.path})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


def version(n: int, backend: str) -> dict[str, object]:
    return {"routes": [{"name": "v", "match": {"path": "/v"}, "upstream": backend, "rewrite": f"/v{n}"}]}


async def test_reload_under_load_never_fails_a_request(edge: GatewayFiles, start_backend: StartBackend) -> None:
    backend = await start_backend(path_app())
    await edge.start(version(0, backend))
    statuses: list[int] = []
    seen: set[str] = set()
    stop = asyncio.Event()

    async def client(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            async with session.get(f"{edge.url}/v") as response:
                statuses.append(response.status)
                seen.add((await response.json())["path"])

    async with aiohttp.ClientSession() as session:
        clients = [asyncio.create_task(client(session)) for _ in range(4)]
        for n in range(1, 51):
            if n % 5 == 0:
                edge.write_routes(
                    "routes: [ {match: {path: /v}, upstream: nowhere} ]" if n % 10 else "routes: [ {{{ broken"
                )
            else:
                edge.write_routes(version(n, backend))
            await asyncio.sleep(0.06)
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*clients), 10)
        async with session.get(f"{edge.url}/v") as response:
            assert (await response.json())["path"] == "/v49"
        async with session.get(f"{edge.admin}/admin/routes") as response:
            table = await response.json()
    assert statuses and set(statuses) == {200}
    assert len(seen) > 10
    assert not any(path in seen for path in ("/v5", "/v10", "/v50"))
    assert table["routes"][0]["rewrite"] == "/v49"
    assert "invalid YAML" in table["last_reload_error"][0]


async def test_change_visible_within_a_second(edge: GatewayFiles, start_backend: StartBackend) -> None:
    backend = await start_backend(path_app())
    await edge.start(version(1, backend))
    edge.write_routes(version(2, backend))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 1.0
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(f"{edge.url}/v") as response:
                if (await response.json())["path"] == "/v2":
                    break
            assert loop.time() < deadline, "the new routes file was not served within 1 s"
            await asyncio.sleep(0.02)


async def test_invalid_file_rejected_and_reported_at_admin(edge: GatewayFiles, start_backend: StartBackend) -> None:
    backend = await start_backend(path_app())
    await edge.start(version(1, backend), server={"watch_interval": "10s"})
    edge.write_routes("routes:\n  - match: {path: /v, methods: [FETCH]}\n    upstream: ghost\n")
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{edge.admin}/admin/reload") as response:
            assert response.status == 422
            report = await response.json()
        assert report["reloaded"] is False and report["generation"] == 1
        assert any("routes[0].match.methods" in e and "FETCH" in e for e in report["errors"])
        async with session.get(f"{edge.admin}/admin/routes") as response:
            table = await response.json()
        assert table["last_reload_error"] == report["errors"]
        assert [r["rewrite"] for r in table["routes"]] == ["/v1"]
        async with session.get(f"{edge.url}/v") as response:
            assert (await response.json())["path"] == "/v1"
        edge.write_routes(version(2, backend))
        async with session.post(f"{edge.admin}/admin/reload") as response:
            assert response.status == 200
            assert await response.json() == {"reloaded": True, "generation": 2}
        async with session.get(f"{edge.url}/v") as response:
            assert (await response.json())["path"] == "/v2"


async def test_in_flight_call_finishes_on_the_table_it_started_with(
    edge: GatewayFiles, start_backend: StartBackend
) -> None:
    backend = await start_backend(path_app(delay=0.5))
    await edge.start(
        {"routes": [{"match": {"prefix": "/slow"}, "upstream": backend}]}, server={"watch_interval": "10s"}
    )
    async with aiohttp.ClientSession() as session:
        slow = asyncio.create_task(session.get(f"{edge.url}/slow"))
        await asyncio.sleep(0.1)
        edge.write_routes({"routes": [{"match": {"prefix": "/other"}, "upstream": backend}]})
        async with session.post(f"{edge.admin}/admin/reload") as response:
            assert response.status == 200
        response = await asyncio.wait_for(slow, 5)
        assert response.status == 200 and (await response.json())["path"] == "/slow"
        response.release()
        async with session.get(f"{edge.url}/slow") as response:
            assert response.status == 404


async def test_health_and_readiness(edge: GatewayFiles, start_backend: StartBackend) -> None:
    backend = await start_backend(path_app())
    await edge.start(version(1, backend))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{edge.admin}/healthz") as response:
            assert response.status == 200 and await response.json() == {"status": "ok"}
        async with session.get(f"{edge.admin}/readyz") as response:
            assert response.status == 200 and await response.json() == {"ready": True, "routes": 1}
        async with session.get(f"{edge.url}/healthz") as response:
            assert response.status == 404


async def test_not_ready_without_routes(edge: GatewayFiles) -> None:
    await edge.start({"routes": []})
    async with aiohttp.ClientSession() as session, session.get(f"{edge.admin}/readyz") as response:
        assert response.status == 503
