"""Turning pydantic's validation errors into `file: dotted.key: what was expected` lines.

pydantic's own messages name its internals (union tags, `function-after[...]`);
here each error's location is walked through the model to drop those, and the
message is rewritten as the expectation a person reads ("expected a duration
such as 15s (got 'soon')", "unknown key (expected one of: ...)").
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from edge.config.source import Document, Loc, dotted

M = TypeVar("M", bound=BaseModel)
Relocate = Callable[[Loc], Loc]


def unchanged(loc: Loc) -> Loc:
    return loc


def validate(
    model: type[M], document: Document, path: Path, problems: list[str], relocate: Relocate = unchanged
) -> M | None:
    try:
        return model.model_validate(document.data)
    except ValidationError as error:
        for detail in error.errors():
            loc, message = _describe(model, detail)
            report(problems, path, document, relocate(loc), message)
        return None


def report(problems: list[str], path: Path, document: Document, loc: Loc, message: str) -> None:
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
