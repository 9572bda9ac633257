"""What `GET /metrics` on the admin listener reports: counters the components already keep, read at scrape time.

Nothing here runs per request. `GatewayCollector.collect` is called by
prometheus-client when the admin listener is scraped, on the event loop, and
reads what each part of the gateway counts anyway: calls by route and status
and their latency (tallied from the audit records as they are handed to the
writer, so only when at least one audit sink is configured), the audit queue and sinks, quota decisions,
the identity and policy caches, the route table and its reloads, and each
upstream's endpoints. `gateway_registry` builds a registry per gateway (not
the global one), so several gateways in one process each report their own.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

from edge.pipeline.audit import AuditLog
from edge.pipeline.audit.tally import LATENCY_BUCKETS, TallySnapshot
from edge.pipeline.identity import IdentityStage
from edge.pipeline.policy import PolicyStage
from edge.pipeline.quota import Quota
from edge.routes import LiveTable
from edge.upstream import Upstream
from edge.upstream.endpoints import Endpoints
from policy_client import PolicyClient

BREAKER_STATES = ("closed", "open", "half_open")


class GatewayState(Protocol):
    """The parts of `edge.server.Gateway` the collector reads (server.py imports aiohttp; this module does not)."""

    @property
    def table(self) -> LiveTable: ...
    @property
    def audit(self) -> AuditLog: ...
    @property
    def quota(self) -> Quota: ...
    @property
    def identity(self) -> IdentityStage: ...
    @property
    def policy(self) -> PolicyStage | None: ...
    @property
    def upstreams(self) -> Mapping[str, Upstream]: ...
    @property
    def last_reload_error(self) -> list[str] | None: ...
    @property
    def last_reload_at(self) -> float | None: ...
    @property
    def reloads(self) -> Mapping[str, int]: ...


def gateway_registry(gateway: GatewayState) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(GatewayCollector(gateway))
    return registry


class GatewayCollector:
    def __init__(self, gateway: GatewayState) -> None:
        self.gateway = gateway

    def collect(self) -> Iterator[Metric]:
        gateway = self.gateway
        writer = gateway.audit.writer
        if writer is not None:
            yield from request_metrics(writer.tally.snapshot())
        yield from _audit(gateway.audit)
        yield from _quota(gateway.quota)
        yield from _identity(gateway.identity)
        if gateway.policy is not None:
            yield from _policy(gateway.policy)
        yield from _routes(gateway)
        yield from _upstreams(gateway.upstreams)


def request_metrics(tally: TallySnapshot) -> Iterator[Metric]:
    calls = CounterMetricFamily(
        "edge_requests",
        "Calls answered, by door, route ('' when none matched), HTTP status and gRPC status.",
        labels=["ingress", "route", "status", "grpc_status"],
    )
    for (ingress, route, status, grpc_status), count in sorted(tally.calls.items()):
        calls.add_metric([ingress, route, str(status), grpc_status], count)
    yield calls
    latency = HistogramMetricFamily(
        "edge_request_duration_seconds",
        "Time from a call's arrival to the end of its reply, by door and route.",
        labels=["ingress", "route"],
    )
    bounds = [*(str(bound) for bound in LATENCY_BUCKETS), "+Inf"]
    for (ingress, route), histogram in sorted(tally.latency.items()):
        cumulative, running = [], 0
        for bound, count in zip(bounds, histogram.buckets, strict=True):
            running += count
            cumulative.append((bound, float(running)))
        latency.add_metric([ingress, route], cumulative, histogram.total)
    yield latency


def _audit(audit: AuditLog) -> Iterator[Metric]:
    stats = audit.stats()
    yield GaugeMetricFamily("edge_audit_queued_records", "Records waiting for the audit writer.", stats["queued"])
    yield CounterMetricFamily(
        "edge_audit_lost_records", "Records dropped because the audit queue was full.", stats["lost_queue_full"]
    )
    if audit.writer is None:
        return
    yield CounterMetricFamily(
        "edge_audit_records_written", "Call records sealed into the audit chain.", stats["written"]
    )
    yield GaugeMetricFamily("edge_audit_chain_seq", "Sequence number of the newest audit chain entry.", stats["seq"])
    down = GaugeMetricFamily(
        "edge_audit_sink_down", "1 while the sink fails and records go to its spool.", labels=["sink"]
    )
    spooled = GaugeMetricFamily("edge_audit_sink_spooled_bytes", "Bytes waiting in the sink's spool.", labels=["sink"])
    dropped = CounterMetricFamily(
        "edge_audit_sink_dropped_records", "Records the sink lost (declared in the chain).", labels=["sink"]
    )
    accepting = GaugeMetricFamily(
        "edge_audit_sink_accepting", "0 while the sink's spool is too full for regulated routes.", labels=["sink"]
    )
    for name, sink in sorted(stats["sinks"].items()):
        down.add_metric([name], float(sink["down"]))
        spooled.add_metric([name], sink["spooled_bytes"])
        dropped.add_metric([name], sink["dropped"])
        accepting.add_metric([name], float(sink["accepting"]))
    yield from (down, spooled, dropped, accepting)


def _quota(quota: Quota) -> Iterator[Metric]:
    decisions = CounterMetricFamily(
        "edge_quota_decisions",
        "Quota decisions by rule, result (allowed, denied, shadow_denied, not_counted, skipped) and mode.",
        labels=["rule", "result", "mode"],
    )
    for row in quota.metrics.snapshot():
        decisions.add_metric([row["rule"], row["result"], row["mode"]], row["count"])
    yield decisions
    if quota.shared is not None:
        yield _breaker(
            "edge_quota_store_breaker", "State of the breaker in front of Redis.", quota.shared.breaker.state
        )


def _identity(identity: IdentityStage) -> Iterator[Metric]:
    yield GaugeMetricFamily("edge_identity_token_cache_entries", "Verified tokens remembered.", len(identity.cache))
    yield GaugeMetricFamily(
        "edge_identity_token_cache_capacity", "Verified tokens the cache may hold.", identity.cache.size
    )
    if not identity.remote_keys:
        return
    fetches = CounterMetricFamily("edge_identity_jwks_fetches", "JWKS fetches made.", labels=["provider"])
    failures = GaugeMetricFamily(
        "edge_identity_jwks_failures", "JWKS fetches failed in a row since the last good one.", labels=["provider"]
    )
    usable = GaugeMetricFamily(
        "edge_identity_jwks_usable", "1 while the provider's key set may be used.", labels=["provider"]
    )
    for name, keys in sorted(identity.remote_keys.items()):
        fetches.add_metric([name], keys.fetches)
        failures.add_metric([name], keys.failures)
        usable.add_metric([name], float(keys.usable))
    yield from (fetches, failures, usable)


def _policy(policy: PolicyStage) -> Iterator[Metric]:
    client = policy.checker
    if not isinstance(client, PolicyClient):
        return
    yield GaugeMetricFamily("edge_policy_cache_entries", "Policy decisions remembered.", len(client.cache))
    yield CounterMetricFamily(
        "edge_policy_engine_calls", "Policy decisions asked of the engine (cache misses).", client.calls
    )
    yield _breaker("edge_policy_breaker", "State of the breaker in front of the policy engine.", client.breaker.state)


def _routes(gateway: GatewayState) -> Iterator[Metric]:
    table = gateway.table
    yield GaugeMetricFamily("edge_routes", "Routes in the table being served.", len(table.current.routes))
    yield GaugeMetricFamily(
        "edge_routes_generation", "Route table generation (1 at start, +1 per reload).", table.generation
    )
    reloads = CounterMetricFamily(
        "edge_routes_reloads", "Routes file reloads, by result (ok, rejected).", labels=["result"]
    )
    for result in ("ok", "rejected"):
        reloads.add_metric([result], gateway.reloads.get(result, 0))
    yield reloads
    if gateway.last_reload_at is not None:
        yield GaugeMetricFamily(
            "edge_routes_last_reload_success",
            "1 if the last reload took, 0 if it was rejected (the previous table kept serving).",
            0.0 if gateway.last_reload_error else 1.0,
        )
        yield GaugeMetricFamily(
            "edge_routes_last_reload_timestamp_seconds", "When the last reload was tried.", gateway.last_reload_at
        )


def _upstreams(upstreams: Mapping[str, Upstream]) -> Iterator[Metric]:
    endpoints = GaugeMetricFamily("edge_upstream_endpoints", "Endpoints configured per upstream.", labels=["upstream"])
    for name, upstream in sorted(upstreams.items()):
        configured = getattr(upstream, "endpoints", None)
        if isinstance(configured, Endpoints):
            endpoints.add_metric([name], len(configured.urls))
    yield endpoints


def _breaker(name: str, documentation: str, state: str) -> GaugeMetricFamily:
    """One sample per state, 1 for the current one (the Prometheus idiom for an enum)."""
    gauge = GaugeMetricFamily(name, documentation, labels=["state"])
    current = state.replace("-", "_")
    for candidate in BREAKER_STATES:
        gauge.add_metric([candidate], float(candidate == current))
    return gauge
