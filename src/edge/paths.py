"""Canonical request paths for the gateway.

Every request path is canonicalised exactly once, before routing, and the
result is what routing, policy, quota and audit all see, so none of them can
be fooled by alternative spellings of the same path.  Canonicalisation rejects
control characters, non-ASCII, backslashes and malformed escapes, decodes
percent-encoded unreserved characters, uppercases the remaining escapes (so an
encoded '/' stays ``%2F`` inside its segment) and resolves dot segments
(RFC 3986 section 5.2.4), refusing any that would climb above the root.  The
segment helpers split a canonical path and decode variable values for the
path-template matcher.
"""

import re
from urllib.parse import unquote

__all__ = ["PathError", "canonical_path", "decode_segment", "split_segments"]


class PathError(ValueError):
    """The request path cannot be canonicalised; message says why (goes into a 400 reply)."""


_NEEDS_WORK = re.compile(r"[^\x21-\x24\x26-\x2d\x2f-\x5b\x5d-\x7e]")
_FORBIDDEN = re.compile(r"[^\x21-\x7e]|\\")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})?")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _escape_tables() -> tuple[dict[str, str], dict[str, str]]:
    replacements: dict[str, str] = {}
    rejections: dict[str, str] = {}
    digits = "0123456789abcdefABCDEF"
    for code in (hi + lo for hi in digits for lo in digits):
        char = chr(int(code, 16))
        if char < " " or char == "\x7f":
            rejections[code] = "percent-encoded control character in path"
        elif char == "\\":
            rejections[code] = "backslash in path"
        elif char in _UNRESERVED:
            replacements[code] = char
        else:
            replacements[code] = "%" + code.upper()
    return replacements, rejections


_REPLACEMENTS, _REJECTIONS = _escape_tables()


def _forbidden_reason(char: str) -> str:
    if char == "\\":
        return "backslash in path"
    if char == " ":
        return "space in path"
    if char.isascii():
        return "control character in path"
    return "non-ASCII character in path"


def _normalise_escape(match: re.Match[str]) -> str:
    code = match.group(1)
    if code is None:
        raise PathError("malformed percent escape in path")
    replacement = _REPLACEMENTS.get(code)
    if replacement is None:
        raise PathError(_REJECTIONS[code])
    return replacement


def _remove_dot_segments(path: str) -> str:
    parts = path[1:].split("/")
    last = len(parts) - 1
    out: list[str] = []
    for index, part in enumerate(parts):
        if part == "..":
            if not out:
                raise PathError("path escapes the root")
            out.pop()
        elif part != ".":
            out.append(part)
            continue
        if index == last:
            out.append("")
    return "/" + "/".join(out)


def canonical_path(raw: str) -> str:
    """Return the canonical form of ``raw`` (a request path without its query string)."""
    if not raw.startswith("/"):
        raise PathError("path must start with '/'")
    if _NEEDS_WORK.search(raw) is None:
        return raw
    bad = _FORBIDDEN.search(raw)
    if bad is not None:
        raise PathError(_forbidden_reason(bad.group()))
    path = _ESCAPE.sub(_normalise_escape, raw) if "%" in raw else raw
    if "/." in path:
        path = _remove_dot_segments(path)
    return path


def split_segments(path: str) -> list[str]:
    """Split a canonical path into its segments; ``"/"`` has none."""
    if path == "/":
        return []
    return path[1:].split("/")


def decode_segment(segment: str) -> str:
    """Percent-decode one canonical segment as UTF-8, raising PathError if it is not valid UTF-8."""
    if "%" not in segment:
        return segment
    try:
        return unquote(segment, errors="strict")
    except UnicodeDecodeError:
        raise PathError("path segment is not valid UTF-8 once decoded") from None
