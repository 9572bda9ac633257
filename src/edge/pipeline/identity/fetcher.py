"""What the identity stage needs from an HTTP client, and nothing more.

Key sets, OIDC discovery documents and RFC 7662 introspection answers are
small JSON documents fetched over HTTP. The stage depends on this `Fetcher`
protocol; `edge.upstream.fetch.HttpFetcher` implements it with aiohttp, so
nothing under `pipeline/` imports an HTTP library, and tests can stand in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


class FetchError(Exception):
    """The document could not be had: network error, timeout, non-2xx status, not JSON, too large."""


@dataclass(frozen=True, slots=True)
class Fetched:
    status: int
    data: Any
    max_age: float | None = None  # from Cache-Control; 0 for no-store / no-cache; None when absent


class Fetcher(Protocol):
    async def get_json(self, url: str) -> Fetched: ...

    async def post_form(self, url: str, form: Mapping[str, str], headers: Mapping[str, str]) -> Fetched: ...

    async def aclose(self) -> None: ...


class FetcherFactory(Protocol):
    def __call__(self, *, timeout: float, ca: Path | None) -> Fetcher: ...
