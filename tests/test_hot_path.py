"""The modules scripts/compile lists are the ones that run compiled (unless EDGE_COMPILE=0 asked for plain Python)."""

from __future__ import annotations

import importlib
import os
import time
from pathlib import Path

import pytest

from edge import hot_path

ROOT = Path(__file__).resolve().parents[1]
LISTED = [
    line.strip().removesuffix(".py").replace("/", ".").removesuffix(".__init__")
    for line in (ROOT / "scripts" / "compiled-modules").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]


@pytest.mark.skipif(os.environ.get("EDGE_COMPILE") == "0", reason="EDGE_COMPILE=0: plain Python asked for")
def test_every_listed_module_runs_compiled() -> None:
    for name in LISTED:
        importlib.import_module(name)
    assert set(LISTED) <= set(hot_path.compiled())
    assert hot_path.describe() == f"hot path: {len(hot_path.compiled())} modules compiled with mypyc"


def test_a_source_edited_after_its_build_is_named_stale(tmp_path: Path) -> None:
    package = tmp_path / "edge"
    package.mkdir()
    built = package / "call.cpython-311-x86_64-linux-gnu.so"
    fresh = package / "routes.cpython-311-x86_64-linux-gnu.so"
    for path in (package / "call.py", built, package / "routes.py", fresh):
        path.write_bytes(b"")
    past = time.time() - 60
    os.utime(built, (past, past))
    os.utime(package / "routes.py", (past, past))
    assert hot_path.stale(tmp_path) == [package / "call.py"]
    assert (
        hot_path.stale_notice(tmp_path)
        == f"edited after scripts/compile built them: {package / 'call.py'}; run scripts/compile"
    )
    os.utime(package / "call.py", (past - 60, past - 60))
    assert hot_path.stale_notice(tmp_path) is None
