"""The configuration reference's examples are real: docs/configuration.md's YAML loads cleanly."""

from __future__ import annotations

import re
from pathlib import Path

from edge.config import load
from edge.pipeline.audit.checkpoint import write_key_pair

DOC = Path(__file__).parent.parent / "docs" / "configuration.md"
BLOCK = re.compile(r"```yaml(?: (?P<name>\S+))?\n(?P<body>.*?)```", re.DOTALL)


def blocks() -> dict[str, str]:
    found = {}
    for index, match in enumerate(BLOCK.finditer(DOC.read_text())):
        found[match["name"] or f"block{index}"] = match["body"]
    return found


def test_reference_config_and_routes_load(tmp_path: Path) -> None:
    written = blocks()
    (tmp_path / "edge.yaml").write_text(written["edge.yaml"])
    (tmp_path / "routes.yaml").write_text(written["routes.yaml"])
    policy = next(body for body in written.values() if body.startswith("rules:"))
    (tmp_path / "policy.yaml").write_text(policy)
    (tmp_path / "protos").mkdir()
    write_key_pair(tmp_path / "audit.key", tmp_path / "audit.pub")
    (tmp_path / "certs").mkdir()
    for name in ("server.crt", "server.key", "cac-ca.pem", "internal-ca.pem", "edge-client.crt", "edge-client.key"):
        (tmp_path / "certs" / name).write_text("read at start, not by load\n")
    settings = load(tmp_path / "edge.yaml", env={})
    assert [r.display_name for r in settings.routes.routes] == [
        "refill",
        "prescription",
        "status",
        "pharmacy-rpc",
        "/v1/voting/ballots",
    ]
    assert settings.config.quota.rules[1].period == 30 * 86400
