"""The gRPC parts of edge.yaml: upstream keepalive, TLS rules for grpcs, and a routed gRPC listener."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.config import ConfigError, load
from edge.config.gateway import GrpcKeepalive


def _load(tmp_path: Path, upstream: dict[str, Any]) -> Any:
    (tmp_path / "routes.yaml").write_text(yaml.safe_dump({"routes": [{"match": {"grpc": "a.B"}, "upstream": "svc"}]}))
    (tmp_path / "edge.yaml").write_text(yaml.safe_dump({"upstreams": {"svc": upstream}}))
    return load(tmp_path / "edge.yaml")


def test_keepalive_defaults_and_durations(tmp_path: Path) -> None:
    default = _load(tmp_path, {"endpoints": ["grpc://svc:50051"]}).config.upstreams["svc"]
    assert default.grpc_keepalive == GrpcKeepalive(time=300.0, timeout=20.0, without_calls=False)
    tuned = _load(
        tmp_path, {"endpoints": ["grpc://svc:50051"], "grpc_keepalive": {"time": "10m", "timeout": "5s"}}
    ).config.upstreams["svc"]
    assert (tuned.grpc_keepalive.time, tuned.grpc_keepalive.timeout) == (600.0, 5.0)
    off = _load(tmp_path, {"endpoints": ["grpc://svc:50051"], "grpc_keepalive": None}).config.upstreams["svc"]
    assert off.grpc_keepalive is None


@pytest.mark.parametrize(
    ("upstream", "expected"),
    [
        (
            {"endpoints": ["grpcs://svc:443"], "tls": {"verify": False}},
            "upstreams.svc: tls.verify: false is not supported",
        ),
        ({"endpoints": ["grpc://svc:1"], "grpc_keepalive": {"time": "0s"}}, "upstreams.svc.grpc_keepalive.time"),
        (
            {"endpoints": ["grpc://svc:1"], "grpc_keepalive": {"pings": 3}},
            "upstreams.svc.grpc_keepalive.pings: unknown key",
        ),
        ({"endpoints": ["http://svc:1"], "engine": "h2"}, "upstreams.svc: engine applies to grpc/grpcs endpoints only"),
        ({"endpoints": ["grpc://svc:1"], "engine": "nghttp2"}, "upstreams.svc.engine"),
    ],
    ids=["grpcs-without-verify", "zero-keepalive", "unknown-key", "engine-on-http", "unknown-engine"],
)
def test_bad_grpc_upstreams_are_rejected(upstream: dict[str, Any], expected: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        _load(tmp_path, upstream)
    assert any(expected in problem for problem in raised.value.problems), raised.value.problems


def test_engines_default_per_side_and_are_checked_per_listener(tmp_path: Path) -> None:
    default = _load(tmp_path, {"endpoints": ["grpc://svc:50051"]}).config
    assert default.upstreams["svc"].engine == "h2"
    assert default.listeners.http is not None and default.listeners.http.engine == "httptools"
    listeners = {"http": {"engine": "h2"}, "grpc": {"port": 0, "engine": "aiohttp"}}
    (tmp_path / "edge.yaml").write_text(yaml.safe_dump({"listeners": listeners}))
    with pytest.raises(ConfigError) as raised:
        load(tmp_path / "edge.yaml")
    problems = [problem.removeprefix(f"{tmp_path}/") for problem in raised.value.problems]
    assert "edge.yaml: listeners.http: engine: expected one of httptools, aiohttp (got 'h2')" in problems
    assert "edge.yaml: listeners.grpc: engine: expected one of h2, grpcio (got 'aiohttp')" in problems
