"""Read, interpolate and validate the config files, once, at load.

Every problem becomes one line `file: dotted.key: what was expected`, and all
of them are reported together, so `edge check` lists everything wrong in one
run: the routes file is read and checked even when `edge.yaml` has errors, as
long as its name can be told (the `routes_file` value, else the default).
`${VAR}` and `${VAR:-default}` in string values are replaced from the
environment (for secrets; the default also stands in for an empty variable,
as in the shell); `$${` writes a literal `${`. YAML duplicate keys are errors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from edge.config.audit import check_audit
from edge.config.files import check_input_files
from edge.config.gateway import EdgeConfig, Upstream
from edge.config.identity import check_routes_auth
from edge.config.policy import check_policy
from edge.config.problems import Relocate, report, validate
from edge.config.quota import check_quota_references
from edge.config.routes import RoutesFile, RouteSpec, Written, expand_shorthand
from edge.config.source import Document, Loc, dotted, read_document

UpstreamsByName = Mapping[str, Upstream | None]

_DEFAULT_ROUTES_FILE = "routes.yaml"


class ConfigError(Exception):
    """The config cannot be used; `problems` lists every reason, each naming file and key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Settings:
    """A validated gateway config and the routes it serves, with where they came from."""

    config: EdgeConfig
    routes: RoutesFile
    config_path: Path | None
    routes_path: Path | None

    def upstreams(self) -> dict[str, Upstream]:
        """Named upstreams plus the implicit ones that routes name by URL (`scheme://host:port`)."""
        found = dict(self.config.upstreams)
        for route in self.routes.routes:
            if "://" in route.upstream and route.upstream not in found:
                found[route.upstream] = Upstream(endpoints=(route.upstream,))
        return found


def load(config_path: Path | str | None, env: Mapping[str, str] | None = None) -> Settings:
    """Load `edge.yaml` and its routes file; raise ConfigError naming every problem in both."""
    env = os.environ if env is None else env
    if config_path is None:
        return Settings(EdgeConfig(), RoutesFile(), None, None)
    path = Path(config_path)
    problems: list[str] = []
    document = read_document(path, env, problems)
    config = validate(EdgeConfig, document, path, problems) if document is not None else None
    routes_path: Path | None = None
    upstreams: UpstreamsByName | None = None
    if config is not None:
        config = _resolve_paths(config, path.parent)
        problems.extend(check_input_files(config, path))
        problems.extend(check_audit(config.audit, path))
        problems.extend(check_policy(config.policy, path))
        routes_path, upstreams = config.routes_file, config.upstreams
    elif document is not None:
        routes_path, upstreams = _routes_file_named(document.data, path.parent), _upstreams_named(document.data)
    routes = None
    if routes_path is not None:
        routes = _load_routes(routes_path, upstreams, env, problems, named_by=f"routes_file in {path}")
        if routes is not None and config is not None:
            problems.extend(check_routes_auth(routes.routes, config.identity, routes_path))
    if config is not None and routes is not None and routes_path is not None:
        problems.extend(check_quota_references(routes, config.quota, routes_path, path))
    if problems or config is None or routes is None:
        raise ConfigError(_unique(problems))
    return Settings(config, routes, path, routes_path)


def load_routes(path: Path, config: EdgeConfig, env: Mapping[str, str] | None = None) -> RoutesFile:
    """Load the routes file alone (a reload), checked against the running config's upstreams."""
    problems: list[str] = []
    routes = _load_routes(path, config.upstreams, os.environ if env is None else env, problems)
    if routes is not None:
        problems.extend(check_routes_auth(routes.routes, config.identity, path))
    if routes is not None:
        problems.extend(check_quota_references(routes, config.quota, path))
    if problems or routes is None:
        raise ConfigError(_unique(problems))
    return routes


def _load_routes(
    path: Path,
    upstreams: UpstreamsByName | None,
    env: Mapping[str, str],
    problems: list[str],
    named_by: str | None = None,
) -> RoutesFile | None:
    before = len(problems)
    document = read_document(path, env, problems, named_by)
    if document is None:
        return None
    data, written = expand_shorthand(document.data)
    relocate = _shorthand_relocator(written)
    expanded = Document(data, document.unset)
    routes = validate(RoutesFile, expanded, path, problems, relocate)
    specs = list(enumerate(routes.routes)) if routes is not None else _valid_specs(data)
    for loc, message in _cross_check(specs, upstreams, relocate):
        report(problems, path, expanded, loc, message)
    return routes if len(problems) == before else None


def _routes_file_named(data: dict[Any, Any], base: Path) -> Path | None:
    """The routes file an invalid edge.yaml names, when it can still be told."""
    raw = data.get("routes_file", _DEFAULT_ROUTES_FILE)
    if not isinstance(raw, str) or not raw.strip():
        return None
    named = Path(raw)
    return named if named.is_absolute() else base / named


def _upstreams_named(data: dict[Any, Any]) -> UpstreamsByName | None:
    """Upstream names an invalid edge.yaml defines; None for those that are themselves invalid."""
    raw = data.get("upstreams", {})
    if not isinstance(raw, dict):
        return None
    found: dict[str, Upstream | None] = {}
    for name, value in raw.items():
        try:
            found[str(name)] = Upstream.model_validate(value)
        except ValidationError:
            found[str(name)] = None
    return found


def _valid_specs(data: Any) -> list[tuple[int, RouteSpec]]:
    entries = data.get("routes") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return []
    specs = []
    for index, entry in enumerate(entries):
        try:
            specs.append((index, RouteSpec.model_validate(entry)))
        except ValidationError:
            continue
    return specs


def _cross_check(
    specs: list[tuple[int, RouteSpec]], upstreams: UpstreamsByName | None, relocate: Relocate
) -> list[tuple[Loc, str]]:
    """What the models cannot see alone: duplicate names, repeated matches, unknown upstreams, protocols."""
    found: list[tuple[Loc, str]] = []
    names: dict[str, int] = {}
    matches: dict[tuple[object, ...], int] = {}
    for index, route in specs:
        if route.name is not None and names.setdefault(route.name, index) != index:
            also = _entry(names[route.name], relocate)
            found.append((relocate(("routes", index, "name")), f"duplicate route name {route.name!r} (also {also})"))
        if matches.setdefault(_match_key(route), index) != index:
            earlier = _entry(matches[_match_key(route)], relocate)
            found.append(
                (relocate(("routes", index, "match")), f"same match as {earlier}, so this route would never be chosen")
            )
        problem = _upstream_problem(route, upstreams)
        if problem:
            found.append((relocate(("routes", index, "upstream")), problem))
    return found


def _match_key(route: RouteSpec) -> tuple[object, ...]:
    m = route.match
    prefix = (m.prefix.rstrip("/") or "/") if m.prefix is not None else None
    return (m.path, prefix, m.grpc, frozenset(m.methods), m.host)


def _upstream_problem(route: RouteSpec, upstreams: UpstreamsByName | None) -> str | None:
    if "://" in route.upstream:
        upstream: Upstream | None = Upstream(endpoints=(route.upstream,))
    elif upstreams is None:
        return None
    elif route.upstream not in upstreams:
        known = ", ".join(sorted(upstreams)) or "none defined"
        return f"unknown upstream {route.upstream!r} (expected one of: {known}, or a URL)"
    else:
        upstream = upstreams[route.upstream]
    if upstream is not None and route.match.grpc is not None and upstream.protocol != "grpc":
        return f"a grpc route needs a grpc upstream ({route.upstream!r} speaks {upstream.protocol})"
    return None


def _entry(index: int, relocate: Relocate) -> str:
    return dotted(relocate(("routes", index)))


def _shorthand_relocator(written: Mapping[int, Written]) -> Relocate:
    """Point a location in the expanded routes back at the shorthand entry the person wrote."""

    def relocate(loc: Loc) -> Loc:
        if len(loc) < 2 or loc[0] != "routes" or not isinstance(loc[1], int) or loc[1] not in written:
            return loc
        entry = written[loc[1]]
        return entry.loc if entry.whole else (*entry.loc, *loc[2:])

    return relocate


def _unique(problems: list[str]) -> list[str]:
    return list(dict.fromkeys(problems))


def _resolve_paths(config: EdgeConfig, base: Path) -> EdgeConfig:
    """Relative file names in edge.yaml are relative to edge.yaml's folder."""
    result = _resolve(config, base)
    assert isinstance(result, EdgeConfig)
    return result


def _resolve(value: Any, base: Path) -> Any:
    if isinstance(value, Path):
        return value if value.is_absolute() else base / value
    if isinstance(value, tuple):
        return tuple(_resolve(v, base) for v in value)
    if isinstance(value, dict):
        return {k: _resolve(v, base) for k, v in value.items()}
    if isinstance(value, BaseModel):
        updates = {name: _resolve(v, base) for name, v in value}
        changed = {name: v for name, v in updates.items() if v != getattr(value, name)}
        return value.model_copy(update=changed) if changed else value
    return value
