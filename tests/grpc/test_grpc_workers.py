"""`serve --workers N` for the gRPC listener: workers share the port; a lone gateway never shares a taken one."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
import yaml
from door_harness import channel_to, grpc_route
from interop_server import Backend
from tests.net import free_port, wait_listening

from edge.config import load
from edge.server import Gateway

WAIT = 5.0


def _settings(folder: Path, backend: Backend, descriptor_dir: Path, port: int) -> Path:
    folder.mkdir()
    (folder / "routes.yaml").write_text(yaml.safe_dump({"routes": [grpc_route(backend.url)]}))
    listeners = {"http": None, "admin": None, "grpc": {"host": "127.0.0.1", "port": port}}
    config = {"listeners": listeners, "routes_file": "routes.yaml", "protos": str(descriptor_dir)}
    (folder / "edge.yaml").write_text(yaml.safe_dump(config))
    return folder / "edge.yaml"


async def test_workers_share_the_grpc_port(
    backend: Backend, pb: SimpleNamespace, tmp_path: Path, descriptor_dir: Path
) -> None:
    first_config = _settings(tmp_path / "first", backend, descriptor_dir, 0)
    async with Gateway(load(first_config), reuse_port=True) as first:
        port = first.ports["grpc"]
        second_config = _settings(tmp_path / "second", backend, descriptor_dir, port)
        async with Gateway(load(second_config), reuse_port=True) as second:
            assert second.ports["grpc"] == port
            for gateway in (first, second):
                async with channel_to(gateway) as channel:
                    await pb.test_grpc.TestServiceStub(channel).EmptyCall(pb.empty.Empty(), timeout=WAIT)


async def test_a_gateway_does_not_share_a_taken_grpc_port(
    backend: Backend, tmp_path: Path, descriptor_dir: Path
) -> None:
    first_config = _settings(tmp_path / "first", backend, descriptor_dir, 0)
    async with Gateway(load(first_config)) as first:
        second_config = _settings(tmp_path / "second", backend, descriptor_dir, first.ports["grpc"])
        with pytest.raises((RuntimeError, OSError), match=r"Failed to bind|Address already in use"):
            async with Gateway(load(second_config)):
                pass


@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "mutual-tls"])
@pytest.mark.parametrize("engine", ["h2", "grpcio"])
async def test_edge_serve_workers_answer_grpc(
    engine: str,
    tls: bool,
    backend: Backend,
    pb: SimpleNamespace,
    pki: SimpleNamespace,
    tmp_path: Path,
    descriptor_dir: Path,
) -> None:
    """`edge serve --workers 2` as real processes, on the event loop they serve with (uvloop), both engines."""
    port = free_port()
    config = _settings(tmp_path / "serve", backend, descriptor_dir, port)
    settings = yaml.safe_load(config.read_text())
    settings["listeners"]["grpc"]["engine"] = engine
    credentials = None
    if tls:
        edge, agent = pki.edge, pki.agent
        settings["listeners"]["grpc"]["tls"] = {
            "cert": str(edge.cert_path),
            "key": str(edge.key_path),
            "client_ca": str(pki.ca.cert_path),
            "require_client_cert": True,
        }
        credentials = grpc.ssl_channel_credentials(pki.ca.cert_pem, agent.key_pem, agent.cert_pem)
    config.write_text(yaml.safe_dump(settings))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge", "serve", "-c", str(config), "--workers", "2", stderr=asyncio.subprocess.PIPE
    )
    try:
        await wait_listening(port)
        target = SimpleNamespace(ports={"grpc": port})
        for _ in range(8):  # new connections each time, so the kernel spreads them over both workers
            async with channel_to(target, credentials, **{"grpc.ssl_target_name_override": "edge.test"}) as channel:  # type: ignore[arg-type]
                call = pb.test_grpc.TestServiceStub(channel).EmptyCall(pb.empty.Empty(), timeout=WAIT)
                assert await call.code() == grpc.StatusCode.OK
    finally:
        process.terminate()
        _, errors = await asyncio.wait_for(process.communicate(), 15)
    assert b"Traceback" not in errors, errors.decode()
