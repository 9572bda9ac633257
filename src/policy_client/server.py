"""A runnable governance service: HMS-GOV's `PolicyService` answered from a local rules file.

`edge-policy serve -c rules.yaml` (or `python -m policy_client.server -c
rules.yaml`) serves `Check` and `GetRevision` over gRPC, plus the standard
health service, with the same `LocalEngine` the gateway embeds: so the remote
path (client engine, TLS, deadlines, revisions) runs for real in tests and in
the demo. TLS when a certificate is given, mutual TLS when a client CA is
too; plaintext only on a loopback address unless `--insecure` says otherwise.
"""

from __future__ import annotations

import ipaddress
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from policy_client import proto
from policy_client.engines.local import LocalEngine

log = logging.getLogger("policy_client.server")


@dataclass(frozen=True, slots=True)
class ServerTls:
    cert: Path
    key: Path
    client_ca: Path | None = None  # set: clients must present a certificate it issued (mutual TLS)


class PolicyServer:
    """The service over one `LocalEngine`; `start()` returns the port it listens on (0 picks one)."""

    def __init__(
        self, engine: LocalEngine, host: str = "127.0.0.1", port: int = 0, tls: ServerTls | None = None
    ) -> None:
        self.engine = engine
        self.host = host
        self.port = port
        self.tls = tls
        self.checks = 0
        self._server: grpc.aio.Server | None = None

    async def start(self) -> int:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers((self._handler(),))
        servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        address = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        if self.tls is not None:
            credentials = grpc.ssl_server_credentials(
                [(self.tls.key.read_bytes(), self.tls.cert.read_bytes())],
                root_certificates=self.tls.client_ca.read_bytes() if self.tls.client_ca else None,
                require_client_auth=self.tls.client_ca is not None,
            )
            self.port = server.add_secure_port(address, credentials)
        else:
            self.port = server.add_insecure_port(address)
        await self.engine.start()
        await server.start()
        await servicer.set(proto.SERVICE, health_pb2.HealthCheckResponse.SERVING)
        self._server = server
        return self.port

    def _handler(self) -> Any:
        return grpc.method_handlers_generic_handler(
            proto.SERVICE,
            {
                "Check": grpc.unary_unary_rpc_method_handler(
                    self._check,
                    request_deserializer=proto.CheckRequest.FromString,
                    response_serializer=proto.CheckResponse.SerializeToString,
                ),
                "GetRevision": grpc.unary_unary_rpc_method_handler(
                    self._get_revision,
                    request_deserializer=proto.GetRevisionRequest.FromString,
                    response_serializer=proto.GetRevisionResponse.SerializeToString,
                ),
            },
        )

    async def _check(self, message: Any, context: Any) -> Any:
        self.checks += 1
        decision = await self.engine.evaluate(proto.request_from_message(message))
        return proto.response_message(decision)

    async def _get_revision(self, message: Any, context: Any) -> Any:
        return proto.GetRevisionResponse(revision=self.engine.revision)

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def aclose(self, grace: float = 1.0) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        await self.engine.aclose()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


if __name__ == "__main__":
    from policy_client.cli import main

    sys.exit(main(["serve", *sys.argv[1:]]))
