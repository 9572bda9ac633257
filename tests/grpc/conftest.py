"""Fixtures for the gRPC door tests: interop protos, backends, certificates, a gateway factory.

The interop protos under tests/protos are compiled once per session with
grpc_tools into a temporary directory (Python modules for the test client and
backend, and a descriptor set the gateway loads as its protos). Gateways are
started from YAML written to tmp_path, on port 0, the way `edge serve` starts.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from door_harness import INTEROP_PROTOS, PROTOS, MakeGateway
from grpc_tools import protoc
from interop_server import Backend, start_backend
from tests.certs import CA, issue_cert, make_ca

import edge.server
from edge.config import load
from edge.frontends.grpc_h2 import GrpcH2Listener
from edge.server import Gateway
from edge.transcode.descriptors import compile_protos


@pytest.fixture(scope="session")
def pb(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The generated interop modules: `empty`, `messages`, `test_grpc`."""
    out = tmp_path_factory.mktemp("interop_pb")
    args = ["protoc", f"--proto_path={PROTOS}", f"--python_out={out}", f"--grpc_python_out={out}", *INTEROP_PROTOS]
    assert protoc.main(args) == 0
    sys.path.insert(0, str(out))
    return SimpleNamespace(
        empty=importlib.import_module("interop.empty_pb2"),
        messages=importlib.import_module("interop.messages_pb2"),
        test_grpc=importlib.import_module("interop.test_pb2_grpc"),
    )


@pytest.fixture(scope="session")
def descriptor_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A protos directory holding the interop protos as one descriptor set (no protoc per gateway)."""
    directory = tmp_path_factory.mktemp("protos")
    (directory / "interop.pb").write_bytes(compile_protos(PROTOS, INTEROP_PROTOS).SerializeToString())
    return directory


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """One CA; certificates for a backend, the gateway's listener, an agent and the gateway as client."""
    directory = tmp_path_factory.mktemp("pki")
    ca: CA = make_ca(directory)
    other: CA = make_ca(directory / "other", "untrusted CA")
    return SimpleNamespace(
        ca=ca,
        backend=issue_cert(ca, directory, "backend.internal", dns=("backend.internal",)),
        edge=issue_cert(ca, directory, "edge.test", dns=("edge.test",), ips=("127.0.0.1",)),
        agent=issue_cert(ca, directory, "agent-7", client=True, server=False),
        gateway_client=issue_cert(ca, directory, "edge-gateway", client=True, server=False),
        stranger=issue_cert(other, directory / "other", "stranger", client=True, server=False),
    )


@pytest.fixture
async def backend(pb: SimpleNamespace) -> AsyncIterator[Backend]:
    running = await start_backend(pb)
    yield running
    await running.server.stop(None)


@pytest.fixture(params=["h2", "grpcio"])
def grpc_engine(request: pytest.FixtureRequest) -> str:
    """Every door test runs on both gRPC listener engines."""
    return str(request.param)


@pytest.fixture
def make_gateway(tmp_path: Path, descriptor_dir: Path, grpc_engine: str) -> MakeGateway:
    """Start a gateway with a gRPC listener (on the test's engine) from the given routes and config sections."""

    @asynccontextmanager
    async def make(
        routes: list[dict[str, Any]],
        *,
        upstreams: dict[str, Any] | None = None,
        protos: Path | bool | None = True,
        listener: dict[str, Any] | None = None,
        **sections: Any,
    ) -> AsyncIterator[Gateway]:
        config = {
            "listeners": {
                "http": None,
                "admin": None,
                "grpc": {"host": "127.0.0.1", "port": 0, "engine": grpc_engine, **(listener or {})},
            },
            "routes_file": "routes.yaml",
            "upstreams": upstreams or {},
            "server": {"drain_timeout": "1s"},
            **sections,
        }
        if protos:
            config["protos"] = str(descriptor_dir if protos is True else protos)
        (tmp_path / "routes.yaml").write_text(yaml.safe_dump({"routes": routes}))
        (tmp_path / "edge.yaml").write_text(yaml.safe_dump(config))
        async with Gateway(load(tmp_path / "edge.yaml")) as gateway:
            yield gateway

    return make


@pytest.fixture
def listeners(monkeypatch: pytest.MonkeyPatch) -> list[GrpcH2Listener]:
    """The h2 listeners the test's gateways start, to look at their connections from the server's side."""
    started: list[GrpcH2Listener] = []

    def recorded(*args: Any) -> GrpcH2Listener:
        listener = GrpcH2Listener(*args)
        started.append(listener)
        return listener

    monkeypatch.setattr(edge.server, "GrpcH2Listener", recorded)
    return started
