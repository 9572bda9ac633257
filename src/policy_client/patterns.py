"""Glob sets for rules: `*` and `?` stay inside one `/` segment, `**` crosses them.

A rule's patterns compile once, at load, into a set of literals plus one
regular expression, so matching a request is a set lookup and at most one
`fullmatch`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable


def is_glob(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern


def translate(pattern: str) -> str:
    """The regular expression (without anchors) a glob stands for."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


class GlobSet:
    """Matches a string when any of its patterns does."""

    __slots__ = ("_any", "_literals", "_regex", "patterns")

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        wild = [p for p in self.patterns if is_glob(p)]
        self._literals = frozenset(p for p in self.patterns if not is_glob(p))
        self._any = "**" in wild
        self._regex = re.compile("|".join(f"(?:{translate(p)})" for p in wild), re.DOTALL) if wild else None

    def matches(self, text: str) -> bool:
        return (
            self._any or text in self._literals or (self._regex is not None and self._regex.fullmatch(text) is not None)
        )
