"""`edge audit verify` finds every kind of tampering and names the first broken record.

A signed chain is written by the real writer into a file, then changed the way
an attacker (or an accident) would; each change must fail verification, and
the report must point at the record where it happened. What is not tampering
(a torn last line after a crash, files given in any order) must pass, with a
warning where something is worth telling.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from edge.cli import main
from edge.pipeline.audit.chain import canonical, line_hash
from edge.pipeline.audit.checkpoint import Signer, load_public_key
from edge.pipeline.audit.sinks.file import FileSink
from edge.pipeline.audit.verify import verify_files
from tests.audit.conftest import Clock, Keys, call_record, read_lines, records, write_chain, writer_over

Tamper = Callable[[list[str]], list[str]]


def edit_status(lines: list[str]) -> list[str]:
    record = json.loads(lines[11])
    record["status"] = 403
    lines[11] = canonical(record)
    return lines


def edit_keeping_own_hash_fields(lines: list[str]) -> list[str]:
    record = json.loads(lines[11])
    record["path"] = "/v1/somewhere/else"
    lines[11] = json.dumps(record)
    return lines


def delete(lines: list[str]) -> list[str]:
    del lines[11]
    return lines


def insert_copy(lines: list[str]) -> list[str]:
    lines.insert(12, lines[11])
    return lines


def insert_forged(lines: list[str]) -> list[str]:
    forged = json.loads(lines[11])
    forged["request_id"] = "forged"
    forged["seq"] += 1
    forged["prev"] = line_hash(lines[11])
    lines.insert(12, canonical(forged))
    return lines


def swap(lines: list[str]) -> list[str]:
    lines[11], lines[12] = lines[12], lines[11]
    return lines


def move_to_end(lines: list[str]) -> list[str]:
    lines.append(lines.pop(5))
    return lines


def garbage_line(lines: list[str]) -> list[str]:
    lines.insert(11, "not json at all")
    return lines


def rechain_after_delete(lines: list[str]) -> list[str]:
    """Delete a record and recompute every later seq and hash: only a signature can catch this."""
    records = [json.loads(line) for line in lines]
    del records[11]
    prev = records[10]
    out = [canonical(r) for r in records[:11]]
    for record in records[11:]:
        record["seq"] = prev["seq"] + 1
        record["prev"] = line_hash(canonical(prev))
        out.append(canonical(record))
        prev = record
    return out


TAMPERING: list[tuple[Tamper, str]] = [
    (edit_status, "seq 12: altered"),
    (edit_keeping_own_hash_fields, "seq 12: altered"),
    (delete, "records 12..12 are missing"),
    (insert_copy, "seq 12: out of order"),
    (insert_forged, "seq 13: out of order"),
    (swap, "seq 13: records 12..12 are missing"),
    (move_to_end, "records 6..6 are missing"),
    (garbage_line, "not an audit record"),
    (rechain_after_delete, "checkpoint signature does not match"),
]


@pytest.mark.parametrize(("tamper", "first_error"), TAMPERING, ids=[t.__name__ for t, _ in TAMPERING])
def test_tampering_is_detected_and_named(tmp_path: Path, keys: Keys, tamper: Tamper, first_error: str) -> None:
    path = tmp_path / "audit.jsonl"
    write_chain(path, 40, Signer(keys.key))
    public = load_public_key(keys.public)
    assert verify_files([path], public).ok
    path.write_text("\n".join(tamper(read_lines(path))) + "\n")
    report = verify_files([path], public)
    assert not report.ok
    assert first_error in str(report.errors[0]), report.render()


def test_a_clean_chain_passes_with_counts(tmp_path: Path, keys: Keys) -> None:
    path = tmp_path / "audit.jsonl"
    write_chain(path, 40, Signer(keys.key), every=10)
    report = verify_files([path], load_public_key(keys.public))
    assert report.ok and report.warnings == []
    chain = report.chains["gw-1"]
    assert (chain.first, chain.seq, chain.checkpoints, chain.signed_through) == (1, 44, 4, 44)


def test_a_rewritten_chain_passes_without_the_key_but_is_flagged(tmp_path: Path, keys: Keys) -> None:
    path = tmp_path / "audit.jsonl"
    write_chain(path, 40, Signer(keys.key))
    path.write_text("\n".join(rechain_after_delete(read_lines(path))) + "\n")
    report = verify_files([path])
    assert report.ok
    assert any("signatures not checked" in str(w) for w in report.warnings)


def test_checkpoints_signed_with_another_key_fail(tmp_path: Path, keys: Keys) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = tmp_path / "audit.jsonl"
    write_chain(path, 20, Signer(Ed25519PrivateKey.generate()))
    report = verify_files([path], load_public_key(keys.public))
    assert not report.ok and "checkpoint signed with key" in str(report.errors[0])


def test_torn_last_line_is_reported_not_accepted_silently(tmp_path: Path, keys: Keys) -> None:
    path = tmp_path / "audit.jsonl"
    write_chain(path, 20, Signer(keys.key))
    whole = path.read_bytes()
    with path.open("ab") as file:
        file.write(b'{"kind":"call","seq":23,"prev":"ab')
    report = verify_files([path], load_public_key(keys.public))
    assert report.ok
    assert [f.message for f in report.warnings if "torn" in f.message] == [
        "torn last line (the writer stopped mid-record)"
    ]
    assert report.warnings[0].where == f"{path}:{len(whole.splitlines()) + 1}"


def test_rotated_files_verify_in_any_order_and_a_missing_one_fails(tmp_path: Path, keys: Keys) -> None:
    path = tmp_path / "audit.jsonl"
    write_chain(path, 60, Signer(keys.key), max_size=2000)
    files = sorted(tmp_path.glob("audit*.jsonl"))
    assert len(files) >= 4
    public = load_public_key(keys.public)
    assert verify_files(list(reversed(files)), public).ok
    missing = verify_files([f for f in files if f != files[1]], public)
    assert not missing.ok and "are missing before this one" in str(missing.errors[0])
    assert str(missing.errors[0]).startswith(str(files[2]))


def test_cli_exit_codes_and_first_broken_record(tmp_path: Path, keys: Keys, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.jsonl"
    write_chain(path, 30, Signer(keys.key))
    assert main(["audit", "verify", str(path), "--key", str(keys.public)]) == 0
    assert "OK: the chain is intact" in capsys.readouterr().out
    path.write_text("\n".join(edit_status(read_lines(path))) + "\n")
    assert main(["audit", "verify", str(path), "--key", str(keys.public)]) == 1
    out = capsys.readouterr().out
    assert f"FAILED: first broken record: {path}:12 seq 12: altered" in out
    assert main(["audit", "verify", str(path), "--key", str(tmp_path / "nope.pem")]) == 2
    assert main(["audit", "verify", "--json", str(path)]) == 1
    assert json.loads(capsys.readouterr().out)["errors"][0]["seq"] == 12


def test_keygen_writes_a_pair_that_signs_and_verifies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    private, public = tmp_path / "k.pem", tmp_path / "k.pub"
    assert main(["audit", "keygen", str(private), str(public)]) == 0
    assert private.stat().st_mode & 0o777 == 0o600
    path = tmp_path / "audit.jsonl"
    write_chain(path, 12, Signer.from_file(private))
    assert main(["audit", "verify", str(path), "--key", str(public)]) == 0


def test_checkpoints_come_every_n_records_and_when_idle(tmp_path: Path, keys: Keys) -> None:
    clock = Clock()
    path = tmp_path / "audit.jsonl"
    writer = writer_over([FileSink(path, max_age=0.0)], signer=Signer(keys.key), every=5, clock=clock)
    writer.interval = 60.0
    writer.open()
    writer.write([call_record(n) for n in range(7)])
    clock.now += 30
    writer.write([])
    clock.now += 31
    writer.write([])
    clock.now += 61
    writer.write([])
    writer.close()
    kinds = [(r["kind"], r.get("records")) for r in records(path)]
    assert kinds == [("call", None)] * 5 + [("checkpoint", 5)] + [("call", None)] * 2 + [
        ("checkpoint", 2),
        ("checkpoint", 0),
    ]
    assert verify_files([path], load_public_key(keys.public)).ok
