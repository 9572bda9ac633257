"""Path templates in google.api.http HttpRule syntax, compiled once at config load.

A template such as ``/v1/{name=shelves/*/books/*}:cancel`` is parsed into a flat
tuple of segments (literals, ``*`` and ``**``), the variable bindings that
cover them and an optional verb.  Requests are matched against already
canonicalised, already split segments (see :mod:`edge.paths`), so literal
comparison is exact and an encoded slash can never act as a separator; the
same compiled template can also be expanded from field values to build a
rewritten path.  Literals in a template are canonicalised like request paths,
so ``%7e`` in a template matches the ``~`` a canonical request carries.
"""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from edge.paths import PathError, canonical_path, decode_segment

__all__ = ["Binding", "PathTemplate", "TemplateError", "parse_template"]

_FIELD_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_DOT_SEGMENT = re.compile(r"(?:\.|%2[eE]){1,2}\Z")
_WILDCARDS = ("*", "**")
_ENCODED_SLASH = re.compile(r"%2[Ff]")


class TemplateError(ValueError):
    """A path template is malformed, or cannot be expanded; message says what and where."""


@dataclass(frozen=True, slots=True)
class Binding:
    field: str
    start: int
    end: int | None

    @property
    def single_segment(self) -> bool:
        """True when the variable covers exactly one segment (its value is fully decoded)."""
        return self.end is not None and self.end - self.start == 1


@dataclass(frozen=True, slots=True)
class PathTemplate:
    source: str
    segments: tuple[str, ...]
    bindings: tuple[Binding, ...]
    verb: str | None

    def match(self, segments: Sequence[str], verb: str | None = None) -> dict[str, str] | None:
        """Match canonical segments and a split-off verb; return field values or None.

        Raises PathError when a captured value is not valid UTF-8 once decoded.
        """
        if verb != self.verb or not _segments_match(self.segments, segments):
            return None
        values: dict[str, str] = {}
        for binding in self.bindings:
            if binding.single_segment:
                values[binding.field] = decode_segment(segments[binding.start])
            else:
                captured = segments[binding.start : binding.end]
                values[binding.field] = "/".join(map(_decode_keeping_slash, captured))
        return values

    def literal_count(self) -> int:
        """Number of literal segments, for ranking overlapping templates."""
        return sum(1 for segment in self.segments if segment not in _WILDCARDS)

    def expand(self, values: Mapping[str, str]) -> str:
        """Build a path by substituting ``values`` for the template's variables."""
        starts = {binding.start: binding for binding in self.bindings}
        parts: list[str] = []
        index = 0
        while index < len(self.segments):
            binding = starts.get(index)
            if binding is not None:
                parts.append(_expand_binding(binding, values))
                index = len(self.segments) if binding.end is None else binding.end
                continue
            segment = self.segments[index]
            if segment in _WILDCARDS:
                raise TemplateError(f"cannot expand {segment!r} outside a variable in {self.source!r}")
            parts.append(segment)
            index += 1
        path = "/" + "/".join(parts)
        return path if self.verb is None else f"{path}:{self.verb}"


def parse_template(text: str) -> PathTemplate:
    """Compile an HttpRule path template; raise TemplateError if it is malformed."""
    return _Parser(text).parse()


def _segments_match(pattern: tuple[str, ...], segments: Sequence[str]) -> bool:
    fixed = len(pattern)
    if fixed and pattern[-1] == "**":
        fixed -= 1
        if len(segments) < fixed:
            return False
    elif len(segments) != fixed:
        return False
    for index in range(fixed):
        expected = pattern[index]
        actual = segments[index]
        if expected == "*":
            if not actual:
                return False
        elif expected != actual:
            return False
    return True


def _decode_keeping_slash(segment: str) -> str:
    if "%" not in segment:
        return segment
    return "%2F".join(map(decode_segment, segment.split("%2F")))


def _expand_binding(binding: Binding, values: Mapping[str, str]) -> str:
    """Encode a value for its variable: the inverse of `PathTemplate.match`.

    A single-segment value is plain text, so every reserved character is escaped. A
    multi-segment value is what `match` captures: `/` separates segments and `%2F` is a
    slash inside one, kept as it is (as google.api.http says) rather than re-escaped to `%252F`.
    """
    try:
        value = values[binding.field]
    except KeyError:
        raise TemplateError(f"no value for field {binding.field!r}") from None
    if binding.single_segment:
        encoded = quote(value, safe="")
    else:
        encoded = "%2F".join(quote(piece, safe="/") for piece in _ENCODED_SLASH.split(value))
    if any(part in (".", "..") for part in encoded.split("/")):
        raise TemplateError(f"value for field {binding.field!r} contains a dot segment")
    return encoded


class _Parser:
    """Recursive-descent parser over the template text; columns are 1-based."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.end = len(text)
        self.pos = 1
        self.segments: list[str] = []
        self.columns: list[int] = []
        self.bindings: list[Binding] = []

    def fail(self, what: str, column: int) -> TemplateError:
        return TemplateError(f"{what} at column {column} of {self.text!r}")

    def parse(self) -> PathTemplate:
        if not self.text.startswith("/"):
            raise self.fail("path template must start with '/'", 1)
        verb = self.split_verb()
        if self.end > 1:
            self.parse_top_segments()
        self.check_double_wildcard()
        return PathTemplate(self.text, tuple(self.segments), tuple(self.bindings), verb)

    def split_verb(self) -> str | None:
        colon = self.last_top_level_colon()
        if colon is None:
            return None
        raw = self.text[colon + 1 :]
        if "/" in raw:
            raise self.fail("':' is only allowed before the verb", colon + 1)
        if colon == 0 or self.text[colon - 1] == "/":
            raise self.fail("verb must follow a non-empty segment", colon + 1)
        self.end = colon
        return self.literal(raw, colon + 2, "verb")

    def last_top_level_colon(self) -> int | None:
        depth = 0
        found = None
        for index, char in enumerate(self.text):
            if char == "{":
                depth += 1
            elif char == "}":
                depth = max(depth - 1, 0)
            elif char == ":" and depth == 0:
                found = index
        return found

    def parse_top_segments(self) -> None:
        while True:
            if self.pos == self.end:
                self.add_segment("", self.pos)
                return
            if self.text[self.pos] == "{":
                self.parse_variable()
            else:
                self.parse_plain_segment(inside_variable=False)
            if self.pos == self.end:
                return
            if self.text[self.pos] != "/":
                raise self.fail("variable must be a whole segment", self.pos + 1)
            self.pos += 1

    def parse_variable(self) -> None:
        opening = self.pos
        self.pos += 1
        field = self.parse_field_path(opening)
        start = len(self.segments)
        if any(binding.field == field for binding in self.bindings):
            raise self.fail(f"duplicate variable field {field!r}", opening + 1)
        if self.text[self.pos] == "}":
            self.add_segment("*", self.pos)
        else:
            self.pos += 1
            self.parse_variable_segments(opening)
        self.pos += 1
        end = None if "**" in self.segments[start:] else len(self.segments)
        self.bindings.append(Binding(field, start, end))

    def parse_field_path(self, opening: int) -> str:
        stop = self.pos
        while stop < self.end and self.text[stop] not in "=}{/":
            stop += 1
        if stop == self.end:
            raise self.fail("unclosed '{'", opening + 1)
        if self.text[stop] == "{":
            raise self.fail("nested variables", stop + 1)
        field = self.text[self.pos : stop]
        if not field:
            raise self.fail("empty field path", self.pos + 1)
        if self.text[stop] == "/":
            raise self.fail("expected '=' or '}' after field path", stop + 1)
        if not _FIELD_PATH.match(field):
            raise self.fail(f"invalid field path {field!r}", self.pos + 1)
        self.pos = stop
        return field

    def parse_variable_segments(self, opening: int) -> None:
        while True:
            if self.pos == self.end:
                raise self.fail("unclosed '{'", opening + 1)
            char = self.text[self.pos]
            if char == "{":
                raise self.fail("nested variables", self.pos + 1)
            if char in "/}":
                raise self.fail("empty segment name", self.pos + 1)
            self.parse_plain_segment(inside_variable=True)
            if self.pos == self.end:
                raise self.fail("unclosed '{'", opening + 1)
            if self.text[self.pos] == "}":
                return
            self.pos += 1

    def parse_plain_segment(self, inside_variable: bool) -> None:
        column = self.pos + 1
        stop = self.pos
        stoppers = "/}" if inside_variable else "/"
        while stop < self.end and self.text[stop] not in stoppers:
            stop += 1
        raw = self.text[self.pos : stop]
        self.pos = stop
        if not raw:
            raise self.fail("empty segment name", column)
        if raw in _WILDCARDS:
            self.add_segment(raw, column)
            return
        self.check_literal_characters(raw, column, inside_variable)
        self.add_segment(self.literal(raw, column, "segment"), column)

    def check_literal_characters(self, raw: str, column: int, inside_variable: bool) -> None:
        for offset, char in enumerate(raw):
            where = column + offset
            if char == "*":
                raise self.fail("'*' and '**' must be whole segments", where)
            if char == ":":
                raise self.fail("':' is only allowed before the verb", where)
            if char == "}":
                raise self.fail("unexpected '}'", where)
            if char == "{":
                what = "nested variables" if inside_variable else "variable must be a whole segment"
                raise self.fail(what, where)

    def literal(self, raw: str, column: int, kind: str) -> str:
        if not raw:
            raise self.fail(f"empty {kind}", column)
        if _DOT_SEGMENT.match(raw):
            raise self.fail(f"dot segment {raw!r} is not allowed", column)
        for offset, char in enumerate(raw):
            if char in "/{}*:":
                raise self.fail(f"invalid character {char!r} in {kind}", column + offset)
        try:
            return canonical_path("/" + raw)[1:]
        except PathError as exc:
            raise self.fail(f"invalid {kind} {raw!r}: {exc}", column) from None

    def add_segment(self, segment: str, column: int) -> None:
        self.segments.append(segment)
        self.columns.append(column)

    def check_double_wildcard(self) -> None:
        last = len(self.segments) - 1
        for index, segment in enumerate(self.segments):
            if segment == "**" and index != last:
                raise self.fail("'**' must be the last segment", self.columns[index])
