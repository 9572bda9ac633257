"""The neutral objects both front doors speak: `Call` in, `Reply` out.

A front door turns its protocol's request into a `Call`, stages fill in the
`Principal` and may answer with a `Denial`, and an upstream client turns the
call into a `Reply`. Nothing here knows aiohttp or grpc: bodies are bytes or
async iterators of bytes, metadata is a lower-cased multi-map.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from edge.errors import EdgeError, Status, http_status

if TYPE_CHECKING:
    from edge.routes import Route

Body = bytes | AsyncIterable[bytes]
MetaValue = str | bytes
Ingress = Literal["http", "grpc"]


class Metadata:
    """Request headers or gRPC metadata: lower-cased names, repeated names kept in order."""

    __slots__ = ("_pairs",)

    def __init__(self, pairs: Iterable[tuple[str, MetaValue]] = ()) -> None:
        self._pairs = list(pairs)

    def get(self, name: str, default: MetaValue | None = None) -> MetaValue | None:
        for key, value in self._pairs:
            if key == name:
                return value
        return default

    def getall(self, name: str) -> list[MetaValue]:
        return [value for key, value in self._pairs if key == name]

    def __contains__(self, name: object) -> bool:
        return any(key == name for key, _ in self._pairs)

    def __iter__(self) -> Iterator[tuple[str, MetaValue]]:
        return iter(self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    def add(self, name: str, value: MetaValue) -> None:
        self._pairs.append((name, value))

    def set(self, name: str, value: MetaValue) -> None:
        self.remove(name)
        self._pairs.append((name, value))

    def remove(self, *names: str) -> None:
        if any(key in names for key, _ in self._pairs):
            self._pairs = [(k, v) for k, v in self._pairs if k not in names]

    def remove_where(self, drop: Any) -> None:
        """Drop every pair whose name satisfies `drop(name)` (the list is only rebuilt when one does)."""
        pairs = self._pairs
        for index, (key, _) in enumerate(pairs):
            if drop(key):
                self._pairs = pairs[:index] + [(k, v) for k, v in pairs[index + 1 :] if not drop(k)]
                return


@dataclass(slots=True)
class Peer:
    address: str
    port: int = 0
    certificate: bytes | None = None  # DER of the verified client certificate, if any


@dataclass(slots=True)
class Principal:
    subject: str
    roles: tuple[str, ...] = ()
    issuer: str | None = None
    method: str = "anonymous"  # jwt | client-cert | introspection | anonymous
    claims: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Denial:
    """A stage's answer when the call must not go on: a local reply in either protocol."""

    status: Status
    message: str
    http: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    details: tuple[Mapping[str, Any], ...] = ()

    @property
    def http_status(self) -> int:
        return self.http if self.http is not None else http_status(self.status)

    @classmethod
    def from_error(cls, error: EdgeError) -> Denial:
        return cls(error.status, error.message, error.http)


@dataclass(slots=True)
class Reply:
    """What goes back to the caller: an upstream's answer, or a `Denial` rendered locally.

    `headers` are HTTP response headers or gRPC initial metadata; `trailers`,
    `status` and `message` carry a gRPC call's ending.
    """

    http_status: int = 200
    headers: Sequence[tuple[str, MetaValue]] = field(default_factory=list)
    body: Body = b""
    status: Status = Status.OK
    message: str = ""
    trailers: list[tuple[str, MetaValue]] = field(default_factory=list)
    denial: Denial | None = None

    @classmethod
    def local(cls, denial: Denial) -> Reply:
        return cls(http_status=denial.http_status, status=denial.status, message=denial.message, denial=denial)


@dataclass(slots=True)
class Call:
    """One request through the gateway, whichever door it came in by."""

    ingress: Ingress
    method: str
    path: str
    peer: Peer
    metadata: Metadata
    body: Body = b""
    query: str = ""
    host: str = ""
    scheme: str = "http"
    request_id: str = ""
    trace_id: str = ""  # W3C trace id of `traceparent`, the same one sent upstream and audited
    deadline: float | None = None  # time.monotonic() value, from the caller or the route
    started: float = field(default_factory=time.monotonic)
    route: Route | None = None
    bindings: Mapping[str, str] = field(default_factory=dict)
    upstream_path: str = ""
    principal: Principal | None = None
    endpoint: str | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    unary: bool = False  # gRPC: one request message in `body` (bytes) and one response message expected
    decisions: dict[str, Any] = field(default_factory=dict)
    reply_headers: list[tuple[str, str]] = field(default_factory=list)  # stages' additions to any reply (RateLimit-*)
    rejected: Denial | None = None  # set by a front door that could not make sense of the request
    cut: Denial | None = None  # set by a front door that ended the call itself (an idle stream): what it was told

    def remaining(self) -> float | None:
        """Seconds left before the deadline, or None when there is none."""
        if self.deadline is None:
            return None
        return self.deadline - time.monotonic()
