"""HTTP upstream client: pooled keep-alive connections, streaming bodies both ways.

One aiohttp `ClientSession` per upstream owns its connection pool. Bodies are
passed through untouched (no decompression, no buffering); hop-by-hop headers
(RFC 9110 7.6.1) are dropped in both directions and the `X-Forwarded-*`
headers set. aiohttp's exceptions are mapped to `EdgeError`s here: a refused
connect tries the next endpoint, then UNAVAILABLE (502); no response headers
within the timeout is DEADLINE_EXCEEDED (504).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import aiohttp

from edge.call import Call, Metadata, MetaValue, Reply
from edge.config.gateway import Upstream as UpstreamConfig
from edge.errors import EdgeError, UpstreamTimeout, UpstreamUnavailable
from edge.tls import client_context
from edge.upstream.endpoints import Endpoints

log = logging.getLogger("edge.upstream.http")

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)
CHUNK = 64 * 1024


def strip_hop_by_hop(headers: Metadata) -> None:
    named = {token.strip().lower() for value in headers.getall("connection") for token in str(value).split(",")}
    drop = HOP_BY_HOP | named
    headers.remove_where(drop.__contains__)


class HttpUpstream:
    def __init__(self, name: str, config: UpstreamConfig) -> None:
        self.name = name
        self.config = config
        self.endpoints = Endpoints(config.endpoints)
        self._origins = {url: urlsplit(url).netloc for url in config.endpoints}
        uses_tls = any(url.startswith("https") for url in config.endpoints)
        self._server_hostname = config.tls.server_name if config.tls else None
        connector = aiohttp.TCPConnector(
            limit=config.max_connections,
            limit_per_host=0,
            keepalive_timeout=config.keepalive,
            ssl=client_context(config.tls) if uses_tls else False,
            ttl_dns_cache=60,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            timeout=aiohttp.ClientTimeout(total=None, connect=config.connect_timeout),
        )

    async def send(self, call: Call) -> Reply:
        timeout = self._timeout(call)
        headers = self._request_headers(call)
        last_error: Exception | None = None
        for url in self.endpoints.order():
            call.endpoint = url
            if not self.config.preserve_host:
                headers["host"] = self._origins[url]
            try:
                response = await self._request(url, call, headers, timeout)
            except aiohttp.ClientConnectorError as error:
                self.endpoints.failed(url)
                last_error = error
                if isinstance(call.body, bytes):
                    continue
                break
            self.endpoints.succeeded(url)
            return self._reply(response)
        log.warning("upstream %s unreachable: %s", self.name, last_error)
        raise UpstreamUnavailable(f"upstream {self.name!r} is unreachable")

    async def _request(self, url: str, call: Call, headers: dict[str, str], seconds: float) -> aiohttp.ClientResponse:
        body = call.body
        try:
            async with asyncio.timeout(seconds):
                return await self._session.request(
                    call.method,
                    url + call.upstream_path,
                    headers=headers,
                    data=body if body or not isinstance(body, bytes) else None,
                    allow_redirects=False,
                    compress=None,
                    server_hostname=self._server_hostname,
                    read_bufsize=CHUNK,
                    timeout=aiohttp.ClientTimeout(total=None, connect=self.config.connect_timeout, sock_read=seconds),
                )
        except aiohttp.ClientConnectorError:
            raise
        except TimeoutError:
            raise UpstreamTimeout(f"upstream {self.name!r} did not answer within {seconds:.3g}s") from None
        except (aiohttp.ClientError, OSError) as error:
            body_error = getattr(body, "error", None)
            if isinstance(body_error, EdgeError):
                raise body_error from None
            raise UpstreamUnavailable(f"upstream {self.name!r} failed: {type(error).__name__}") from None

    def _timeout(self, call: Call) -> float:
        timeout = call.route.timeout if call.route and call.route.timeout else self.config.timeout
        remaining = call.remaining()
        return timeout if remaining is None else max(0.0, min(timeout, remaining))

    def _request_headers(self, call: Call) -> dict[str, str]:
        meta = call.metadata
        strip_hop_by_hop(meta)
        headers: dict[str, str] = {}
        for name, value in meta:
            text = value if isinstance(value, str) else value.decode("latin-1")
            if name in headers:
                headers[name] = f"{headers[name]}, {text}" if name != "cookie" else f"{headers[name]}; {text}"
            else:
                headers[name] = text
        forwarded_for = headers.get("x-forwarded-for")
        headers["x-forwarded-for"] = f"{forwarded_for}, {call.peer.address}" if forwarded_for else call.peer.address
        headers["x-forwarded-proto"] = call.scheme
        headers["x-forwarded-host"] = call.host
        headers["x-request-id"] = call.request_id
        return headers

    def _reply(self, response: aiohttp.ClientResponse) -> Reply:
        headers: list[tuple[str, MetaValue]] = []
        connection_named = {t.strip().lower() for v in response.headers.getall("Connection", ()) for t in v.split(",")}
        for raw_name, raw_value in response.raw_headers:
            name = raw_name.decode("latin-1").lower()
            if name not in HOP_BY_HOP and name not in connection_named:
                headers.append((name, raw_value.decode("latin-1")))
        return Reply(http_status=response.status, headers=headers, body=_stream(response))

    async def aclose(self) -> None:
        await self._session.close()


async def _stream(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.content.iter_chunked(CHUNK):
            yield chunk
    except (aiohttp.ClientError, OSError) as error:
        raise UpstreamUnavailable(f"upstream response broke off: {type(error).__name__}") from None
    finally:
        response.release()
