"""gRPC upstream client: one long-lived channel per endpoint, raw message bytes both ways.

A unary call the front door knows as such (`Call.unary`, from the protos
registry) goes out as a unary call with its one message, the cheapest kind in
grpc.aio (about half the cost of a stream per call, scripts/bench). Every
other call goes out as a bidirectional stream (`channel.stream_stream` with no
serializers), which carries all four call kinds faithfully on the wire: the
request messages flow from the caller as they arrive, the response messages
flow back as the backend sends them. `send` returns once the backend's initial
metadata is in; a gRPC call's ending (status, message, trailing metadata) is
known only after the last message, so the reply's body iterator fills in
`Reply.status`, `message` and `trailers` when it is exhausted.

A backend's own status passes through unchanged. What the gateway detects
itself is mapped to `EdgeError`s here: no endpoint accepting connections is
UNAVAILABLE, a deadline already spent is DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import grpc
from grpc import aio

from edge.call import Body, Call, Reply
from edge.config.gateway import Limits, UpstreamTLS
from edge.config.gateway import Upstream as UpstreamConfig
from edge.errors import Status, UpstreamTimeout, UpstreamUnavailable, http_status
from edge.tls import read_pem
from edge.upstream import NO_MESSAGES
from edge.upstream.endpoints import Endpoints
from edge.upstream.grpc_metadata import request_metadata, response_metadata

log = logging.getLogger("edge.upstream.grpc")

STATUSES = {code: Status(code.value[0]) for code in grpc.StatusCode}
RECONNECT_BACKOFF_MS = 5000
METHOD_CACHE_SIZE = 4096
READY = grpc.ChannelConnectivity.READY

Multicallable = Any  # grpc.aio.StreamStreamMultiCallable; grpc ships no type information


class GrpcUpstream:
    def __init__(self, name: str, config: UpstreamConfig, limits: Limits) -> None:
        self.name = name
        self.config = config
        self.endpoints = Endpoints(config.endpoints)
        options = channel_options(config, limits)
        self._channels: dict[str, aio.Channel] = {
            url: open_channel(url, config.tls, options) for url in config.endpoints
        }
        self._methods: dict[tuple[str, str], Multicallable] = {}

    async def send(self, call: Call) -> Reply:
        seconds = self._timeout(call)
        if seconds <= 0:
            raise UpstreamTimeout("the caller's deadline passed before the call reached the upstream")
        deadline = time.monotonic() + seconds
        url = await self._pick(deadline)
        call.endpoint = url
        if call.unary and isinstance(call.body, bytes):
            return await self._unary(url, call, deadline)
        rpc = self._method(url, call.upstream_path or call.path)(
            _requests(call.body), metadata=request_metadata(call), timeout=max(deadline - time.monotonic(), 0.0)
        )
        try:
            headers = await rpc.initial_metadata()
        except BaseException:
            rpc.cancel()
            raise
        reply = Reply(headers=response_metadata(headers))
        reply.body = _messages(rpc, reply)
        return reply

    async def _unary(self, url: str, call: Call, deadline: float) -> Reply:
        """One message out, at most one back; the reply is complete when this returns."""
        assert isinstance(call.body, bytes)
        rpc = self._unary_method(url, call.upstream_path or call.path)(
            call.body, metadata=request_metadata(call), timeout=max(deadline - time.monotonic(), 0.0)
        )
        try:
            message: bytes | None = await rpc
        except aio.AioRpcError:
            message = None
        except BaseException:
            rpc.cancel()
            raise
        status = STATUSES[await rpc.code()]
        return Reply(
            http_status=http_status(status),
            headers=response_metadata(await rpc.initial_metadata()),
            body=message if message is not None else NO_MESSAGES,
            status=status,
            message=await rpc.details() or "",
            trailers=response_metadata(await rpc.trailing_metadata()),
        )

    def _unary_method(self, url: str, path: str) -> Multicallable:
        key = (url, "unary:" + path)
        method = self._methods.get(key)
        if method is None:
            if len(self._methods) >= METHOD_CACHE_SIZE:
                self._methods.clear()
            method = self._methods[key] = self._channels[url].unary_unary(path)
        return method

    def _timeout(self, call: Call) -> float:
        timeout = call.route.timeout if call.route and call.route.timeout else self.config.timeout
        remaining = call.remaining()
        return timeout if remaining is None else min(timeout, remaining)

    async def _pick(self, deadline: float) -> str:
        """The first endpoint whose channel is ready, or becomes ready within the connect timeout."""
        for url in self.endpoints.order():
            left = deadline - time.monotonic()
            channel = self._channels[url]
            state = channel.get_state(try_to_connect=True)
            if state is not READY:
                state = await _settle(channel, state, min(left, self.config.connect_timeout))
            if state is READY:
                self.endpoints.succeeded(url)
                return url
            if state is None and left <= self.config.connect_timeout:
                raise UpstreamTimeout(f"upstream {self.name!r}: the deadline passed while connecting")
            self.endpoints.failed(url)
        log.warning("upstream %s: no endpoint accepts connections", self.name)
        raise UpstreamUnavailable(f"upstream {self.name!r} is unreachable")

    def _method(self, url: str, path: str) -> Multicallable:
        key = (url, path)
        method = self._methods.get(key)
        if method is None:
            if len(self._methods) >= METHOD_CACHE_SIZE:
                self._methods.clear()
            method = self._methods[key] = self._channels[url].stream_stream(path)
        return method

    async def aclose(self) -> None:
        for channel in self._channels.values():
            await channel.close()


async def _settle(
    channel: aio.Channel, state: grpc.ChannelConnectivity, budget: float
) -> grpc.ChannelConnectivity | None:
    """From `state` (not READY, connecting if it was idle), wait for READY or a failure; None when `budget` runs out."""
    unsettled = (grpc.ChannelConnectivity.IDLE, grpc.ChannelConnectivity.CONNECTING)
    try:
        async with asyncio.timeout(max(budget, 0.0)):
            while state in unsettled:
                await channel.wait_for_state_change(state)
                state = channel.get_state(try_to_connect=True)
    except TimeoutError:
        return None
    return state


def channel_options(config: UpstreamConfig, limits: Limits) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", limits.max_grpc_message),
        ("grpc.max_send_message_length", limits.max_grpc_message),
        ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MS),
    ]
    keepalive = config.grpc_keepalive
    if keepalive is not None:
        options += [
            ("grpc.keepalive_time_ms", int(keepalive.time * 1000)),
            ("grpc.keepalive_timeout_ms", int(keepalive.timeout * 1000)),
            ("grpc.keepalive_permit_without_calls", int(keepalive.without_calls)),
        ]
    if config.tls is not None and config.tls.server_name:
        options.append(("grpc.ssl_target_name_override", config.tls.server_name))
    return options


def open_channel(url: str, tls: UpstreamTLS | None, options: list[tuple[str, Any]]) -> aio.Channel:
    """`grpc://host:port` is plaintext; `grpcs://` is TLS, mutual when a client certificate is configured."""
    parts = urlsplit(url)
    target = parts.netloc
    if parts.scheme != "grpcs":
        return aio.insecure_channel(target, options=options)
    return aio.secure_channel(target, channel_credentials(tls), options=options)


def channel_credentials(tls: UpstreamTLS | None) -> grpc.ChannelCredentials:
    if tls is None:
        return grpc.ssl_channel_credentials()
    return grpc.ssl_channel_credentials(
        root_certificates=read_pem(tls.ca), private_key=read_pem(tls.key), certificate_chain=read_pem(tls.cert)
    )


async def _requests(body: Body) -> AsyncIterator[bytes]:
    if isinstance(body, bytes):
        yield body
        return
    async for message in body:
        yield message


async def _messages(rpc: Any, reply: Reply) -> AsyncIterator[bytes]:
    """The backend's messages; once they end, the call's status and trailers go into `reply`."""
    try:
        while (message := await rpc.read()) is not aio.EOF:
            yield message
    except aio.AioRpcError:
        pass
    finally:
        if not rpc.done():
            rpc.cancel()
    reply.status = STATUSES[await rpc.code()]
    reply.http_status = http_status(reply.status)
    reply.message = await rpc.details() or ""
    reply.trailers = response_metadata(await rpc.trailing_metadata())
