"""The gRPC front door: a grpc.aio server whose one generic handler takes every method.

`GrpcDoor.service` hands grpc a raw-bytes handler (no serializers) for any
method: the kind the protos registry declares, or bidirectional streaming when
the registry does not know the method, since a bidi handler carries all four
kinds faithfully on the wire. The handler turns the call into a `Call`
(invocation metadata, peer and client certificate, deadline), resolves it with
`match_grpc`, and runs the same pipeline as the HTTP door; `deliver` writes the
`Reply` back: initial metadata, each message as it comes, then the upstream's
trailing metadata, status and message, unchanged. A `Denial` is written as a
status, a message and trailing metadata, never as an exception.

`GrpcListener` owns the grpc.aio server: the door, the gateway's own
`grpc.health.v1.Health`, and server reflection over the routed services the
registry knows, following the route table through reloads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import unquote

import grpc
from google.protobuf import any_pb2, json_format  # type: ignore[import-untyped]
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from grpc_health.v1 import health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2_grpc

from edge.call import Body, Call, Denial, Metadata, MetaValue, Peer, Reply
from edge.config.gateway import Forwarding, Limits, Listener, ServerTLS
from edge.errors import EdgeError, Status
from edge.frontends.own_services import OwnServices
from edge.ids import caller_request_id
from edge.pipeline import Forward, Pipeline
from edge.routes import LiveTable
from edge.tls import read_pem, server_context, tls_files_signature
from edge.transcode.descriptors import ProtoRegistry

log = logging.getLogger("edge.grpc")

CODES = {Status(code.value[0]): code for code in grpc.StatusCode}
HALF_CLOSE_GRACE = 0.005  # seconds; the cancel follows the end within ~0.2 ms, < 5 ms on a loaded machine
HANDLER_CACHE_SIZE = 4096
NO_MESSAGE = "the upstream ended a unary call without a response message"
Context = Any  # grpc.aio.ServicerContext; grpc ships no type information
# (client streaming, server streaming) -> grpc's raw-bytes handler of that kind
HANDLER_KINDS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}

_ = error_details_pb2  # registers google.rpc detail types, so Denial details can name them by @type


class GrpcDoor(grpc.GenericRpcHandler):  # type: ignore[misc]
    def __init__(
        self,
        table: LiveTable,
        pipeline: Pipeline,
        forward: Forward,
        forwarding: Forwarding,
        registry: ProtoRegistry,
        scheme: str = "http",
    ) -> None:
        self.table = table
        self.pipeline = pipeline
        self.forward = forward
        self.forwarding = forwarding
        self.registry = registry
        self.scheme = scheme
        self._handlers: dict[tuple[str, bool, bool], grpc.RpcMethodHandler] = {}

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        """The handler of the kind the registry declares now; built once per method and kind."""
        path = details.method if isinstance(details.method, str) else details.method.decode()
        streams = method_kind(self.registry, path)
        key = (path, *streams)
        handler = self._handlers.get(key)
        if handler is None:
            if len(self._handlers) >= HANDLER_CACHE_SIZE:
                self._handlers.clear()
            handler = HANDLER_KINDS[streams](self._handler(path, request_stream=streams[0], response_stream=streams[1]))
            self._handlers[key] = handler
        return handler

    def _handler(self, path: str, *, request_stream: bool, response_stream: bool) -> Any:
        async def handle(request: Any, context: Context) -> bytes | None:
            if not request_stream and not response_stream:
                return await self.handle_unary(path, request, context)
            requests = request if request_stream else _one(request)
            return await self.handle(path, requests, context, stream=request_stream, unary=not response_stream)

        return handle

    async def handle(
        self, path: str, requests: AsyncIterable[bytes], context: Context, *, stream: bool, unary: bool
    ) -> bytes | None:
        """Run one call through the pipeline; for a unary response, return the one message."""
        call = self._call(path, context)
        call.body = _counted(requests, call, stream=stream)
        exchange = _Exchange(context, unary)
        await self.pipeline.run(call, self.forward, exchange.deliver)
        return exchange.response

    async def handle_unary(self, path: str, request: bytes, context: Context) -> bytes | None:
        """A unary call the registry knows: the request stays one bytes message, the upstream call is unary too."""
        call = self._call(path, context)
        call.body = request
        call.bytes_in = len(request)
        call.unary = True
        exchange = _Exchange(context, True)
        await self.pipeline.run(call, self.forward, exchange.deliver)
        return exchange.response

    def _call(self, path: str, context: Context) -> Call:
        metadata = Metadata((m[0], m[1]) for m in context.invocation_metadata() or ())
        peer = _peer(context, self.scheme == "https")
        return grpc_call(self.table, self.forwarding, self.scheme, path, metadata, peer, context.time_remaining())


def method_kind(registry: ProtoRegistry, path: str) -> tuple[bool, bool]:
    """(client streaming, server streaming) as the registry declares it now; a method it does not know is bidi."""
    method = registry.method(path)
    return (True, True) if method is None else (method.client_streaming, method.server_streaming)


def grpc_call(
    table: LiveTable,
    forwarding: Forwarding,
    scheme: str,
    path: str,
    metadata: Metadata,
    peer: Peer,
    timeout: float | None,
) -> Call:
    """A gRPC call as the pipeline sees it, routed in the live table; either gRPC door makes it here."""
    call = Call(
        ingress="grpc",
        method="POST",
        path=path,
        peer=peer,
        metadata=metadata,
        scheme=scheme,
        request_id=caller_request_id(metadata.get(forwarding.request_id_header)),
        deadline=None if timeout is None else time.monotonic() + timeout,
    )
    match = table.current.match_grpc(path)
    if match is not None:
        call.route = match.route
        call.upstream_path = match.upstream_path
        call.decisions["operation"] = match.operation
    return call


class _Exchange:
    """Writes one `Reply` to one grpc call: stream messages as they come, or keep the unary one."""

    def __init__(self, context: Context, unary: bool) -> None:
        self.context = context
        self.unary = unary
        self.response: bytes | None = None

    async def deliver(self, call: Call, reply: Reply) -> None:
        if reply.denial is not None:
            self._end(reply.denial.status, reply.denial.message, denial_trailers(call, reply.denial))
            return
        await self.context.send_initial_metadata(with_gateway_keys(reply.headers, call))
        try:
            count = await self._relay(call, reply.body)
        except EdgeError as error:
            log.warning("request %s: %s; ending the call", call.request_id, error.message)
            call.decisions["aborted"] = error.message
            self._end(error.status, error.message, [])
            return
        if self.unary and count != 1 and reply.status is Status.OK:
            self._end(Status.INTERNAL, NO_MESSAGE if count == 0 else "the upstream sent several messages", [])
            return
        self._end(reply.status, reply.message, reply.trailers)

    async def _relay(self, call: Call, body: Body) -> int:
        if self.unary and isinstance(body, bytes):
            call.bytes_out += len(body)
            self.response = body
            return 1
        count, last = await relay(call, body, None if self.unary else self.context.write)
        if self.unary:
            self.response = last
        return count

    def _end(self, status: Status, message: str, trailers: Sequence[tuple[str, MetaValue]]) -> None:
        if status is not Status.OK:
            self.response = None
        self.context.set_trailing_metadata(tuple(trailers))
        self.context.set_code(CODES[status])
        self.context.set_details(message)


def with_gateway_keys(pairs: Sequence[tuple[str, MetaValue]], call: Call) -> list[tuple[str, MetaValue]]:
    """The reply's metadata plus `x-request-id` and the stages' reply headers, which replace any of the same name."""
    added = [("x-request-id", call.request_id), *((name.lower(), value) for name, value in call.reply_headers)]
    names = {name for name, _ in added}
    return [*((name, value) for name, value in pairs if name not in names), *added]


def denial_trailers(call: Call, denial: Denial) -> list[tuple[str, MetaValue]]:
    trailers = with_gateway_keys([(name.lower(), value) for name, value in denial.headers], call)
    details = status_details(denial)
    if details is not None:
        trailers.append(("grpc-status-details-bin", details))
    return trailers


def status_details(denial: Denial) -> bytes | None:
    """A `google.rpc.Status` for the denial's typed details (those naming a known `@type`)."""
    packed = []
    for detail in denial.details:
        message = any_pb2.Any()
        try:
            json_format.Parse(json.dumps(detail), message)
        except (json_format.ParseError, TypeError, ValueError):
            continue
        packed.append(message)
    if not packed:
        return None
    status = status_pb2.Status(code=denial.status.value, message=denial.message, details=packed)
    return bytes(status.SerializeToString())


async def relay(call: Call, body: Body, send: Callable[[bytes], Awaitable[None]] | None) -> tuple[int, bytes | None]:
    """A reply's messages to the caller as they come (`send`), counted; with no `send`, the last one is kept.

    A unary response (no `send`) goes out only once the upstream has ended
    the call, since a count other than one is then the caller's error.
    """
    count = 0
    last = None
    messages = aiter(_one(body) if isinstance(body, bytes) else body)
    try:
        async for message in messages:
            count += 1
            call.bytes_out += len(message)
            if send is None:
                last = message
            else:
                await send(message)
    finally:
        close = getattr(messages, "aclose", None)
        if close is not None:
            await close()
    return count, last


async def _one(message: bytes) -> AsyncIterator[bytes]:
    yield message


async def _counted(requests: AsyncIterable[bytes], call: Call, *, stream: bool) -> AsyncIterator[bytes]:
    """The caller's messages, counted; the end of a request stream is passed on `HALF_CLOSE_GRACE` late.

    grpc.aio ends a server's request stream the same way whether the caller
    half-closed or cancelled, and cancels the handler moments later. Holding
    the end back that long lets a cancel reach the upstream as a cancel (the
    handler's cancellation cancels the upstream call), never as a half-close
    that a backend would take for a complete upload.
    """
    async for message in requests:
        call.bytes_in += len(message)
        yield message
    if stream:
        await asyncio.sleep(HALF_CLOSE_GRACE)


def _peer(context: Context, tls: bool) -> Peer:
    """`ipv4:1.2.3.4:5678` / `ipv6:[::1]:5678` and the verified client certificate, if any."""
    kind, _, rest = unquote(context.peer() or "").partition(":")
    host, _, port = rest.rpartition(":")
    pem = (context.auth_context() or {}).get("x509_pem_cert") if tls else None
    certificate = ssl.PEM_cert_to_DER_cert(pem[0].decode()) if pem else None
    if kind in ("ipv4", "ipv6") and port.isdigit():
        return Peer(host.strip("[]"), int(port), certificate)
    return Peer(rest or "unknown", 0, certificate)


class GrpcListener:
    """The grpc.aio server of the gRPC door (`listeners.grpc.engine: grpcio`), with health and reflection at the edge."""

    def __init__(
        self,
        door: GrpcDoor,
        listener: Listener,
        limits: Limits,
        own: OwnServices,
        reuse_port: bool = False,
    ) -> None:
        self.listener = listener
        self.health = own.health
        self.server = aio.server(options=server_options(limits, reuse_port))
        health_pb2_grpc.add_HealthServicer_to_server(own.health, self.server)
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(own.reflection, self.server)
        self.server.add_generic_rpc_handlers([door])

    async def start(self) -> int:
        """Bind and start; returns the port (the one the OS chose when the config says 0)."""
        host, port = self.listener.host, self.listener.port
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        tls = self.listener.tls
        bound = self.server.add_secure_port(address, server_credentials(tls)) if tls else None
        if bound is None:
            bound = self.server.add_insecure_port(address)
        await self.server.start()
        return int(bound)

    async def stop(self, grace: float) -> None:
        """Health says NOT_SERVING, then in-flight calls get `grace` seconds to finish."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


def server_options(limits: Limits, reuse_port: bool = False) -> list[tuple[str, Any]]:
    """SO_REUSEPORT only under `serve --workers N`, so a second gateway on a taken port fails instead of sharing it."""
    return [
        ("grpc.max_receive_message_length", limits.max_grpc_message),
        ("grpc.max_send_message_length", limits.max_grpc_message),
        ("grpc.so_reuseport", int(reuse_port)),
    ]


def server_credentials(tls: ServerTLS) -> grpc.ServerCredentials:
    """The listener's certificate, read again on the first handshake after its files change."""
    if tls.client_ca is not None and not tls.require_client_cert:
        log.warning("grpc listener: grpc cannot ask for an optional client certificate; set require_client_cert")
    return grpc.dynamic_ssl_server_credentials(
        certificate_configuration(tls), CertificateFetcher(tls), require_client_authentication=tls.require_client_cert
    )


def certificate_configuration(tls: ServerTLS) -> Any:
    key, cert = read_pem(tls.key), read_pem(tls.cert)
    client_ca = read_pem(tls.client_ca) if tls.require_client_cert else None
    return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=client_ca)


class CertificateFetcher:
    """Called by grpc before every handshake: a new configuration when the files changed, else None.

    A new pair is tried with `ssl` first, so a half-written one (new certificate,
    old key) is skipped and the listener keeps the configuration it has until
    the files change again.
    """

    def __init__(self, tls: ServerTLS) -> None:
        self.tls = tls
        self.signature = tls_files_signature(tls)

    def __call__(self) -> Any:
        current = tls_files_signature(self.tls)
        if current == self.signature:
            return None
        self.signature = current
        try:
            server_context(self.tls)
            configuration = certificate_configuration(self.tls)
        except (OSError, ssl.SSLError, ValueError) as error:
            log.warning("grpc listener certificate %s not reloaded (next change retries): %s", self.tls.cert, error)
            return None
        log.info("grpc listener certificate %s reloaded", self.tls.cert)
        return configuration
