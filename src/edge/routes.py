"""The route table both front doors resolve calls in: immutable, swapped whole on reload.

Lookup never scans the routes: exact paths are one dict lookup, templates and
prefixes live in segment tries walked once per request segment, gRPC methods
and services in dicts, so 10,000 routes match as fast as 10.

Precedence, most specific first (the first that accepts the method and host wins):
  1. an exact path;
  2. a path template, comparing segment by segment from the left: a literal
     beats `*`/`{var}`, which beats `**`; when the last segment holds a `:`,
     templates with that `:verb` are tried before templates without one;
  3. a prefix, the longest (most segments) first; prefixes match whole
     segments, so `/api` matches `/api` and `/api/x`, never `/apix`.
Among routes with the same pattern: one for an exact host beats one for a
`*.domain` host, which beats one for any host; then one with methods beats
one without; then the order in the file. HEAD is accepted wherever GET is.
gRPC: an exact `/pkg.Service/Method` beats a whole `pkg.Service`.

Paths arrive canonical (`edge.paths.canonical_path`). An encoded slash (`%2F`)
is data only inside a template variable; anywhere else in the path of the
winning route it is a BadRequest, so `/api/a%2Fb` cannot pose as `/api/a/b`.
A template route's rewrite is expanded from the request's canonical segments,
so the upstream sees exactly the bytes the client sent; a prefix route's
rewrite replaces the prefix and keeps the remainder.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from edge.config.routes import RouteSpec, is_template
from edge.errors import BadRequest
from edge.paths import split_segments
from edge.transcode.template import PathTemplate, parse_template

if TYPE_CHECKING:
    from edge.call import Call

RouteKind = Literal["exact", "prefix", "template", "grpc"]
_ENCODED_SLASH = "%2F"
_GRPC_PATH = re.compile(r"/([^/]+)/[^/]+\Z")
_KIND_ORDER = {"exact": 0, "template": 1, "prefix": 2, "grpc": 3}


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    kind: RouteKind
    pattern: str
    upstream: str
    index: int
    methods: frozenset[str] = frozenset()
    host: str | None = None
    rewrite: str | None = None
    operation: str | None = None
    timeout: float | None = None
    template: PathTemplate | None = None
    rewrite_template: PathTemplate | None = None
    spec: RouteSpec | None = field(default=None, compare=False, repr=False)  # per-route settings stages read

    def accepts(self, method: str, host: str) -> bool:
        if self.methods and method not in self.methods and not (method == "HEAD" and "GET" in self.methods):
            return False
        if self.host is None:
            return True
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host

    @property
    def rank(self) -> tuple[int, int, int]:
        """Order among routes with the same pattern: host, then methods, then file order."""
        host = 2 if self.host is None else int(self.host.startswith("*."))
        return (host, not self.methods, self.index)

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "match": self.pattern,
            "methods": sorted(self.methods),
            "host": self.host,
            "upstream": self.upstream,
            "rewrite": self.rewrite,
            "operation": self.operation,
            "timeout": self.timeout,
        }


@dataclass(frozen=True, slots=True)
class Match:
    route: Route
    operation: str
    upstream_path: str
    bindings: Mapping[str, str] = field(default_factory=lambda: NO_BINDINGS)


NO_BINDINGS: Mapping[str, str] = MappingProxyType({})
RECENT_MATCHES = 4096


@dataclass(slots=True)
class _Node:
    literal: dict[str, _Node] = field(default_factory=dict)
    star: _Node | None = None
    routes: dict[str | None, list[Route]] = field(default_factory=dict)
    rest: list[Route] = field(default_factory=list)  # templates ending in `**` here; prefixes ending here

    def child(self, segment: str) -> _Node:
        if segment == "*":
            if self.star is None:
                self.star = _Node()
            return self.star
        return self.literal.setdefault(segment, _Node())

    def sort(self) -> None:
        self.rest.sort(key=_rank)
        for candidates in self.routes.values():
            candidates.sort(key=_rank)
        for child in self.literal.values():
            child.sort()
        if self.star is not None:
            self.star.sort()


class RouteTable:
    """All routes of one routes file, indexed for lookup by either front door."""

    def __init__(self, routes: Iterable[Route] = ()) -> None:
        self.routes: tuple[Route, ...] = tuple(routes)
        self._exact: dict[str, list[Route]] = {}
        self._templates = _Node()
        self._prefixes = _Node()
        self._grpc_methods: dict[str, list[Route]] = {}
        self._grpc_services: dict[str, list[Route]] = {}
        for route in self.routes:
            self._index(route)
        self._templates.sort()
        self._prefixes.sort()
        for table in (self._exact, self._grpc_methods, self._grpc_services):
            for candidates in table.values():
                candidates.sort(key=_rank)
        self._recent: dict[tuple[str, str, str], Match | None] = {}

    @classmethod
    def from_specs(cls, specs: Sequence[RouteSpec]) -> RouteTable:
        return cls(build_route(spec, index) for index, spec in enumerate(specs))

    def _index(self, route: Route) -> None:
        if route.kind == "exact":
            self._exact.setdefault(route.pattern, []).append(route)
        elif route.kind == "grpc":
            table = self._grpc_methods if route.pattern.startswith("/") else self._grpc_services
            table.setdefault(route.pattern, []).append(route)
        elif route.kind == "prefix":
            node = self._prefixes
            for segment in split_segments(_prefix_text(route.pattern)):
                node = node.literal.setdefault(segment, _Node())
            node.rest.append(route)
        else:
            self._index_template(route)

    def _index_template(self, route: Route) -> None:
        assert route.template is not None
        segments = route.template.segments
        double = bool(segments) and segments[-1] == "**"
        node = self._templates
        for segment in segments[:-1] if double else segments:
            node = node.child(segment)
        if double:
            node.rest.append(route)
        else:
            node.routes.setdefault(route.template.verb, []).append(route)

    def match_http(self, method: str, host: str, path: str) -> Match | None:
        """Resolve a canonical path.

        BadRequest for an encoded slash outside a template variable; PathError
        (from `edge.paths`) when a bound variable is not UTF-8 once decoded.
        The last `RECENT_MATCHES` answers are remembered (the table never
        changes, and a lookup costs ~3 us against ~0.1 for a hit); the memory
        is emptied whole when it is full, so a stream of distinct paths costs
        one insert each and never grows it further.
        """
        key = (method, host, path)
        recent = self._recent
        if key in recent:
            return recent[key]
        found = self.resolve_http(method, host, path)
        if len(recent) >= RECENT_MATCHES:
            recent.clear()
        recent[key] = found
        return found

    def resolve_http(self, method: str, host: str, path: str) -> Match | None:
        """`match_http` without the memory of recent answers: the index lookup itself."""
        host = _host_name(host)
        for route in self._exact.get(path, ()):
            if route.accepts(method, host):
                return Match(route, _operation(route), route.rewrite or path)
        segments = split_segments(path)
        found = self._match_template(segments, method, host)
        if found is not None:
            return found
        return self._match_prefix(path, segments, method, host)

    def _match_template(self, segments: list[str], method: str, host: str) -> Match | None:
        if segments and ":" in segments[-1]:
            head, _, verb = segments[-1].rpartition(":")
            found = _walk(self._templates, [*segments[:-1], head], 0, verb, method, host)
            if found is not None:
                return found
        return _walk(self._templates, segments, 0, None, method, host)

    def _match_prefix(self, path: str, segments: list[str], method: str, host: str) -> Match | None:
        node, candidates = self._prefixes, [(self._prefixes, 0)]
        for depth, segment in enumerate(segments, start=1):
            next_node = node.literal.get(segment)
            if next_node is None:
                break
            node = next_node
            candidates.append((node, depth))
        for node, depth in reversed(candidates):
            for route in node.rest:
                if route.accepts(method, host):
                    return Match(route, _operation(route), _prefix_upstream_path(route, path, segments, depth))
        return None

    def match_grpc(self, path: str) -> Match | None:
        """Resolve `/pkg.Service/Method`."""
        shape = _GRPC_PATH.match(path)
        if shape is None:
            return None
        for route in (*self._grpc_methods.get(path, ()), *self._grpc_services.get(shape.group(1), ())):
            return Match(route, path[1:], path)
        return None

    def grpc_services(self) -> list[str]:
        names = set(self._grpc_services)
        names.update(p[1:].partition("/")[0] for p in self._grpc_methods)
        return sorted(names)

    def ordered(self) -> list[Route]:
        """The routes kind by kind in the order lookup tries them, most specific first (for people)."""
        return sorted(self.routes, key=_display_order)


def _walk(node: _Node, segments: list[str], i: int, verb: str | None, method: str, host: str) -> Match | None:
    if i == len(segments):
        for route in node.routes.get(verb, ()):
            found = _bind(route, segments, verb, method, host)
            if found is not None:
                return found
    else:
        for child in (node.literal.get(segments[i]), node.star):
            if child is not None:
                found = _walk(child, segments, i + 1, verb, method, host)
                if found is not None:
                    return found
    for route in node.rest:
        found = _bind(route, segments, verb, method, host)
        if found is not None:
            return found
    return None


def _bind(route: Route, segments: list[str], verb: str | None, method: str, host: str) -> Match | None:
    template = route.template
    assert template is not None
    if not route.accepts(method, host):
        return None
    bindings = template.match(segments, verb)
    if bindings is None:
        return None
    if any(_ENCODED_SLASH in s for s in segments) and _slash_outside_variables(template, segments):
        raise BadRequest("encoded '/' (%2F) is only allowed inside a path template variable")
    return Match(route, _operation(route), _template_upstream_path(route, segments, verb), MappingProxyType(bindings))


def _slash_outside_variables(template: PathTemplate, segments: list[str]) -> bool:
    covered: set[int] = set()
    for binding in template.bindings:
        covered.update(range(binding.start, len(segments) if binding.end is None else binding.end))
    return any(_ENCODED_SLASH in s for i, s in enumerate(segments) if i not in covered)


def _template_upstream_path(route: Route, segments: list[str], verb: str | None) -> str:
    rewrite = route.rewrite_template
    if rewrite is None:
        if route.rewrite is not None:
            return route.rewrite
        path = "/" + "/".join(segments)
        return path if verb is None else f"{path}:{verb}"
    assert route.template is not None
    raw = {b.field: "/".join(segments[b.start : b.end]) for b in route.template.bindings}
    return _expand(rewrite, raw)


def _expand(rewrite: PathTemplate, raw: Mapping[str, str]) -> str:
    """Fill a rewrite template with still-encoded request segments: no decode and re-encode round trip."""
    starts = {binding.start: binding for binding in rewrite.bindings}
    parts: list[str] = []
    index = 0
    while index < len(rewrite.segments):
        binding = starts.get(index)
        if binding is None:
            parts.append(rewrite.segments[index])
            index += 1
            continue
        parts.append(raw.get(binding.field, ""))
        index = len(rewrite.segments) if binding.end is None else binding.end
    path = "/" + "/".join(parts)
    return path if rewrite.verb is None else f"{path}:{rewrite.verb}"


def _prefix_upstream_path(route: Route, path: str, segments: list[str], depth: int) -> str:
    remainder = segments[depth:]
    if any(_ENCODED_SLASH in s for s in remainder):
        raise BadRequest("encoded '/' (%2F) is only allowed inside a path template variable")
    if route.rewrite is None:
        return path
    if not remainder:
        return route.rewrite
    return route.rewrite.rstrip("/") + "/" + "/".join(remainder)


def _operation(route: Route) -> str:
    return route.operation or route.name


def _host_name(host: str) -> str:
    """`Example.COM:8443` -> `example.com`; `[::1]:8443` -> `[::1]`."""
    host = host.lower()
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.rpartition(":")[0].rstrip(".") if ":" in host else host.rstrip(".")


def _rank(route: Route) -> tuple[int, int, int]:
    return route.rank


def _prefix_text(prefix: str) -> str:
    return prefix.rstrip("/") or "/"


def _display_order(route: Route) -> tuple[object, ...]:
    if route.kind == "template" and route.template is not None:
        segments = route.template.segments
        shape = tuple(2 if s == "**" else 1 if s == "*" else 0 for s in segments)
        return (_KIND_ORDER["template"], route.template.verb is None, shape, route.pattern, route.rank)
    if route.kind == "prefix":
        return (_KIND_ORDER["prefix"], -len(split_segments(_prefix_text(route.pattern))), route.pattern, route.rank)
    if route.kind == "grpc":
        return (_KIND_ORDER["grpc"], not route.pattern.startswith("/"), route.pattern, route.rank)
    return (_KIND_ORDER[route.kind], route.pattern, route.rank)


def build_route(spec: RouteSpec, index: int) -> Route:
    m = spec.match
    kind: RouteKind
    template = rewrite_template = None
    if m.grpc is not None:
        kind, pattern = "grpc", m.grpc
    elif m.prefix is not None:
        kind, pattern = "prefix", m.prefix
    elif m.path is not None and is_template(m.path):
        kind, pattern, template = "template", m.path, parse_template(m.path)
        if spec.rewrite and "{" in spec.rewrite:
            rewrite_template = parse_template(spec.rewrite)
    else:
        kind, pattern = "exact", m.path or "/"
    return Route(
        name=spec.display_name,
        kind=kind,
        pattern=pattern,
        upstream=spec.upstream,
        index=index,
        methods=frozenset(m.methods),
        host=m.host,
        rewrite=spec.rewrite,
        operation=spec.operation,
        timeout=spec.timeout,
        template=template,
        rewrite_template=rewrite_template,
        spec=spec,
    )


def route_http_call(table: RouteTable, call: Call) -> None:
    """Resolve an HTTP call and fill in its route, bindings, operation and upstream path (with the query).

    Raises BadRequest for an encoded slash outside a template variable; leaves
    `call.route` None when nothing matches.
    """
    match = table.match_http(call.method, call.host, call.path)
    if match is None:
        return
    call.route = match.route
    call.bindings = match.bindings
    call.decisions["operation"] = match.operation
    call.upstream_path = f"{match.upstream_path}?{call.query}" if call.query else match.upstream_path


class LiveTable:
    """The table being served; reload swaps it whole, and a call keeps the one it started with."""

    def __init__(self, table: RouteTable) -> None:
        self.current = table
        self.generation = 1

    def swap(self, table: RouteTable) -> None:
        self.current = table
        self.generation += 1
