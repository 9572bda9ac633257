"""The models of the routes file, including the seed's shorthand.

A route is a match (exact path, prefix, path template or gRPC service/method,
optionally methods and host), an upstream (a name from `edge.yaml` or a URL),
and per-route settings. Everything `edge.routes.build_route` needs is checked
here, so building the table never fails on a validated file.

An upstream URL's path is the route's rewrite: `upstream:
http://svc:7100/ballots` is `upstream: http://svc:7100` plus `rewrite:
/ballots`; a URL without a path (or with just `/`) forwards the request path
unchanged. The seed's shorthand `"/v1/voting/ballots":
http://election-svc:7100/ballots` is expanded into the same model: a prefix
route (a template route when the key has `{` or `*`), named by its key, the
URL as upstream. It is accepted as a top-level mapping, under `routes:` as a
mapping, and as list items; a mapping value (`"/v1/x": {upstream: a,
timeout: 5s}`) adds settings to the match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from edge.config.base import Duration, Frozen
from edge.config.gateway import UPSTREAM_SCHEMES
from edge.config.identity import RouteAuth
from edge.config.policy import RoutePolicy
from edge.config.quota import RouteQuota
from edge.paths import PathError, canonical_path
from edge.transcode.template import PathTemplate, TemplateError, parse_template

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_GRPC_SERVICE = re.compile(rf"{_IDENT}(?:\.{_IDENT})+\Z")
_GRPC_METHOD = re.compile(rf"{_IDENT}\Z")
_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_HOST = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*\Z|\[[0-9a-f:.]+\]\Z")
_ENCODED_SLASH = "%2F"


def is_template(path: str) -> bool:
    return "{" in path or "*" in path


def _template(text: str) -> PathTemplate:
    try:
        template = parse_template(text)
    except TemplateError as error:
        raise ValueError(f"bad path template: {error}") from None
    if any(_ENCODED_SLASH in part for part in (*template.segments, template.verb or "")):
        raise ValueError(f"expected no encoded '/' (%2F) in a literal segment (got {text!r})")
    return template


def _literal_path(text: str) -> str:
    if "?" in text or "#" in text:
        raise ValueError(f"expected a path without query or fragment (got {text!r})")
    try:
        path = canonical_path(text)
    except PathError as error:
        raise ValueError(f"expected a valid path: {error} (got {text!r})") from None
    if _ENCODED_SLASH in path:
        raise ValueError(f"expected no encoded '/' (%2F): it is never matched outside a variable (got {text!r})")
    return path


def _starts_with_slash(value: str) -> None:
    if not value.startswith("/"):
        raise ValueError(f"expected a path starting with '/' (got {value!r})")


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
        if self.grpc is not None and (self.methods or self.host):
            raise ValueError("methods and host apply to HTTP routes, not to grpc ones")
        return self

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is None:
            return None
        _starts_with_slash(value)
        if is_template(value):
            _template(value)
            return value
        return _literal_path(value)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        if value is None:
            return None
        _starts_with_slash(value)
        if is_template(value):
            raise ValueError(
                f"expected a literal prefix; use path: for a template such as /v1/{{x}}/** (got {value!r})"
            )
        return _literal_path(value)

    @field_validator("grpc")
    @classmethod
    def _grpc_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        service, slash, method = value.removeprefix("/").partition("/")
        if not _GRPC_SERVICE.match(service) or (slash and not _GRPC_METHOD.match(method)):
            raise ValueError(f"expected pkg.Service or /pkg.Service/Method (got {value!r})")
        if value.startswith("/") and not slash:
            raise ValueError(f"expected pkg.Service or /pkg.Service/Method (got {value!r})")
        return f"/{service}/{method}" if slash else service

    @field_validator("methods")
    @classmethod
    def _methods(cls, methods: tuple[str, ...]) -> tuple[str, ...]:
        upper = tuple(dict.fromkeys(m.upper() for m in methods))
        unknown = [m for m in upper if m not in HTTP_METHODS]
        if unknown:
            raise ValueError(f"expected HTTP methods such as GET, POST (got {unknown[0]!r})")
        return upper

    @field_validator("host")
    @classmethod
    def _host(cls, host: str | None) -> str | None:
        if host is None:
            return None
        name = host.lower().rstrip(".")
        if not _HOST.match(name):
            raise ValueError(f"expected a host name such as api.example.com or *.example.com, no port (got {host!r})")
        return name


class RouteSpec(Frozen):
    name: str | None = None
    match: RouteMatch
    rewrite: str | None = None
    upstream: str = Field(description="an upstream name from edge.yaml, or a URL such as http://host:port/base")
    operation: str | None = None
    timeout: Duration | None = None
    regulated: bool = Field(default=False, description="refuse calls (503) while the audit trail cannot take them")
    quota: RouteQuota | None = None
    policy: RoutePolicy | None = None
    auth: RouteAuth | None = None

    @model_validator(mode="before")
    @classmethod
    def _url_path_is_rewrite(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("rewrite") is not None:
            return data
        upstream = data.get("upstream")
        if not (isinstance(upstream, str) and "://" in upstream):
            return data
        try:
            parts = urlsplit(upstream)
        except ValueError:
            return data
        if parts.scheme not in UPSTREAM_SCHEMES or parts.path in ("", "/"):
            return data
        return {**data, "upstream": parts._replace(path="").geturl(), "rewrite": parts.path}

    @field_validator("rewrite")
    @classmethod
    def _rewrite(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        match = info.data.get("match")
        if isinstance(match, RouteMatch) and match.grpc is not None:
            raise ValueError("rewrite applies to HTTP routes, not to grpc ones")
        _starts_with_slash(value)
        if not is_template(value):
            return _literal_path(value)
        _check_rewrite_template(_template(value), match)
        return value

    @field_validator("upstream")
    @classmethod
    def _upstream(cls, value: str) -> str:
        if "://" not in value:
            if not value.strip():
                raise ValueError("expected an upstream name from edge.yaml or a URL such as http://host:port")
            return value
        parts = _split_url(value)
        if parts.path not in ("", "/"):
            raise ValueError(f"expected the path in one place: the upstream URL or rewrite, not both (got {value!r})")
        return f"{parts.scheme}://{parts.netloc}"

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: float | None) -> float | None:
        if value == 0:
            raise ValueError("expected a duration above 0, such as 5s")
        return value

    @property
    def display_name(self) -> str:
        if self.name:
            return self.name
        m = self.match
        target = f"{m.host or ''}{m.path or m.prefix or m.grpc or ''}"
        return f"{','.join(m.methods)} {target}".strip()


def _split_url(url: str) -> SplitResult:
    hint = f"expected an upstream name or a URL such as http://host:port (got {url!r})"
    try:
        parts = urlsplit(url)
        port_ok = parts.port is not None or not parts.netloc.rpartition("]")[2].count(":")
    except ValueError:
        raise ValueError(hint) from None
    if parts.scheme not in UPSTREAM_SCHEMES or not parts.hostname or not port_ok or parts.username is not None:
        raise ValueError(hint)
    if parts.query or parts.fragment:
        raise ValueError(f"expected a URL without query or fragment (got {url!r})")
    return parts


def _check_rewrite_template(rewrite: PathTemplate, match: RouteMatch | None) -> None:
    covered = {i for b in rewrite.bindings for i in range(b.start, len(rewrite.segments) if b.end is None else b.end)}
    if any(s in ("*", "**") and i not in covered for i, s in enumerate(rewrite.segments)):
        raise ValueError(f"expected '*' and '**' only inside a {{variable}} in a rewrite (got {rewrite.source!r})")
    if match is None:
        return
    bound = [b.field for b in parse_template(match.path).bindings] if match.path and is_template(match.path) else []
    unbound = [b.field for b in rewrite.bindings if b.field not in bound]
    if unbound:
        binds = f"binds {', '.join(bound)}" if bound else "binds no variables"
        raise ValueError(f"expected variables the match binds: {{{unbound[0]}}} is not bound (the match {binds})")


class RoutesFile(Frozen):
    routes: tuple[RouteSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class Written:
    """Where a shorthand entry was written, so its errors point there, not at the expanded form.

    `whole` is set when the value was a URL: every problem is then about the entry as a whole.
    """

    loc: tuple[str | int, ...]
    whole: bool


def expand_shorthand(data: Any) -> tuple[Any, dict[int, Written]]:
    """Turn the seed's `"/path": url` entries into full route mappings; leave the rest alone.

    Returns the expanded document and, by index in the expanded `routes`, where each shorthand entry was written.
    """
    if not isinstance(data, dict):
        return data, {}
    if "routes" not in data and any(isinstance(k, str) and k.startswith("/") for k in data):
        return _expand_mapping(data, ())
    routes = data.get("routes")
    if isinstance(routes, dict):
        expanded, where = _expand_mapping(routes, ("routes",))
        return {**data, **expanded}, where
    if not isinstance(routes, list):
        return data, {}
    written: dict[int, Written] = {}
    entries = []
    for index, entry in enumerate(routes):
        if isinstance(entry, dict) and len(entry) == 1 and _is_path_key(next(iter(entry))):
            ((key, value),) = entry.items()
            entries.append(_expand_entry(key, value))
            written[index] = Written(("routes", index, key), not isinstance(value, dict))
        else:
            entries.append(entry)
    return {**data, "routes": entries}, written


def _expand_mapping(mapping: dict[Any, Any], loc: tuple[str, ...]) -> tuple[dict[str, Any], dict[int, Written]]:
    entries = [_expand_entry(key, value) for key, value in mapping.items()]
    written = {
        i: Written((*loc, str(key)), not isinstance(value, dict)) for i, (key, value) in enumerate(mapping.items())
    }
    return {"routes": entries}, written


def _is_path_key(key: Any) -> bool:
    return isinstance(key, str) and key.startswith("/")


def _expand_entry(key: Any, value: Any) -> dict[str, Any]:
    kind = "path" if isinstance(key, str) and is_template(key) else "prefix"
    if not isinstance(value, dict):
        return {"name": str(key), "match": {kind: key}, "upstream": value}
    spec: dict[str, Any] = {"name": str(key), **value}
    match = spec.get("match", {})
    spec["match"] = {kind: key, **match} if isinstance(match, dict) else match
    return spec
