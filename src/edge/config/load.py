"""Read, interpolate and validate the config files, once, at load.

Every problem becomes one line `file: dotted.key: what was expected`, and all
of them are reported together, so `edge check` lists everything wrong in one
run. `${VAR}` and `${VAR:-default}` in string values are replaced from the
environment (for secrets); `$${` writes a literal `${`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ValidationError

from edge.config.gateway import EdgeConfig, Upstream
from edge.config.routes import RoutesFile, RouteSpec, expand_shorthand

M = TypeVar("M", bound=BaseModel)
_VAR = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


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
        """Named upstreams plus the implicit ones that routes name by URL."""
        found = dict(self.config.upstreams)
        for route in self.routes.routes:
            if "://" in route.upstream and route.upstream not in found:
                found[route.upstream] = Upstream(endpoints=(origin(route.upstream),))
        return found


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def load(config_path: Path | str | None, env: Mapping[str, str] | None = None) -> Settings:
    """Load `edge.yaml` and its routes file; raise ConfigError naming every problem."""
    env = os.environ if env is None else env
    if config_path is None:
        config = EdgeConfig()
        return Settings(config, RoutesFile(), None, None)
    path = Path(config_path)
    config = parse_model(EdgeConfig, read_yaml(path, env), path)
    config = _resolve_paths(config, path.parent)
    routes = load_routes(config.routes_file, config, env)
    return Settings(config, routes, path, config.routes_file)


def load_routes(path: Path, config: EdgeConfig, env: Mapping[str, str] | None = None) -> RoutesFile:
    env = os.environ if env is None else env
    routes = parse_model(RoutesFile, expand_shorthand(read_yaml(path, env)), path)
    problems = check_routes(routes, config, path)
    if problems:
        raise ConfigError(problems)
    return routes


def check_routes(routes: RoutesFile, config: EdgeConfig, path: Path) -> list[str]:
    """Cross-references the models cannot see alone: upstream names, duplicate names, protocols."""
    problems = []
    seen: dict[str, int] = {}
    for index, route in enumerate(routes.routes):
        where = f"{path}: routes[{index}]"
        name = route.display_name
        if name in seen:
            problems.append(f"{where}.name: duplicate route name {name!r} (also routes[{seen[name]}])")
        seen.setdefault(name, index)
        upstream = _upstream_of(route, config)
        if upstream is None:
            known = ", ".join(sorted(config.upstreams)) or "none defined"
            problems.append(
                f"{where}.upstream: unknown upstream {route.upstream!r} (expected one of: {known}, or a URL)"
            )
            continue
        wants = "grpc" if route.match.grpc else "http"
        if upstream.protocol != wants and not (wants == "http" and upstream.protocol == "grpc"):
            problems.append(
                f"{where}.upstream: a {wants} route needs a {wants} upstream ({route.upstream!r} speaks {upstream.protocol})"
            )
    return problems


def _upstream_of(route: RouteSpec, config: EdgeConfig) -> Upstream | None:
    if "://" in route.upstream:
        return Upstream(endpoints=(origin(route.upstream),))
    return config.upstreams.get(route.upstream)


def read_yaml(path: Path, env: Mapping[str, str]) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError([f"{path}: cannot read: {error}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError([f"{path}: invalid YAML{where}: {problem}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: expected a mapping at the top level (got {type(data).__name__})"])
    problems: list[str] = []
    data = _interpolate(data, env, path, (), problems)
    if problems:
        raise ConfigError(problems)
    return data


def _interpolate(value: Any, env: Mapping[str, str], path: Path, loc: tuple[Any, ...], problems: list[str]) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, env, path, (*loc, k), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, path, (*loc, i), problems) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.append(
            f"{path}: {dotted(loc)}: environment variable {name} is not set (use ${{{name}:-default}} for a default)"
        )
        return ""

    return _VAR.sub(substitute, value)


def parse_model(model: type[M], data: Any, path: Path) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ConfigError([_describe(path, model, e) for e in error.errors()]) from None


def _describe(path: Path, model: type[BaseModel], error: Any) -> str:
    loc = _strip_tags(error["loc"])
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, loc[:-1])
        message = "unknown key" + (f" (expected one of: {', '.join(allowed)})" if allowed else "")
    elif error["type"] == "missing":
        message = "required key is missing"
    else:
        message = message.replace("Value error, ", "").replace("Input should be", "expected")
        if (
            error["type"] not in ("value_error", "assertion_error")
            and "input" in error
            and not isinstance(error["input"], dict | list)
        ):
            message += f" (got {error['input']!r})"
    return f"{path}: {dotted(loc) or '(top level)'}: {message}"


def _strip_tags(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop pydantic's union-member markers (`function-after[...]`, tag names after an index)."""
    kept: list[Any] = []
    for part in loc:
        if isinstance(part, str) and ("[" in part or part in ("file", "stdout")) and kept and isinstance(kept[-1], int):
            continue
        if isinstance(part, str) and part.startswith("function-"):
            continue
        kept.append(part)
    return tuple(kept)


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for part in loc:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            current = _inner_model(current)
            if isinstance(part, int):
                continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            return []
        current = current.model_fields[part].annotation
    current = _inner_model(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return []


def _inner_model(annotation: Any) -> Any:
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _inner_model(arg)
        if isinstance(found, type) and issubclass(found, BaseModel):
            return found
    return annotation


def dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _resolve_paths(config: EdgeConfig, base: Path) -> EdgeConfig:
    """Relative file names in edge.yaml are relative to edge.yaml's folder."""

    def fix(p: Path) -> Path:
        return p if p.is_absolute() else base / p

    def walk(model: BaseModel) -> BaseModel:
        updates: dict[str, Any] = {}
        for name, value in model:
            if isinstance(value, Path):
                updates[name] = fix(value)
            elif isinstance(value, BaseModel):
                updates[name] = walk(value)
            elif isinstance(value, tuple) and value and isinstance(value[0], BaseModel):
                updates[name] = tuple(walk(v) for v in value)
            elif isinstance(value, dict) and value and isinstance(next(iter(value.values())), BaseModel):
                updates[name] = {k: walk(v) for k, v in value.items()}
        return model.model_copy(update=updates) if updates else model

    result = walk(config)
    assert isinstance(result, EdgeConfig)
    return result
