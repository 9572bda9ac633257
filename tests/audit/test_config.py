"""The `audit:` section: what it accepts, and problems that name the file, the key and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edge.config import ConfigError, load
from edge.pipeline.audit import AuditLog
from tests.audit.conftest import Keys


def load_audit(folder: Path, audit: str, routes: str = "routes: []\n") -> list[str]:
    (folder / "edge.yaml").write_text(f"audit:\n{audit}\n", encoding="utf-8")
    (folder / "routes.yaml").write_text(routes, encoding="utf-8")
    try:
        load(folder / "edge.yaml", env={})
    except ConfigError as error:
        return [p.replace(str(folder), "DIR") for p in error.problems]
    return []


BAD = [
    (
        "  sinks: [{type: file, path: a.jsonl, fsync: sometimes}]",
        "audit.sinks[0].fsync: expected 'always', 'interval' or 'never'",
    ),
    ("  sinks: [{type: redis, url: http://x}]", "audit.sinks[0].url: expected a URL such as redis://host:6379/0"),
    ("  sinks: [{type: redis, maxlen: 0}]", "audit.sinks[0].maxlen: expected a number at least 1 (got 0)"),
    (
        "  sinks: [{type: file, path: a}, {type: file, path: b}]",
        "audit.sinks: expected distinct sink names; set `name:` on all but one (two are 'file')",
    ),
    ("  spool: {on_full: block}", "audit.spool.on_full: expected 'reject' or 'drop_oldest'"),
    ("  spool: {max_bytes: lots}", "audit.spool.max_bytes: expected a size such as 4096, 64KiB, 10MiB"),
    ("  checkpoints: {every: 0}", "audit.checkpoints.every: expected a number at least 1 (got 0)"),
    ("  signing_key: missing.pem", "audit.signing_key: cannot read DIR/missing.pem"),
]


@pytest.mark.parametrize(("audit", "problem"), BAD, ids=[p.split(":")[0] + str(i) for i, (_, p) in enumerate(BAD)])
def test_bad_audit_sections_are_named(tmp_path: Path, audit: str, problem: str) -> None:
    problems = load_audit(tmp_path, audit)
    assert len(problems) == 1 and problem in problems[0], problems
    assert problems[0].startswith("DIR/edge.yaml: ")


def test_a_signing_key_that_is_not_ed25519_is_refused(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp_path / "ec.pem").write_bytes(pem)
    (tmp_path / "junk.pem").write_text("not a key")
    assert load_audit(tmp_path, "  signing_key: ec.pem") == [
        "DIR/edge.yaml: audit.signing_key: expected an Ed25519 private key in DIR/ec.pem (got an EC key)"
    ]
    assert load_audit(tmp_path, "  signing_key: junk.pem") == [
        "DIR/edge.yaml: audit.signing_key: expected an unencrypted PEM private key in DIR/junk.pem"
    ]


def test_a_full_section_loads_and_builds_every_sink(tmp_path: Path, keys: Keys) -> None:
    audit = f"""
  signing_key: {keys.private}
  sinks:
    - {{type: file, path: logs/audit.jsonl, max_size: 10MiB, max_age: 1h, fsync: always}}
    - {{type: stdout}}
    - {{type: redis, name: central, url: "redis://10.0.0.5:6379/2", stream: "hms:audit", maxlen: 5000}}
  spool: {{path: spool, max_bytes: 64MiB, on_full: drop_oldest, retry: 2s}}
  checkpoints: {{every: 500, interval: 30s}}
"""
    routes = "routes:\n  - {match: {prefix: /v1/records}, upstream: 'http://r:1', regulated: true}\n"
    assert load_audit(tmp_path, audit, routes) == []
    settings = load(tmp_path / "edge.yaml", env={})
    section = settings.config.audit
    assert section.sinks[0].path == tmp_path / "logs" / "audit.jsonl"
    assert section.spool.path == tmp_path / "spool"
    assert settings.routes.routes[0].regulated
    log = AuditLog.from_config(section, "gw-1")
    assert log.writer is not None
    assert [d.sink.name for d in log.writer.deliveries] == ["file", "stdout", "central"]
    assert [d.spool is not None for d in log.writer.deliveries] == [True, False, True]
    assert log.writer.signer is not None and log.writer.every == 500


def test_no_sinks_means_nothing_is_queued(tmp_path: Path) -> None:
    log = AuditLog.from_config(load(None).config.audit, "gw-1")
    assert log.writer is None and log.accepting()
