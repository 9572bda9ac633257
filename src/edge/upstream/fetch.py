"""The small async HTTP client behind identity's `Fetcher`: JWKS, discovery, introspection.

One aiohttp session per fetcher, created on first use inside the running
loop; every request is bounded by a total timeout and a body size limit, and
aiohttp's errors become `FetchError` here, where they enter. Redirects are not
followed: a key set URL that moves is a configuration change, not something
an attacker who controls a redirect should get to decide.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

from edge.pipeline.identity.fetcher import Fetched, FetchError

MAX_DOCUMENT = 1024 * 1024


def parse_max_age(cache_control: str | None) -> float | None:
    """Seconds a response may be cached for, from `Cache-Control` (0 for no-store / no-cache)."""
    if not cache_control:
        return None
    found: float | None = None
    for directive in cache_control.lower().split(","):
        name, _, value = directive.strip().partition("=")
        if name in ("no-store", "no-cache"):
            return 0.0
        if name == "max-age":
            try:
                found = max(0.0, float(int(value.strip().strip('"'))))
            except ValueError:
                continue
    return found


class HttpFetcher:
    def __init__(self, *, timeout: float, ca: Path | None = None, max_bytes: int = MAX_DOCUMENT) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._ssl = ssl.create_default_context(cafile=ca) if ca is not None else True
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                cookie_jar=aiohttp.DummyCookieJar(),
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=8),
            )
        return self._session

    async def get_json(self, url: str) -> Fetched:
        return await self._fetch("GET", url, headers={"accept": "application/json"})

    async def post_form(self, url: str, form: Mapping[str, str], headers: Mapping[str, str]) -> Fetched:
        return await self._fetch("POST", url, headers={"accept": "application/json", **headers}, data=dict(form))

    async def _fetch(self, method: str, url: str, **kwargs: Any) -> Fetched:
        try:
            async with self._client().request(method, url, allow_redirects=False, **kwargs) as response:
                body = await response.content.read(self.max_bytes + 1)
                if len(body) > self.max_bytes:
                    raise FetchError(f"{url}: answer is larger than {self.max_bytes} bytes")
                if not 200 <= response.status < 300:
                    raise FetchError(f"{url}: HTTP {response.status}")
                max_age = parse_max_age(response.headers.get("cache-control"))
                status = response.status
        except (aiohttp.ClientError, OSError) as error:
            raise FetchError(f"{url}: {type(error).__name__}: {error}") from None
        except TimeoutError:
            raise FetchError(f"{url}: no answer within {self.timeout:.3g}s") from None
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            raise FetchError(f"{url}: answer is not JSON") from None
        return Fetched(status, data, max_age)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
