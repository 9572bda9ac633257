"""The gRPC door and client on uvloop, the loop `edge serve` runs: every interop case, mutual TLS on both sides.

The rest of the suite runs on asyncio's own loop; uvloop's transports differ
(they are not `asyncio.Transport` subclasses, TLS closes differently), and
two bugs of the h2 engines showed only there.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import grpc
import uvloop
import yaml
from door_harness import SERVICE, channel_to
from interop_client import CASES
from interop_server import start_backend

from edge.config import load
from edge.server import Gateway


def _config(folder: Path, pki: SimpleNamespace, backend_port: int, descriptor_dir: Path) -> Path:
    edge, client = pki.edge, pki.gateway_client
    listener_tls = {
        "cert": str(edge.cert_path),
        "key": str(edge.key_path),
        "client_ca": str(pki.ca.cert_path),
        "require_client_cert": True,
    }
    upstream_tls = {
        "ca": str(pki.ca.cert_path),
        "cert": str(client.cert_path),
        "key": str(client.key_path),
        "server_name": "backend.internal",
    }
    config = {
        "listeners": {"http": None, "admin": None, "grpc": {"host": "127.0.0.1", "port": 0, "tls": listener_tls}},
        "routes_file": "routes.yaml",
        "protos": str(descriptor_dir),
        "upstreams": {"interop": {"endpoints": [f"grpcs://127.0.0.1:{backend_port}"], "tls": upstream_tls}},
        "server": {"drain_timeout": "1s"},
    }
    (folder / "routes.yaml").write_text(
        yaml.safe_dump({"routes": [{"match": {"grpc": SERVICE}, "upstream": "interop"}]})
    )
    (folder / "edge.yaml").write_text(yaml.safe_dump(config))
    return folder / "edge.yaml"


def test_every_interop_case_on_uvloop_with_mutual_tls(
    pb: SimpleNamespace, pki: SimpleNamespace, descriptor_dir: Path, tmp_path: Path
) -> None:
    backend_credentials = grpc.ssl_server_credentials(
        [(pki.backend.key_pem, pki.backend.cert_pem)], root_certificates=pki.ca.cert_pem, require_client_auth=True
    )
    agent = grpc.ssl_channel_credentials(pki.ca.cert_pem, pki.agent.key_pem, pki.agent.cert_pem)
    passed: list[str] = []

    async def scenario() -> None:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        backend = await start_backend(pb, backend_credentials)
        try:
            settings = load(_config(tmp_path, pki, backend.port, descriptor_dir))
            async with (
                Gateway(settings) as gateway,
                channel_to(gateway, agent, **{"grpc.ssl_target_name_override": "edge.test"}) as channel,
            ):
                for name, case in CASES.items():
                    await case(channel, pb)
                    passed.append(name)
        finally:
            await backend.server.stop(None)

    uvloop.run(asyncio.wait_for(scenario(), 60))
    assert passed == list(CASES)
