"""Which of edge's modules run compiled, and whether any is older than its source.

`scripts/compile` builds the modules listed in `scripts/compiled-modules`
with mypyc into C extensions beside their sources, and Python imports an
extension before a `.py` of the same name. An edited source whose extension
was not rebuilt would be silently ignored, so the gateway says at start-up
what runs compiled and the tests refuse to run on a stale build.
"""

from __future__ import annotations

import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path


def compiled() -> list[str]:
    """The loaded modules of edge (and its policy client) that came from an extension module."""
    return sorted(name for name, path in _our_files() if path.name.endswith(_EXTENSIONS))


def stale(root: Path) -> list[Path]:
    """The sources under `root` edited after the extension beside them was built."""
    found = []
    for extension in root.rglob("*.so"):
        source = extension.with_name(extension.name.split(".", 1)[0] + ".py")
        if source.exists() and source.stat().st_mtime > extension.stat().st_mtime:
            found.append(source)
    return sorted(found)


def stale_notice(root: Path) -> str | None:
    """What to tell someone about to test or measure a stale build under `root`, or None when it is fresh."""
    edited = stale(root)
    if not edited:
        return None
    return f"edited after scripts/compile built them: {', '.join(map(str, edited))}; run scripts/compile"


def describe() -> str:
    """One line for the start-up log."""
    names = compiled()
    if not names:
        return "hot path: plain Python (scripts/compile builds it with mypyc)"
    return f"hot path: {len(names)} modules compiled with mypyc"


_EXTENSIONS = tuple(EXTENSION_SUFFIXES)
_PACKAGES = frozenset({"edge", "policy_client"})


def _our_files() -> list[tuple[str, Path]]:
    loaded = [(name, getattr(module, "__file__", None)) for name, module in list(sys.modules.items())]
    return [(name, Path(file)) for name, file in loaded if file and name.partition(".")[0] in _PACKAGES]
