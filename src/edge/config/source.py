"""Reading one config file into data: YAML without duplicate keys, then `${VAR}` interpolation.

`read_document` never raises for bad input: every problem (missing file, bad
YAML, a list at the top level, an unset variable) becomes a line naming the
file and the dotted key, and the keys whose variable was unset are remembered
so validation does not report them a second time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Loc = tuple[str | int, ...]

_VAR = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_VAR_BODY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?\Z", re.DOTALL)
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")


@dataclass(slots=True)
class Document:
    """A YAML file's top-level mapping after interpolation, and the keys whose variable was unset."""

    data: dict[Any, Any]
    unset: list[Loc] = field(default_factory=list)


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


def read_document(
    path: Path, env: Mapping[str, str], problems: list[str], named_by: str | None = None
) -> Document | None:
    text = _read_text(path, problems, named_by)
    if text is None:
        return None
    data = _parse_yaml(path, text, problems)
    if data is None:
        return None
    document = Document({})
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
        problems.append(f"{path}: (top level): expected a mapping of keys to values (got a {kind_of(data)})")
        return None
    return data


def kind_of(value: Any) -> str:
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
