"""`listeners.http.engine` picks the HTTP server core; anything else is rejected with the dotted key."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import ConfigError, load


def write(folder: Path, engine: str) -> Path:
    (folder / "routes.yaml").write_text("routes: []\n")
    path = folder / "edge.yaml"
    path.write_text(f"listeners:\n  http: {{host: 127.0.0.1, port: 0, engine: {engine}}}\n")
    return path


@pytest.mark.parametrize("engine", ["aiohttp", "httptools"])
def test_known_engines_load(tmp_path: Path, engine: str) -> None:
    listener = load(write(tmp_path, engine), env={}).config.listeners.http
    assert listener is not None and listener.engine == engine


def test_unknown_engine_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, "nginx"), env={})
    assert any("listeners.http.engine" in p and "httptools" in p for p in caught.value.problems)
