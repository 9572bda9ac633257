"""`edge audit verify`: recompute the chain over audit files and name the first broken record.

Files are read in chain order (by their first sequence number, so a shell
glob in any order works) and each instance's records are checked on their own:
sequence numbers go up by one, each `prev` is the SHA-256 of the canonical JSON
of the record before, and with `--key` every checkpoint's Ed25519 signature
holds. An edited record breaks the next link, a deleted one leaves a gap, an
inserted or moved one repeats or skips a number; a rewritten history fails
the next checkpoint's signature. Gaps a chained `loss` record declares (a
sink's spool overflowed) and a torn last line (the writer was killed) are
reported as warnings, never passed over silently.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.pipeline.audit.chain import GENESIS, canonical, line_hash
from edge.pipeline.audit.checkpoint import CHECKPOINT, key_id, signature_valid


@dataclass(frozen=True, slots=True)
class Finding:
    where: str  # file:line
    seq: int | None
    message: str

    def __str__(self) -> str:
        seq = f" seq {self.seq}" if self.seq is not None else ""
        return f"{self.where}{seq}: {self.message}"


@dataclass(slots=True)
class ChainState:
    """One instance's chain as far as it has been read."""

    first: int
    seq: int
    hash: str
    where: str
    records: int = 0
    checkpoints: int = 0
    signed_through: int = 0
    last_checkpoint: str | None = None  # its time: the trail is only known to be whole up to there
    broken: bool = False  # a signature after a broken link vouches for nothing before it


@dataclass(slots=True)
class Report:
    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    chains: dict[str, ChainState] = field(default_factory=dict)
    signatures_checked: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors

    def render(self) -> str:
        """What a person reads: a line per chain, warnings, then the verdict naming the first broken record."""
        out = []
        for name, chain in self.chains.items():
            signed = f", signed through seq {chain.signed_through}" if self.signatures_checked else ""
            if chain.last_checkpoint:
                signed += f", last checkpoint {chain.last_checkpoint}"
            out.append(
                f"instance {name!r}: {chain.records} records, seq {chain.first}..{chain.seq}, "
                f"{chain.checkpoints} checkpoints{signed}"
            )
        out += [f"warning: {finding}" for finding in self.warnings]
        if self.ok:
            out.append("OK: the chain is intact")
        else:
            out.append(f"FAILED: first broken record: {self.errors[0]}")
            out += [f"  also: {finding}" for finding in self.errors[1:]]
        return "\n".join(out)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "files": self.files,
            "errors": [asdict(f) for f in self.errors],
            "warnings": [asdict(f) for f in self.warnings],
            "signatures_checked": self.signatures_checked,
            "instances": {name: asdict(chain) for name, chain in self.chains.items()},
        }


@dataclass(frozen=True, slots=True)
class Line:
    where: str
    text: str
    last_in_file: bool
    complete: bool


def verify_files(paths: Sequence[Path], public_key: Ed25519PublicKey | None = None) -> Report:
    """Check the chain across `paths` (any order); OSError when a file cannot be read."""
    files = [(path, path.read_bytes()) for path in paths]
    files.sort(key=lambda item: _first_seq(item[1]))
    lines: list[Line] = []
    for path, data in files:
        chunks = data.split(b"\n")
        complete = [True] * (len(chunks) - 1) + [False]
        if chunks and chunks[-1] == b"":
            chunks, complete = chunks[:-1], complete[:-1]
        for number, (chunk, whole) in enumerate(zip(chunks, complete, strict=True), 1):
            text = chunk.decode("utf-8", "replace")
            lines.append(Line(f"{path}:{number}", text, number == len(chunks), whole))
    report = verify_lines(lines, public_key)
    report.files = [str(path) for path, _ in files]
    return report


def verify_lines(lines: Iterable[Line], public_key: Ed25519PublicKey | None = None) -> Report:
    report = Report(signatures_checked=public_key is not None)
    parsed = [(line, _parse(line.text)) for line in lines]
    losses = _declared_losses(record for _, record in parsed if record is not None)
    wanted_key = key_id(public_key) if public_key is not None else None
    after_torn = False
    for line, record in parsed:
        if record is None:
            if line.last_in_file and not line.complete:
                report.warnings.append(Finding(line.where, None, "torn last line (the writer stopped mid-record)"))
                after_torn = True
            else:
                report.errors.append(Finding(line.where, None, "not an audit record (a line was edited or inserted)"))
                for chain in report.chains.values():
                    chain.broken = True
            continue
        if not line.complete:
            report.warnings.append(Finding(line.where, record["seq"], "last line has no newline"))
        _check_link(report, line, record, losses, after_torn)
        after_torn = False
        if record.get("kind") == CHECKPOINT:
            _check_checkpoint(report, line, record, public_key, wanted_key)
    for name, chain in report.chains.items():
        unsigned = chain.seq - chain.signed_through
        if public_key is not None and unsigned > 0:
            report.warnings.append(
                Finding(
                    chain.where,
                    chain.seq,
                    f"{unsigned} record(s) of {name!r} are not covered by a valid checkpoint signature (yet)",
                )
            )
    if public_key is None:
        report.warnings.append(Finding("-", None, "signatures not checked (give --key PUBKEY)"))
    return report


def _check_link(
    report: Report,
    line: Line,
    record: dict[str, Any],
    losses: dict[str, dict[int, list[tuple[int, str]]]],
    after_torn: bool,
) -> None:
    instance = str(record.get("instance", ""))
    seq, prev = record["seq"], record["prev"]
    digest = line_hash(canonical(record))
    chain = report.chains.get(instance)
    if chain is None:
        if seq != 1 or prev != GENESIS:
            report.warnings.append(
                Finding(line.where, seq, f"chain of {instance!r} starts here (earlier records not given)")
            )
        report.chains[instance] = ChainState(seq, seq, digest, line.where, 1)
        return
    expected = chain.seq + 1
    errors = len(report.errors)
    if seq == expected and prev != chain.hash:
        report.errors.append(
            Finding(
                chain.where,
                chain.seq,
                f"altered: its hash is not the prev of seq {seq} ({line.where}), or a record was put between them",
            )
        )
    elif seq > expected:
        if _covered(losses.get(instance, {}), expected, seq, prev):
            report.warnings.append(
                Finding(line.where, seq, f"records {expected}..{seq - 1} lost, declared by a loss record")
            )
        elif after_torn and record.get("kind") == "start":
            report.warnings.append(
                Finding(line.where, seq, f"records {expected}..{seq - 1} missing after a crash (torn line before)")
            )
        else:
            report.errors.append(
                Finding(
                    line.where, seq, f"records {expected}..{seq - 1} are missing before this one (deleted, or moved)"
                )
            )
    elif seq < expected:
        report.errors.append(
            Finding(line.where, seq, f"out of order: comes after seq {chain.seq} ({chain.where}); moved or duplicated")
        )
    chain.broken = chain.broken or len(report.errors) > errors
    chain.seq, chain.hash, chain.where = seq, digest, line.where
    chain.records += 1


def _check_checkpoint(
    report: Report, line: Line, record: dict[str, Any], public_key: Ed25519PublicKey | None, wanted_key: str | None
) -> None:
    chain = report.chains[str(record.get("instance", ""))]
    chain.checkpoints += 1
    chain.last_checkpoint = str(record.get("time"))
    if public_key is None:
        return
    if record.get("key") != wanted_key:
        report.errors.append(
            Finding(line.where, record["seq"], f"checkpoint signed with key {record.get('key')}, not {wanted_key}")
        )
    elif not signature_valid(record, public_key):
        report.errors.append(
            Finding(line.where, record["seq"], "checkpoint signature does not match: the chain before it was rewritten")
        )
    elif not chain.broken:
        chain.signed_through = record["seq"]


def _declared_losses(records: Iterable[dict[str, Any]]) -> dict[str, dict[int, list[tuple[int, str]]]]:
    """Per instance, the ranges loss records declare: first seq -> [(last seq, hash of the last)]."""
    found: dict[str, dict[int, list[tuple[int, str]]]] = {}
    for record in records:
        first, last = record.get("from_seq"), record.get("to_seq")
        if record.get("kind") == "loss" and isinstance(first, int) and isinstance(last, int) and last >= first:
            ranges = found.setdefault(str(record.get("instance", "")), {})
            ranges.setdefault(first, []).append((last, str(record.get("last_hash"))))
    return found


def _covered(ranges: dict[int, list[tuple[int, str]]], first: int, end: int, prev: str) -> bool:
    """Whether declared losses cover `first..end-1` exactly, the last of them hashing to `prev`."""
    for last, last_hash in ranges.get(first, ()):
        if last == end - 1 and last_hash == prev:
            return True
        if last < end - 1 and _covered(ranges, last + 1, end, prev):
            return True
    return False


def _parse(text: str) -> dict[str, Any] | None:
    try:
        record = json.loads(text)
    except ValueError:
        return None
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("seq"), int)
        or not isinstance(record.get("prev"), str)
    ):
        return None
    return record


def _first_seq(data: bytes) -> float:
    for chunk in data.split(b"\n", 64)[:64]:
        record = _parse(chunk.decode("utf-8", "replace"))
        if record is not None:
            return float(record["seq"])
    return float("inf")
