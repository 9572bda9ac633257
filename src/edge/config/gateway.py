"""The models of `edge.yaml`: listeners, limits, upstreams, audit, server.

Each section is a frozen model with defaults that run on a laptop; identity,
policy and quota sections join here as they are built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from edge.config.audit import Audit, FileSink, RedisSink, StdoutSink  # noqa: F401 - re-exported
from edge.config.base import ByteSize, Duration, Frozen
from edge.config.identity import Identity
from edge.config.policy import Policy
from edge.config.quota import Quota

Port = Annotated[int, Field(ge=0, le=65535)]
UPSTREAM_SCHEMES = {"http": ("http", False), "https": ("http", True), "grpc": ("grpc", False), "grpcs": ("grpc", True)}


class ServerTLS(Frozen):
    cert: Path
    key: Path
    client_ca: Path | None = None
    require_client_cert: bool = False
    min_version: Literal["1.2", "1.3"] = "1.2"

    @model_validator(mode="after")
    def _client_ca_for_required(self) -> ServerTLS:
        if self.require_client_cert and self.client_ca is None:
            raise ValueError("require_client_cert needs client_ca (the CA bundle client certificates chain to)")
        return self


HTTP_ENGINES = ("httptools", "aiohttp")
GRPC_ENGINES = ("h2", "grpcio")


class Listener(Frozen):
    host: str = "0.0.0.0"
    port: Port = 8080
    tls: ServerTLS | None = None
    engine: Literal["httptools", "aiohttp", "h2", "grpcio"] | None = Field(
        default=None, description="server core: httptools (default) | aiohttp for http, h2 (default) | grpcio for grpc"
    )


class Listeners(Frozen):
    http: Listener | None = Field(default=Listener(), validate_default=True)
    grpc: Listener | None = None
    admin: Listener | None = Listener(host="127.0.0.1", port=9901)

    @field_validator("http", "grpc")
    @classmethod
    def _engine(cls, listener: Listener | None, info: ValidationInfo) -> Listener | None:
        if listener is None:
            return None
        engines = HTTP_ENGINES if info.field_name == "http" else GRPC_ENGINES
        if listener.engine is None:
            return listener.model_copy(update={"engine": engines[0]})
        if listener.engine not in engines:
            raise ValueError(f"engine: expected one of {', '.join(engines)} (got {listener.engine!r})")
        return listener


class Limits(Frozen):
    max_body: ByteSize = Field(default=10 * 2**20, description="413 above this")
    max_header_line: ByteSize = Field(default=8190, description="431 for a longer request line or header")
    max_headers: int = Field(default=100, ge=1, description="431 for more header fields")
    header_timeout: Duration = Field(
        default=60.0, gt=0, description="408 when a request line and its headers take longer to arrive (httptools)"
    )
    max_grpc_message: ByteSize = 4 * 2**20
    stream_idle_timeout: Duration = Field(
        default=300.0,
        description="h2 gRPC door: a call with no frame either way this long ends UNAVAILABLE; 0 turns it off",
    )


class UpstreamTLS(Frozen):
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None
    verify: bool = True

    @model_validator(mode="after")
    def _cert_and_key(self) -> UpstreamTLS:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together (client certificate for mutual TLS)")
        return self


class GrpcKeepalive(Frozen):
    """HTTP/2 pings on upstream gRPC channels, to find a dead connection before a call does.

    gRPC servers refuse pings more often than every 5 minutes unless they are
    configured to allow them, hence the default.
    """

    time: Duration = Field(default=300.0, gt=0, description="ping after this long without activity")
    timeout: Duration = Field(default=20.0, gt=0, description="drop the connection when a ping is not answered")
    without_calls: bool = Field(default=False, description="ping even when no call is in flight")


class Upstream(Frozen):
    endpoints: tuple[str, ...] = Field(min_length=1)
    timeout: Duration = 30.0
    connect_timeout: Duration = 5.0
    max_connections: int = Field(default=256, ge=1)
    keepalive: Duration = 60.0
    preserve_host: bool = False
    tls: UpstreamTLS | None = None
    grpc_keepalive: GrpcKeepalive | None = GrpcKeepalive()
    engine: Literal["h2", "grpcio"] | None = Field(
        default=None, description="gRPC client core: h2 (default) | grpcio; gRPC endpoints only"
    )

    @field_validator("endpoints")
    @classmethod
    def _urls(cls, endpoints: tuple[str, ...]) -> tuple[str, ...]:
        protocols = set()
        for url in endpoints:
            parts = urlsplit(url)
            if parts.scheme not in UPSTREAM_SCHEMES or not parts.hostname:
                raise ValueError(
                    f"expected an endpoint URL such as http://host:port or grpcs://host:port (got {url!r})"
                )
            if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
                raise ValueError(
                    f"an endpoint is scheme://host:port only; use a route's rewrite for paths (got {url!r})"
                )
            try:
                parts.port  # noqa: B018 - urlsplit parses the port lazily and raises here
            except ValueError:
                raise ValueError(f"expected a port number between 0 and 65535 (got {url!r})") from None
            protocols.add(UPSTREAM_SCHEMES[parts.scheme][0])
        if len(protocols) > 1:
            raise ValueError("all endpoints of one upstream speak the same protocol (http/https or grpc/grpcs)")
        return tuple(url.rstrip("/") for url in endpoints)

    @model_validator(mode="after")
    def _grpc_engine(self) -> Upstream:
        if self.engine is not None and self.protocol != "grpc":
            raise ValueError("engine applies to grpc/grpcs endpoints only")
        if self.engine is None and self.protocol == "grpc":
            object.__setattr__(self, "engine", GRPC_ENGINES[0])
        return self

    @model_validator(mode="after")
    def _grpc_verifies(self) -> Upstream:
        if self.protocol == "grpc" and self.tls is not None and not self.tls.verify:
            raise ValueError("tls.verify: false is not supported for grpcs endpoints (gRPC always verifies)")
        return self

    @property
    def protocol(self) -> str:
        return UPSTREAM_SCHEMES[urlsplit(self.endpoints[0]).scheme][0]


class Forwarding(Frozen):
    trusted_proxies: int = Field(default=0, ge=0, description="X-Forwarded-For hops to trust for the client address")
    request_id_header: str = "x-request-id"


class Server(Frozen):
    drain_timeout: Duration = 15.0
    watch_interval: Duration = Field(default=0.25, gt=0)
    instance_id: str | None = None


class EdgeConfig(Frozen):
    listeners: Listeners = Listeners()
    routes_file: Path = Path("routes.yaml")
    protos: Path | None = None
    upstreams: dict[str, Upstream] = {}
    limits: Limits = Limits()
    audit: Audit = Audit()
    forwarding: Forwarding = Forwarding()
    server: Server = Server()
    quota: Quota = Quota()
    policy: Policy | None = None
    identity: Identity = Identity()
