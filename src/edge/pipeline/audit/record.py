"""What one call's audit record says, built on the hot path and finished in the writer.

`build_record` runs in the pipeline's `finally` for every call, so it only
copies scalars out of the `Call` and `Reply` into a flat tuple, in the order
`RECORD_FIELDS` names; `finish`, in the writer, makes the dict that is
chained. A tuple costs less than a dict at each step of the hand-off, on
the loop and in the sealing process (built, marshalled, unmarshalled, freed:
no key is written or read, one object instead of a dict and its table);
the dict is built once, off the loop. The time is kept as epoch seconds and
turned into text by `finish`, and a client certificate is hashed there. Its
values are what marshal carries (text, numbers, tuples, dicts). A record
never holds tokens, bodies, query strings or raw headers: only the canonical
path, names, decisions the stages wrote, and counts.
"""

from __future__ import annotations

import hashlib
import time
from functools import lru_cache
from operator import itemgetter
from typing import Any

from edge.call import Call, Reply

CALL = "call"
_NOT_DECISIONS = frozenset({"operation"})  # has its own key

CallRecord = tuple[Any, ...]  # the values of RECORD_FIELDS, in that order
RECORD_FIELDS = (
    "time", "instance", "request_id", "trace_id", "ingress", "client_ip", "method", "path", "route",
    "operation", "upstream", "endpoint", "decisions", "status", "grpc_status", "latency_ms",
    "bytes_in", "bytes_out", "principal", "reason",
)  # fmt: skip
PRINCIPAL_FIELDS = ("subject", "roles", "method", "issuer", "certificate_fingerprint")
TALLIED = itemgetter(*map(RECORD_FIELDS.index, ("ingress", "route", "status", "grpc_status", "latency_ms")))  # metrics


def build_record(call: Call, reply: Reply | None, instance: str) -> CallRecord:
    """The values of `RECORD_FIELDS`; `principal` is None or a tuple of `PRINCIPAL_FIELDS`, `reason` None or text."""
    route = call.route
    principal = call.principal
    certificate = call.peer.certificate
    return (
        time.time(),
        instance,
        call.request_id,
        call.trace_id,
        call.ingress,
        call.peer.address,
        call.method,
        call.path,
        route.name if route else None,
        call.decisions.get("operation"),
        route.upstream if route else None,
        call.endpoint,
        call.decisions,
        reply.http_status if reply else 500,
        reply.status.name if reply else "INTERNAL",
        round((time.monotonic() - call.started) * 1000, 3),
        call.bytes_in,
        call.bytes_out,
        None
        if principal is None and certificate is None
        else (
            principal.subject if principal else None,
            principal.roles if principal else (),
            principal.method if principal else "client-cert",
            principal.issuer if principal else None,
            certificate,  # DER here; `finish` hashes it off the loop
        ),
        reply.denial.message if reply is not None and reply.denial is not None else None,
    )


def finish(record: CallRecord) -> dict[str, Any]:
    """The record that is chained: text time, certificate hash, decisions without what has its own key.

    A record without a principal or a reason has no such key, as before the records were tuples.
    """
    (
        seconds, instance, request_id, trace_id, ingress, client_ip, method, path, route,
        operation, upstream, endpoint, decisions, status, grpc_status, latency_ms,
        bytes_in, bytes_out, principal, reason,
    ) = record  # fmt: skip
    if not decisions.keys().isdisjoint(_NOT_DECISIONS):
        decisions = dict(decisions)  # the call's own dict when the writer is a thread
        for name in _NOT_DECISIONS:
            decisions.pop(name, None)
    chained = {
        "kind": CALL,
        "time": utc_text(seconds),
        "instance": instance,
        "request_id": request_id,
        "trace_id": trace_id,
        "ingress": ingress,
        "client_ip": client_ip,
        "method": method,
        "path": path,
        "route": route,
        "operation": operation,
        "upstream": upstream,
        "endpoint": endpoint,
        "decisions": decisions,
        "status": status,
        "grpc_status": grpc_status,
        "latency_ms": latency_ms,
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
    }
    if principal is not None:
        subject, roles, principal_method, issuer, certificate = principal
        chained["principal"] = {
            "subject": subject,
            "roles": list(roles),
            "method": principal_method,
            "issuer": issuer,
            "certificate_fingerprint": _fingerprint(certificate) if isinstance(certificate, bytes) else certificate,
        }
    if reason is not None:
        chained["reason"] = reason
    return chained


def utc_text(seconds: float) -> str:
    """`2024-10-03T12:00:00.123Z`: UTC, millisecond precision."""
    whole = int(seconds)
    return _utc_second(whole) + _MILLIS[int((seconds - whole) * 1000)]


_MILLIS = tuple(f".{millis:03d}Z" for millis in range(1000))


@lru_cache(maxsize=8)
def _utc_second(whole: int) -> str:
    """The records of a batch mostly share their second: format it once."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))


@lru_cache(maxsize=256)
def _fingerprint(der: bytes) -> str:
    """A client's certificate comes back on every call of its connections: hash each one once."""
    return hashlib.sha256(der).hexdigest()
