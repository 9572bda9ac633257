"""The models of the routes file, including the seed's shorthand.

A route is a match (exact path, prefix, path template or gRPC service/method,
optionally methods and host), an upstream (a name from `edge.yaml` or a URL),
and per-route settings. The shorthand `"/v1/voting/ballots":
http://election-svc:7100/ballots` is expanded here into the same model: a
prefix route (a template route when the key has `{`), the URL's origin as
upstream and its path as the rewrite.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from edge.config.base import Duration, Frozen
from edge.config.gateway import UPSTREAM_SCHEMES
from edge.transcode.template import TemplateError, parse_template

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})


class RouteMatch(Frozen):
    path: str | None = Field(default=None, description="exact path, or a template when it holds {var} or *")
    prefix: str | None = None
    grpc: str | None = Field(default=None, description="pkg.Service or /pkg.Service/Method")
    methods: tuple[str, ...] = ()
    host: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> RouteMatch:
        kinds = [k for k in ("path", "prefix", "grpc") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"expected exactly one of path, prefix, grpc (got {', '.join(kinds) or 'none'})")
        if self.grpc is not None and self.methods:
            raise ValueError("methods apply to HTTP routes, not to grpc ones")
        return self

    @field_validator("path", "prefix")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"expected a path starting with '/' (got {value!r})")
        if value is not None and any(c in value for c in "{*"):
            try:
                parse_template(value)
            except TemplateError as error:
                raise ValueError(f"bad path template: {error}") from None
        return value

    @field_validator("grpc")
    @classmethod
    def _grpc_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        service, _, method = value.lstrip("/").partition("/")
        if not service or "." not in service or (value.startswith("/") and not method):
            raise ValueError(f"expected pkg.Service or /pkg.Service/Method (got {value!r})")
        return value

    @field_validator("methods")
    @classmethod
    def _methods(cls, methods: tuple[str, ...]) -> tuple[str, ...]:
        upper = tuple(m.upper() for m in methods)
        unknown = [m for m in upper if m not in HTTP_METHODS]
        if unknown:
            raise ValueError(f"unknown HTTP method {unknown[0]!r}")
        return upper

    @field_validator("host")
    @classmethod
    def _host(cls, host: str | None) -> str | None:
        return host.lower() if host else host


class RouteSpec(Frozen):
    name: str | None = None
    match: RouteMatch
    upstream: str = Field(description="an upstream name from edge.yaml, or a URL such as http://host:port/base")
    rewrite: str | None = None
    operation: str | None = None
    timeout: Duration | None = None

    @field_validator("rewrite")
    @classmethod
    def _rewrite(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"expected a path starting with '/' (got {value!r})")
        return value

    @model_validator(mode="after")
    def _url_upstream(self) -> RouteSpec:
        if "://" in self.upstream:
            parts = urlsplit(self.upstream)
            if parts.scheme not in UPSTREAM_SCHEMES or not parts.hostname:
                raise ValueError(f"upstream: expected a name or a URL such as http://host:port (got {self.upstream!r})")
        return self

    @property
    def display_name(self) -> str:
        if self.name:
            return self.name
        m = self.match
        target = m.path or m.prefix or m.grpc or ""
        return f"{','.join(m.methods)} {target}".strip()


class RoutesFile(Frozen):
    routes: tuple[RouteSpec, ...] = ()


def expand_shorthand(data: Any) -> Any:
    """Turn the seed's `"/path": url` entries into full route mappings; leave the rest alone."""
    if (
        isinstance(data, dict)
        and "routes" not in data
        and data
        and all(isinstance(k, str) and k.startswith("/") for k in data)
    ):
        data = {"routes": data}
    if not isinstance(data, dict):
        return data
    routes = data.get("routes")
    if isinstance(routes, dict):
        routes = [{key: value} for key, value in routes.items()]
    if isinstance(routes, list):
        routes = [_expand_entry(entry) for entry in routes]
    return {**data, "routes": routes}


def _expand_entry(entry: Any) -> Any:
    if not (isinstance(entry, dict) and len(entry) == 1):
        return entry
    ((key, value),) = entry.items()
    if not (isinstance(key, str) and key.startswith("/")):
        return entry
    if isinstance(value, str):
        parts = urlsplit(value)
        origin = f"{parts.scheme}://{parts.netloc}" if parts.netloc else value
        spec: dict[str, Any] = {"name": key, "upstream": origin}
        if parts.path not in ("", "/") or "{" in key:
            spec["rewrite"] = parts.path or "/"
    elif isinstance(value, dict):
        spec = {"name": key, **value}
    else:
        return entry
    kind = "path" if any(c in key for c in "{*") else "prefix"
    spec["match"] = {kind: key, **spec.get("match", {})}
    return spec
