"""One status vocabulary for the whole gateway.

Every reply the gateway makes itself carries a `Status` from the canonical gRPC
code space; `http_status` maps it to HTTP by the `google/rpc/code.proto` table.
Expected failures are `EdgeError`s raised where they are detected (an upstream
client, the body reader) and turned into replies in one place, the pipeline.

    EdgeError(status, message)
     +-- BadRequest          INVALID_ARGUMENT, 400
     +-- PayloadTooLarge     RESOURCE_EXHAUSTED, 413
     +-- UpstreamUnavailable UNAVAILABLE, 502 (refused, reset, no healthy endpoint)
     +-- UpstreamTimeout     DEADLINE_EXCEEDED, 504
"""

from __future__ import annotations

import enum


class Status(enum.IntEnum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


_HTTP_BY_STATUS = {
    Status.OK: 200,
    Status.CANCELLED: 499,
    Status.UNKNOWN: 500,
    Status.INVALID_ARGUMENT: 400,
    Status.DEADLINE_EXCEEDED: 504,
    Status.NOT_FOUND: 404,
    Status.ALREADY_EXISTS: 409,
    Status.PERMISSION_DENIED: 403,
    Status.RESOURCE_EXHAUSTED: 429,
    Status.FAILED_PRECONDITION: 400,
    Status.ABORTED: 409,
    Status.OUT_OF_RANGE: 400,
    Status.UNIMPLEMENTED: 501,
    Status.INTERNAL: 500,
    Status.UNAVAILABLE: 503,
    Status.DATA_LOSS: 500,
    Status.UNAUTHENTICATED: 401,
}

_STATUS_BY_HTTP = {
    400: Status.INVALID_ARGUMENT,
    401: Status.UNAUTHENTICATED,
    403: Status.PERMISSION_DENIED,
    404: Status.UNIMPLEMENTED,
    409: Status.ABORTED,
    413: Status.RESOURCE_EXHAUSTED,
    429: Status.RESOURCE_EXHAUSTED,
    431: Status.RESOURCE_EXHAUSTED,
    499: Status.CANCELLED,
    501: Status.UNIMPLEMENTED,
    502: Status.UNAVAILABLE,
    503: Status.UNAVAILABLE,
    504: Status.DEADLINE_EXCEEDED,
}


def http_status(status: Status) -> int:
    """The HTTP status for a canonical code (`google/rpc/code.proto`)."""
    return _HTTP_BY_STATUS[status]


def status_for_http(code: int) -> Status:
    """The canonical code closest to an HTTP status (used for gateway-made replies and audit)."""
    if code < 400:
        return Status.OK
    return _STATUS_BY_HTTP.get(code, Status.INTERNAL if code >= 500 else Status.INVALID_ARGUMENT)


class EdgeError(Exception):
    """An expected failure that becomes a local reply.

    `http` overrides the HTTP status where the table has a finer answer than the
    canonical code (413/431 for RESOURCE_EXHAUSTED, 502 for UNAVAILABLE).
    """

    status: Status = Status.INTERNAL
    http: int | None = None

    def __init__(self, message: str, *, status: Status | None = None, http: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if http is not None:
            self.http = http


class BadRequest(EdgeError):
    status = Status.INVALID_ARGUMENT


class PayloadTooLarge(EdgeError):
    status = Status.RESOURCE_EXHAUSTED
    http = 413


class UpstreamUnavailable(EdgeError):
    status = Status.UNAVAILABLE
    http = 502


class UpstreamTimeout(EdgeError):
    status = Status.DEADLINE_EXCEEDED
    http = 504
