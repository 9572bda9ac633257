"""HTTP upstream client: pooled keep-alive connections, streaming bodies both ways.

One `OriginPool` (`http1.py`, a lean HTTP/1.1 client) per endpoint owns its
connections. Bodies are passed through untouched (no decompression); a small
response body (`Content-Length` up to 64 KiB) is read whole so the front door
can write it in one go, a larger or chunked one streams. Hop-by-hop headers
(RFC 9110 7.6.1) are dropped in both directions and the `X-Forwarded-*`
headers set. The client's exceptions are mapped to `EdgeError`s here: a
refused connect tries the next endpoint, then UNAVAILABLE (502); no response
headers within the timeout is DEADLINE_EXCEEDED (504).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from urllib.parse import urlsplit

from edge.call import Call, MetaValue, Reply
from edge.config.gateway import Upstream as UpstreamConfig
from edge.deadlines import Deadlines
from edge.errors import EdgeError, UpstreamTimeout, UpstreamUnavailable
from edge.tls import client_context
from edge.upstream.endpoints import Endpoints
from edge.upstream.http1 import HOP_BY_HOP, OriginPool, Response
from edge.upstream.http1_errors import ConnectFailed

log = logging.getLogger("edge.upstream.http")

PLAIN_CONNECTION = frozenset({"keep-alive", "close"})  # `Connection` values that name no other header


def _connection_tokens(values: list[str]) -> set[str]:
    """The header names a `Connection` header lists: hop-by-hop too (RFC 9110 7.6.1)."""
    return {token.strip().lower() for value in values for token in value.split(",")}


class HttpUpstream:
    def __init__(self, name: str, config: UpstreamConfig) -> None:
        self.name = name
        self.config = config
        self.endpoints = Endpoints(config.endpoints)
        self._origins = {url: urlsplit(url).netloc for url in config.endpoints}
        self._base_paths = {url: urlsplit(url).path for url in config.endpoints}
        uses_tls = any(url.startswith("https") for url in config.endpoints)
        context = client_context(config.tls) if uses_tls else None
        server_hostname = config.tls.server_name if config.tls else None
        self._deadlines = Deadlines()
        self._pools: dict[str, OriginPool] = {}
        for url in config.endpoints:
            parts = urlsplit(url)
            secure = parts.scheme == "https"
            self._pools[url] = OriginPool(
                parts.hostname or "localhost",
                parts.port or (443 if secure else 80),
                ssl_context=context if secure else None,
                server_hostname=server_hostname,
                limit=config.max_connections,
                keepalive=config.keepalive,
                connect_timeout=config.connect_timeout,
            )

    async def send(self, call: Call) -> Reply:
        timeout = self._timeout(call)
        headers = self._request_headers(call)
        last_error: Exception | None = None
        for url in self.endpoints.order():
            call.endpoint = url
            if not self.config.preserve_host:
                headers["host"] = self._origins[url]
            body = call.body
            target = self._base_paths[url] + call.upstream_path or "/"
            try:
                with self._deadlines.after(timeout):
                    response = await self._pools[url].request(call.method, target, headers, body, timeout)
            except ConnectFailed as error:
                self.endpoints.failed(url)
                last_error = error
                if isinstance(body, bytes):
                    continue
                break
            except TimeoutError:
                raise UpstreamTimeout(f"upstream {self.name!r} did not answer within {timeout:.3g}s") from None
            except EdgeError:
                raise
            except (OSError, asyncio.IncompleteReadError, ValueError) as error:
                raise self._failure(body, error) from None
            self.endpoints.succeeded(url)
            return self._reply(response)
        log.warning("upstream %s unreachable: %s", self.name, last_error)
        raise UpstreamUnavailable(f"upstream {self.name!r} is unreachable")

    def _failure(self, body: object, error: Exception) -> EdgeError:
        """What a failed exchange means to the caller: the request body's own error, else UNAVAILABLE."""
        body_error = getattr(body, "error", None)
        if isinstance(body_error, EdgeError):
            return body_error
        return UpstreamUnavailable(f"upstream {self.name!r} failed: {type(error).__name__}")

    def _timeout(self, call: Call) -> float:
        timeout = call.route.timeout if call.route and call.route.timeout else self.config.timeout
        remaining = call.remaining()
        return timeout if remaining is None else max(0.0, min(timeout, remaining))

    def _request_headers(self, call: Call) -> dict[str, str]:
        """The caller's headers without hop-by-hop ones, repeated names joined, and the `X-Forwarded-*` set."""
        headers: dict[str, str] = {}
        connection: list[str] = []
        for name, value in call.metadata:
            text = value if isinstance(value, str) else value.decode("latin-1")
            if name in HOP_BY_HOP:
                if name == "connection":
                    connection.append(text)
            elif name in headers:
                headers[name] = f"{headers[name]}, {text}" if name != "cookie" else f"{headers[name]}; {text}"
            else:
                headers[name] = text
        for name in _connection_tokens(connection) if connection else ():
            headers.pop(name, None)
        forwarded_for = headers.get("x-forwarded-for")
        headers["x-forwarded-for"] = f"{forwarded_for}, {call.peer.address}" if forwarded_for else call.peer.address
        headers["x-forwarded-proto"] = call.scheme
        headers["x-forwarded-host"] = call.host
        headers["x-request-id"] = call.request_id
        return headers

    def _reply(self, response: Response) -> Reply:
        kept: Sequence[tuple[str, MetaValue]] = response.headers
        connection = [v for name, v in response.hop if name == "connection" and v.lower() not in PLAIN_CONNECTION]
        if connection:
            named = _connection_tokens(connection)
            kept = [(name, value) for name, value in kept if name not in named]
        return Reply(http_status=response.status, headers=kept, body=response.body)

    async def aclose(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._deadlines.close()
