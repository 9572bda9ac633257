"""`GET /metrics` on the admin listener, scraped after real calls through a real gateway."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import grpc
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec
from grpc import aio
from prometheus_client.parser import text_string_to_metric_families

from edge.certs import mint_token, public_jwks
from edge.metrics import request_metrics
from edge.pipeline.audit.tally import CallTally
from tests.audit.conftest import call_record
from tests.conftest import GatewayFiles, StartBackend

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
ROUTES = {
    "routes": [
        {"name": "refill", "match": {"path": "/v1/prescriptions/refill"}, "upstream": "pharmacy", "rewrite": "/refill"}
    ]
}


def pharmacy() -> web.Application:
    async def refill(request: web.Request) -> web.Response:
        return web.json_response({"status": "QUEUED", "rx": request.query["rx"]})

    app = web.Application()
    app.router.add_get("/refill", refill)
    return app


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def scrape(session: aiohttp.ClientSession, edge: GatewayFiles) -> Samples:
    async with session.get(f"{edge.admin}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        return parse(await response.text())


async def scrape_when(session: aiohttp.ClientSession, edge: GatewayFiles, name: str, total: float) -> Samples:
    """Calls are tallied by the audit writer thread, a moment after the reply went out."""
    async with asyncio.timeout(5):
        while True:
            samples = await scrape(session, edge)
            if sum(v for (n, _), v in samples.items() if n == name) >= total:
                return samples
            await asyncio.sleep(0.05)


async def start_full_pipeline(
    edge: GatewayFiles, start_backend: StartBackend, tmp_path: Path
) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "jwks.json").write_text(json.dumps(public_jwks(key)))
    (tmp_path / "rules.yaml").write_text(
        "rules:\n  - {name: veterans-refill, effect: allow, roles: [Veteran], actions: ['GET refill']}\n"
    )
    backend = await start_backend(pharmacy())
    await edge.start(
        ROUTES,
        upstreams={"pharmacy": {"endpoints": [backend]}},
        identity={
            "providers": {
                "dev": {
                    "type": "jwt",
                    "issuer": "https://edge.dev.local",
                    "audience": "edge",
                    "algorithms": ["ES256"],
                    "keys": {"jwks_file": "jwks.json"},
                }
            }
        },
        policy={"engine": "local", "rules": "rules.yaml"},
        quota={
            "rules": [
                {
                    "name": "refill-monthly",
                    "match": {"routes": ["refill"], "roles": ["Veteran"]},
                    "limit": 1,
                    "period": "30d",
                }
            ]
        },
    )
    return key


async def test_scrape_counts_calls_denials_audit_and_caches(
    edge: GatewayFiles, start_backend: StartBackend, tmp_path: Path
) -> None:
    key = await start_full_pipeline(edge, start_backend, tmp_path)
    veteran = {"Authorization": f"Bearer {mint_token(key, 'vet-1', ['Veteran'])}"}
    clerk = {"Authorization": f"Bearer {mint_token(key, 'clerk-1', ['Clerk'])}"}
    refill = f"{edge.url}/v1/prescriptions/refill?rx=RX-42"
    async with aiohttp.ClientSession() as session:
        statuses = []
        for url, headers in [
            (refill, veteran),
            (refill, veteran),
            (refill, {}),
            (refill, clerk),
            (f"{edge.url}/nope", {}),
        ]:
            async with session.get(url, headers=headers) as response:
                statuses.append(response.status)
        assert statuses == [200, 429, 401, 403, 404]
        # tallied when a batch is handed to the sealing process, counted written when it replies: the later one
        samples = await scrape_when(session, edge, "edge_audit_records_written_total", 5)

    for status, count in [("200", 1), ("429", 1), ("401", 1), ("403", 1)]:
        assert (
            value(
                samples, "edge_requests_total", ingress="http", route="refill", status=status, grpc_status=_grpc(status)
            )
            == count
        )
    assert (
        value(samples, "edge_requests_total", ingress="http", route="", status="404", grpc_status="UNIMPLEMENTED") == 1
    )
    assert value(samples, "edge_request_duration_seconds_count", ingress="http", route="refill") == 4
    assert value(samples, "edge_request_duration_seconds_bucket", ingress="http", route="refill", le="+Inf") == 4
    assert value(samples, "edge_quota_decisions_total", rule="refill-monthly", result="denied", mode="memory") == 1
    assert value(samples, "edge_quota_decisions_total", rule="refill-monthly", result="allowed", mode="memory") == 1
    assert value(samples, "edge_audit_records_written_total") == 5
    assert value(samples, "edge_audit_lost_records_total") == 0
    assert value(samples, "edge_audit_sink_down", sink="file") == 0
    assert value(samples, "edge_identity_token_cache_entries") == 2, "the veteran's and the clerk's tokens"
    assert value(samples, "edge_policy_engine_calls_total") == 2, "the veteran's second call was a cache hit"
    assert value(samples, "edge_policy_breaker", state="closed") == 1
    assert value(samples, "edge_routes") == 1
    assert value(samples, "edge_upstream_endpoints", upstream="pharmacy") == 1


def _grpc(status: str) -> str:
    return {"200": "OK", "429": "RESOURCE_EXHAUSTED", "401": "UNAUTHENTICATED", "403": "PERMISSION_DENIED"}[status]


async def test_scrape_reports_rejected_and_accepted_reloads(edge: GatewayFiles, start_backend: StartBackend) -> None:
    backend = await start_backend(pharmacy())
    await edge.start(ROUTES, upstreams={"pharmacy": {"endpoints": [backend]}}, server={"watch_interval": "1h"})
    async with aiohttp.ClientSession() as session:
        before = await scrape(session, edge)
        assert value(before, "edge_routes_reloads_total", result="rejected") == 0
        assert value(before, "edge_routes_last_reload_success") is None, "no reload tried yet"
        edge.write_routes("routes: [ {{{ broken")
        async with session.post(f"{edge.admin}/admin/reload") as response:
            assert response.status == 422
        rejected = await scrape(session, edge)
        edge.write_routes({"routes": [*ROUTES["routes"], {"match": {"prefix": "/v2"}, "upstream": "pharmacy"}]})
        async with session.post(f"{edge.admin}/admin/reload") as response:
            assert response.status == 200
        accepted = await scrape(session, edge)
    assert value(rejected, "edge_routes_reloads_total", result="rejected") == 1
    assert value(rejected, "edge_routes_last_reload_success") == 0
    assert value(rejected, "edge_routes_generation") == 1
    assert value(accepted, "edge_routes_reloads_total", result="ok") == 1
    assert value(accepted, "edge_routes_last_reload_success") == 1
    assert value(accepted, "edge_routes_generation") == 2
    assert value(accepted, "edge_routes") == 2


async def test_without_audit_sinks_metrics_still_answer(edge: GatewayFiles, start_backend: StartBackend) -> None:
    backend = await start_backend(pharmacy())
    await edge.start(ROUTES, upstreams={"pharmacy": {"endpoints": [backend]}}, audit={"sinks": []})
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{edge.url}/v1/prescriptions/refill?rx=1") as response:
            assert response.status == 200
        samples = await scrape(session, edge)
    assert value(samples, "edge_routes") == 1
    assert not any(name == "edge_requests_total" for name, _ in samples), "calls are tallied by the audit writer"


async def test_grpc_door_calls_are_counted_by_ingress(edge: GatewayFiles, start_backend: StartBackend) -> None:
    backend = await start_backend(pharmacy())
    await edge.start(
        ROUTES,
        upstreams={"pharmacy": {"endpoints": [backend]}},
        listeners={"grpc": {"host": "127.0.0.1", "port": 0}},
    )
    assert edge.gateway is not None
    async with aio.insecure_channel(f"127.0.0.1:{edge.gateway.ports['grpc']}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary("/hms.pharmacy.v1.Pharmacy/Unknown")(b"", timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    async with aiohttp.ClientSession() as session:
        samples = await scrape_when(session, edge, "edge_requests_total", 1)
    counted = {dict(labels)["ingress"]: v for (name, labels), v in samples.items() if name == "edge_requests_total"}
    assert counted == {"grpc": 1}
    assert (
        value(samples, "edge_requests_total", ingress="grpc", route="", status="404", grpc_status="UNIMPLEMENTED") == 1
    )


@pytest.mark.parametrize(
    ("latency_ms", "smallest_bucket"),
    [(0.0, "0.005"), (5.0, "0.005"), (5.001, "0.01"), (999.0, "1.0"), (10_000.0, "10.0"), (10_001.0, "+Inf")],
)
def test_latency_lands_in_the_smallest_bucket_that_holds_it(latency_ms: float, smallest_bucket: str) -> None:
    tally = CallTally()
    tally.count([call_record(0, ingress="http", route="r", status=200, grpc_status="OK", latency_ms=latency_ms)])
    histogram = next(m for m in request_metrics(tally.snapshot()) if m.name == "edge_request_duration_seconds")
    counts = {s.labels["le"]: s.value for s in histogram.samples if s.name.endswith("_bucket")}
    ordered = list(counts)
    first = next(le for le in ordered if counts[le] == 1)
    assert first == smallest_bucket
    assert all(counts[le] == 1 for le in ordered[ordered.index(first) :])
