"""What one call's audit record says, built on the hot path and finished in the writer.

`build_record` runs in the pipeline's `finally` for every call, so it only
copies scalars and small tuples out of the `Call` and `Reply` into a dict; the
time is kept as epoch seconds and turned into text by `finish` in the
writer. Its values are what marshal carries (text, numbers, tuples, dicts),
so a batch reaches the sealing process in about 1 us a record. A record never holds tokens, bodies, query strings or raw headers:
only the canonical path, names, decisions the stages wrote, and counts.
"""

from __future__ import annotations

import hashlib
import time
from functools import lru_cache
from typing import Any

from edge.call import Call, Reply

CALL = "call"
_NOT_DECISIONS = ("operation",)


def build_record(call: Call, reply: Reply | None, instance: str) -> dict[str, Any]:
    route = call.route
    principal = call.principal
    certificate = call.peer.certificate
    record: dict[str, Any] = {
        "kind": CALL,
        "time": time.time(),
        "instance": instance,
        "request_id": call.request_id,
        "trace_id": call.trace_id,
        "ingress": call.ingress,
        "client_ip": call.peer.address,
        "method": call.method,
        "path": call.path,
        "route": route.name if route else None,
        "operation": call.decisions.get("operation"),
        "upstream": route.upstream if route else None,
        "endpoint": call.endpoint,
        "decisions": call.decisions,
        "status": reply.http_status if reply else 500,
        "grpc_status": reply.status.name if reply else "INTERNAL",
        "latency_ms": round((time.monotonic() - call.started) * 1000, 3),
        "bytes_in": call.bytes_in,
        "bytes_out": call.bytes_out,
    }
    if principal is not None or certificate is not None:
        record["principal"] = {
            "subject": principal.subject if principal else None,
            "roles": list(principal.roles) if principal else [],
            "method": principal.method if principal else "client-cert",
            "issuer": principal.issuer if principal else None,
            "certificate_fingerprint": certificate,  # DER here; `finish` hashes it off the loop
        }
    if reply is not None and reply.denial is not None:
        record["reason"] = reply.denial.message
    return record


def finish(record: dict[str, Any]) -> dict[str, Any]:
    """Turn the hot-path dict into the record that is chained: text time, certificate hash, decisions copied."""
    record["time"] = utc_text(record["time"])
    principal = record.get("principal")
    if principal is not None and isinstance(principal.get("certificate_fingerprint"), bytes):
        principal["certificate_fingerprint"] = _fingerprint(principal["certificate_fingerprint"])
    decisions = record.get("decisions")
    if decisions is not None:
        record["decisions"] = decisions = dict(decisions)
        for name in _NOT_DECISIONS:
            decisions.pop(name, None)
    return record


def utc_text(seconds: float) -> str:
    """`2024-10-03T12:00:00.123Z`: UTC, millisecond precision."""
    whole = int(seconds)
    millis = int((seconds - whole) * 1000)
    return f"{_utc_second(whole)}.{millis:03d}Z"


@lru_cache(maxsize=8)
def _utc_second(whole: int) -> str:
    """The records of a batch mostly share their second: format it once."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))


@lru_cache(maxsize=256)
def _fingerprint(der: bytes) -> str:
    """A client's certificate comes back on every call of its connections: hash each one once."""
    return hashlib.sha256(der).hexdigest()
