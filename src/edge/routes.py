"""The route table both front doors resolve calls in: immutable, swapped whole on reload.

Lookup never scans the routes: exact paths are one dict lookup, templates and
prefixes live in segment tries, gRPC methods and services in dicts, so 10,000
routes match as fast as 10.

Precedence, most specific first (the first that accepts the method and host wins):
  1. an exact path;
  2. a path template, comparing segment by segment from the left: a literal
     beats `*`/`{var}`, which beats `**`; a template with a `:verb` beats one without;
  3. a prefix, the longest (most segments) first; prefixes match whole
     segments, so `/api` matches `/api` and `/api/x`, never `/apix`.
Among routes with the same pattern: one with a host beats one without, one
with methods beats one without, then the order in the file. HEAD is accepted
wherever GET is. gRPC: an exact `/pkg.Service/Method` beats a whole `pkg.Service`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from edge.config.routes import RouteSpec
from edge.errors import BadRequest
from edge.paths import split_segments
from edge.transcode.template import PathTemplate, parse_template

RouteKind = Literal["exact", "prefix", "template", "grpc"]


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
        return (self.host is None, not self.methods, self.index)

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "match": self.pattern,
            "methods": sorted(self.methods),
            "host": self.host,
            "upstream": self.upstream,
            "rewrite": self.rewrite,
            "timeout": self.timeout,
        }


@dataclass(frozen=True, slots=True)
class Match:
    route: Route
    operation: str
    upstream_path: str
    bindings: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Node:
    literal: dict[str, _Node] = field(default_factory=dict)
    star: _Node | None = None
    routes: dict[str | None, list[Route]] = field(default_factory=dict)
    rest: list[Route] = field(default_factory=list)  # templates ending in ** here (prefixes too)

    def child(self, segment: str) -> _Node:
        if segment == "*":
            if self.star is None:
                self.star = _Node()
            return self.star
        return self.literal.setdefault(segment, _Node())


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
        self._sort(self._templates)
        self._sort(self._prefixes)
        for table in (self._exact, self._grpc_methods, self._grpc_services):
            for candidates in table.values():
                candidates.sort(key=_rank)

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
            for segment in _prefix_segments(route.pattern):
                node = node.literal.setdefault(segment, _Node())
            node.rest.append(route)
        else:
            assert route.template is not None
            node = self._templates
            segments = route.template.segments
            for segment in segments[:-1] if segments and segments[-1] == "**" else segments:
                node = node.child(segment)
            if segments and segments[-1] == "**":
                node.rest.append(route)
            else:
                node.routes.setdefault(route.template.verb, []).append(route)

    def _sort(self, node: _Node) -> None:
        node.rest.sort(key=_rank)
        for candidates in node.routes.values():
            candidates.sort(key=_rank)
        for child in node.literal.values():
            self._sort(child)
        if node.star is not None:
            self._sort(node.star)

    def match_http(self, method: str, host: str, path: str) -> Match | None:
        """Resolve a canonical path; BadRequest for an encoded slash outside a template variable."""
        host = host.rsplit(":", 1)[0].lower() if host and not host.endswith("]") else host.lower()
        for route in self._exact.get(path, ()):
            if route.accepts(method, host):
                return self._finish(route, path, {}, 0)
        segments = split_segments(path)
        found = self._match_template(segments, method, host)
        if found is not None:
            route, bindings = found
            return self._finish(route, path, bindings, 0)
        node, depth, best = self._prefixes, 0, []
        for segment in segments:
            if node.rest:
                best.append((node, depth))
            next_node = node.literal.get(segment)
            if next_node is None:
                break
            node, depth = next_node, depth + 1
        else:
            if node.rest:
                best.append((node, depth))
        for node, depth in reversed(best):
            for route in node.rest:
                if route.accepts(method, host):
                    return self._finish(route, path, {}, depth)
        return None

    def _match_template(self, segments: list[str], method: str, host: str) -> tuple[Route, dict[str, str]] | None:
        if segments and ":" in segments[-1]:
            head, _, verb = segments[-1].rpartition(":")
            found = _walk(self._templates, [*segments[:-1], head], 0, verb, method, host)
            if found is not None:
                return found
        return _walk(self._templates, segments, 0, None, method, host)

    def match_grpc(self, path: str) -> Match | None:
        """Resolve `/pkg.Service/Method`."""
        for route in self._grpc_methods.get(path, ()):
            return Match(route, path[1:], path)
        service = path[1:].partition("/")[0]
        for route in self._grpc_services.get(service, ()):
            return Match(route, path[1:], path)
        return None

    def grpc_services(self) -> list[str]:
        names = set(self._grpc_services)
        names.update(p[1:].partition("/")[0] for p in self._grpc_methods)
        return sorted(names)

    @staticmethod
    def _finish(route: Route, path: str, bindings: dict[str, str], prefix_depth: int) -> Match:
        if route.kind == "prefix":
            rest = (
                "/" + "/".join(split_segments(path)[prefix_depth:]) if prefix_depth < len(split_segments(path)) else ""
            )
            if "%2F" in rest:
                raise BadRequest("encoded '/' (%2F) is only allowed inside a path template variable")
            base = route.rewrite if route.rewrite is not None else _prefix_text(route.pattern)
            upstream_path = (base.rstrip("/") + rest) or "/"
        elif route.rewrite_template is not None:
            upstream_path = route.rewrite_template.expand(bindings)
        else:
            upstream_path = route.rewrite or path
        return Match(route, route.operation or route.name, upstream_path, bindings)


def _walk(
    node: _Node, segments: list[str], i: int, verb: str | None, method: str, host: str
) -> tuple[Route, dict[str, str]] | None:
    if i == len(segments):
        for route in node.routes.get(verb, ()):
            if route.accepts(method, host):
                return _bind(route, segments, verb)
    else:
        child = node.literal.get(segments[i])
        if child is not None:
            found = _walk(child, segments, i + 1, verb, method, host)
            if found is not None:
                return found
        if node.star is not None:
            found = _walk(node.star, segments, i + 1, verb, method, host)
            if found is not None:
                return found
    for route in node.rest:
        if route.accepts(method, host) and (route.template is None or route.template.verb == verb):
            return _bind(route, segments, verb)
    return None


def _bind(route: Route, segments: list[str], verb: str | None) -> tuple[Route, dict[str, str]] | None:
    assert route.template is not None
    bindings = route.template.match(segments, verb)
    if bindings is None:
        return None
    covered: set[int] = set()
    for binding in route.template.bindings:
        covered.update(range(binding.start, len(segments) if binding.end is None else binding.end))
    if any("%2F" in s for i, s in enumerate(segments) if i not in covered):
        raise BadRequest("encoded '/' (%2F) is only allowed inside a path template variable")
    return route, bindings


def _rank(route: Route) -> tuple[int, int, int]:
    return route.rank


def _prefix_segments(prefix: str) -> list[str]:
    return split_segments(_prefix_text(prefix))


def _prefix_text(prefix: str) -> str:
    return prefix.rstrip("/") or "/"


def build_route(spec: RouteSpec, index: int) -> Route:
    m = spec.match
    kind: RouteKind
    template = rewrite_template = None
    if m.grpc is not None:
        kind, pattern = "grpc", m.grpc
    elif m.prefix is not None:
        kind, pattern = "prefix", m.prefix
    elif m.path is not None and any(c in m.path for c in "{*"):
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
    )


class LiveTable:
    """The table being served; reload swaps it whole, and a call keeps the one it started with."""

    def __init__(self, table: RouteTable) -> None:
        self.current = table
        self.generation = 1

    def swap(self, table: RouteTable) -> None:
        self.current = table
        self.generation += 1
