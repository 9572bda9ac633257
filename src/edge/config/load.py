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
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from edge.config.audit import check_audit
from edge.config.gateway import EdgeConfig, Upstream
from edge.config.identity import check_routes_auth
from edge.config.policy import check_policy
from edge.config.quota import check_quota_references
from edge.config.routes import RoutesFile, RouteSpec, Written, expand_shorthand

M = TypeVar("M", bound=BaseModel)
Loc = tuple[str | int, ...]
Relocate = Callable[[Loc], Loc]
UpstreamsByName = Mapping[str, Upstream | None]

_VAR = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_VAR_BODY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?\Z", re.DOTALL)
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
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


@dataclass(slots=True)
class _Document:
    """A YAML file's top-level mapping after interpolation, and the keys whose variable was unset."""

    data: dict[Any, Any]
    unset: list[Loc] = field(default_factory=list)


def load(config_path: Path | str | None, env: Mapping[str, str] | None = None) -> Settings:
    """Load `edge.yaml` and its routes file; raise ConfigError naming every problem in both."""
    env = os.environ if env is None else env
    if config_path is None:
        return Settings(EdgeConfig(), RoutesFile(), None, None)
    path = Path(config_path)
    problems: list[str] = []
    document = _read(path, env, problems)
    config = _validate(EdgeConfig, document, path, problems) if document is not None else None
    routes_path: Path | None = None
    upstreams: UpstreamsByName | None = None
    if config is not None:
        config = _resolve_paths(config, path.parent)
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
    document = _read(path, env, problems, named_by)
    if document is None:
        return None
    data, written = expand_shorthand(document.data)
    relocate = _shorthand_relocator(written)
    expanded = _Document(data, document.unset)
    routes = _validate(RoutesFile, expanded, path, problems, relocate)
    specs = list(enumerate(routes.routes)) if routes is not None else _valid_specs(data)
    for loc, message in _cross_check(specs, upstreams, relocate):
        _report(problems, path, expanded, loc, message)
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


def _unchanged(loc: Loc) -> Loc:
    return loc


def _unique(problems: list[str]) -> list[str]:
    return list(dict.fromkeys(problems))


class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects a key written twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                seen = key in first_line
            except TypeError:
                continue
            if seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {first_line[key]})", key_node.start_mark
                )
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _read(path: Path, env: Mapping[str, str], problems: list[str], named_by: str | None = None) -> _Document | None:
    text = _read_text(path, problems, named_by)
    if text is None:
        return None
    data = _parse_yaml(path, text, problems)
    if data is None:
        return None
    document = _Document({})
    document.data = _interpolate(data, env, path, (), problems, document.unset)
    return document


def _read_text(path: Path, problems: list[str], named_by: str | None) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.append(f"{path}: file not found" + (f" (named by {named_by})" if named_by else ""))
    except IsADirectoryError:
        problems.append(f"{path}: expected a file, found a directory")
    except UnicodeDecodeError as error:
        problems.append(f"{path}: expected UTF-8 text (byte {error.start} is not)")
    except OSError as error:
        problems.append(f"{path}: cannot read: {error.strerror or error}")
    return None


def _parse_yaml(path: Path, text: str, problems: list[str]) -> dict[Any, Any] | None:
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        problems.append(f"{path}: invalid YAML{where}: {problem}")
        return None
    except (ValueError, TypeError, OverflowError, RecursionError) as error:
        problems.append(f"{path}: invalid YAML: {error}")
        return None
    if data is None:
        return {}
    if not isinstance(data, dict):
        problems.append(f"{path}: (top level): expected a mapping of keys to values (got a {_kind(data)})")
        return None
    return data


def _kind(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), type(value).__name__
    )


def _interpolate(
    value: Any, env: Mapping[str, str], path: Path, loc: Loc, problems: list[str], unset: list[Loc]
) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, env, path, (*loc, _key(k)), problems, unset) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, path, (*loc, i), problems, unset) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value
    failed: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        problem = _variable(match, env)
        if isinstance(problem, _Unresolved):
            failed.append(problem.why)
            return match.group(0)
        return problem

    result = _VAR.sub(substitute, value)
    if failed:
        unset.append(loc)
        problems.extend(f"{path}: {dotted(loc)}: {why}" for why in failed)
    return result


@dataclass(frozen=True, slots=True)
class _Unresolved:
    why: str


def _variable(match: re.Match[str], env: Mapping[str, str]) -> str | _Unresolved:
    body = match.group(1)
    parsed = _VAR_BODY.match(body) if body is not None else None
    if parsed is None:
        return _Unresolved(
            f"expected ${{NAME}} or ${{NAME:-default}}, or $${{ for a literal '${{' (got {match.group(0)!r})"
        )
    name, default = parsed.group(1), parsed.group(2)
    if env.get(name):
        return env[name]
    if default is not None:
        return default
    if name in env:
        return ""
    return _Unresolved(f"environment variable {name} is not set (use ${{{name}:-default}} for a default)")


def _key(key: Any) -> str | int:
    return key if isinstance(key, str | int) and not isinstance(key, bool) else str(key)


def _validate(
    model: type[M], document: _Document, path: Path, problems: list[str], relocate: Relocate = _unchanged
) -> M | None:
    try:
        return model.model_validate(document.data)
    except ValidationError as error:
        for detail in error.errors():
            loc, message = _describe(model, detail)
            _report(problems, path, document, relocate(loc), message)
        return None


def _report(problems: list[str], path: Path, document: _Document, loc: Loc, message: str) -> None:
    """Add one problem line, unless it is about a value whose variable was unset (already reported)."""
    if not any(loc[: len(unset)] == unset for unset in document.unset):
        problems.append(f"{path}: {dotted(loc) or '(top level)'}: {message}")


_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "path_type": "a file path",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "tuple_type": "a list",
    "list_type": "a list",
}
_BOUNDS = {
    "greater_than": "above",
    "greater_than_equal": "at least",
    "less_than": "below",
    "less_than_equal": "at most",
}


def _describe(model: type[BaseModel], error: Any) -> tuple[Loc, str]:
    """The location a person wrote and what was expected there, from one pydantic error."""
    raw: Loc = tuple(error["loc"])
    kind, ctx, got = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "extra_forbidden":
        loc, parent = _clean_loc(model, raw[:-1])
        allowed = _fields(parent)
        return (*loc, raw[-1]), "unknown key" + (f" (expected one of: {', '.join(allowed)})" if allowed else "")
    loc, _ = _clean_loc(model, raw)
    if kind == "missing":
        return loc, "required key is missing"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tag = str(ctx.get("discriminator", "type")).strip("'\"")
        got_tag = f" (got {ctx['tag']!r})" if "tag" in ctx else ""
        expected = ctx.get("expected_tags")
        message = f"expected one of: {expected}{got_tag}" if expected else "required key is missing"
        return (*loc, tag), message
    if raw and raw[-1] == "[key]":
        return loc, f"expected a string key (got {got!r})"
    return loc, _expectation(kind, error["msg"], ctx, got)


def _expectation(kind: str, message: str, ctx: Mapping[str, Any], got: Any) -> str:
    if kind in ("value_error", "assertion_error"):
        return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]} (got {got!r})"
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()), "?")
        return f"expected a number {_BOUNDS[kind]} {_number(bound)} (got {_number(got)!r})"
    if kind == "too_short":
        return f"expected at least {ctx.get('min_length', 1)} item(s)"
    return message.replace("Input should be", "expected") + ("" if isinstance(got, dict | list) else f" (got {got!r})")


def _number(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _clean_loc(model: type[BaseModel], loc: Loc) -> tuple[Loc, Any]:
    """Drop pydantic's union markers (tags, member names) from a location; also return the type found there."""
    kept: list[str | int] = []
    current: Any = model
    for part in loc:
        if part == "[key]":
            continue
        step = _step(current, part)
        if step is None:
            current = _union_member(current, part)
            continue
        kept.append(part)
        current = step
    return tuple(kept), current


def _members(annotation: Any) -> list[Any]:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _members(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [member for arg in get_args(annotation) for member in _members(arg)]
    return [] if annotation is type(None) else [annotation]


def _step(annotation: Any, part: str | int) -> Any:
    """The type one step into `annotation` (a field, an item, a mapping value), or None when `part` is a marker."""
    if annotation is Any:
        return Any
    for member in _members(annotation):
        origin, args = get_origin(member), get_args(member)
        if isinstance(part, int) and origin in (tuple, list) and args:
            return args[0]
        if origin is dict and len(args) == 2:
            return args[1]
        if isinstance(member, type) and issubclass(member, BaseModel) and part in member.model_fields:
            return member.model_fields[part].annotation
    return Any if isinstance(part, int) else None


def _union_member(annotation: Any, tag: str | int) -> Any:
    """The member of a union that pydantic's marker `tag` names (a discriminator value or a type name)."""
    for member in _members(annotation):
        if not (isinstance(member, type) and issubclass(member, BaseModel)):
            continue
        if member.__name__ == tag or f", {member.__name__}]" in str(tag):
            return member
        if any(tag in get_args(f.annotation) for f in member.model_fields.values()):
            return member
    return annotation


def _fields(annotation: Any) -> list[str]:
    for member in _members(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return sorted(member.model_fields)
    return []


def dotted(loc: Loc) -> str:
    """`listeners.http.port`, `routes[2].match`, `upstreams["svc.v1"].timeout`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += '["' + part.replace("\\", "\\\\").replace('"', '\\"') + '"]'
    return out


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
