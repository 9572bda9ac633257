"""The HTTP door on the httptools engine (`listeners.http.engine: httptools`).

The same door as `http.py`, on `h1_server.py`'s connections instead of
aiohttp's server: a parsed request becomes the same `Call` (canonical path,
query, lower-cased header metadata, client address through trusted proxies,
request id, client certificate on TLS), is resolved in the live table by
`HttpDoor`, and runs the same pipeline. Replies are rendered here as bytes:
an upstream reply's head and a bytes body leave in one write, a streamed body
follows chunk by chunk with the connection's write backpressure, and local
replies are the Google error JSON of `http.py`'s `error_body`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from email.utils import formatdate
from functools import lru_cache, partial
from http import HTTPStatus

from multidict import CIMultiDict

from edge.body import RequestBody
from edge.call import Call, Denial, Metadata, Peer, Reply
from edge.errors import EdgeError, PayloadTooLarge, Status
from edge.forwarded import client_address
from edge.frontends.h1_server import H1Connection, H1Listener, H1Request
from edge.frontends.http import JSON, HttpDoor, add_stage_headers, error_body
from edge.ids import caller_request_id
from edge.ids import request_id as new_request_id
from edge.paths import PathError, canonical_path
from edge.routes import route_http_call

log = logging.getLogger("edge.http")

STATUS_LINES = {int(s): f"HTTP/1.1 {int(s)} {s.phrase}\r\n" for s in HTTPStatus}
NO_BODY_STATUSES = frozenset({204, 304})
REPLACED = frozenset({"x-request-id", "content-length", "connection", "keep-alive", "transfer-encoding"})


class H1Door:
    def __init__(self, door: HttpDoor) -> None:
        self.door = door
        self.table = door.table
        self.pipeline = door.pipeline
        self.forward = door.forward
        self.limits = door.limits
        self.forwarding = door.forwarding
        self.scheme = door.scheme

    def listener(self) -> H1Listener:
        return H1Listener(self.handle, self.limits, self._refused)

    def handle(self, request: H1Request, connection: H1Connection) -> Awaitable[None]:
        """The pipeline's run of this request, for the connection to await."""
        return self.pipeline.run(
            self._call(request, connection), self.forward, partial(self._deliver, request, connection)
        )

    def _refused(self, status: int, code: Status, message: str, connection: H1Connection) -> bytes:
        """The reply to a request that could not be parsed (400) or whose head is too large (431), audited.

        No route, method or path is known, but the attempt is a call auditors
        want to see (request smuggling and scanners show up here): the record
        and the reply's `x-request-id` are the same.
        """
        address, port = connection.peer
        call = Call(
            ingress="http",
            method="",
            path="",
            peer=Peer(address, port),
            metadata=Metadata(),
            host=connection.host,
            scheme=self.scheme,
            request_id=new_request_id(),
        )
        self.pipeline.refused(call, Denial(code, message, http=status))
        return parse_error_reply(status, code, message, call.request_id)

    def _call(self, request: H1Request, connection: H1Connection) -> Call:
        metadata = Metadata(request.headers)
        forwarding = self.forwarding
        given = metadata.get(forwarding.request_id_header)
        address, port = connection.peer
        if forwarding.trusted_proxies:
            forwarded = [str(v) for v in metadata.getall("x-forwarded-for")]
            address = client_address(address, forwarded, forwarding.trusted_proxies)
        raw_path, _, query = request.target.partition("?")
        certificate = None
        if self.scheme == "https" and connection.ssl_object is not None:
            certificate = connection.ssl_object.getpeercert(binary_form=True)
        call = Call(
            ingress="http",
            method=request.method,
            path=raw_path,
            peer=Peer(address, port, certificate),
            metadata=metadata,
            query=query,
            host=str(metadata.get("host") or connection.host),
            scheme=self.scheme,
            request_id=caller_request_id(given),
        )
        try:
            call.path = canonical_path(raw_path)
            route_http_call(self.door.table.current, call)
            call.body = self._body(request, call)
        except PathError as bad:
            call.rejected = Denial(Status.INVALID_ARGUMENT, f"bad path: {bad}")
        except EdgeError as error:
            call.rejected = Denial.from_error(error)
        return call

    def _body(self, request: H1Request, call: Call) -> RequestBody | bytes:
        if request.body is None:
            return b""
        length = request.content_length
        if length is not None and length > self.limits.max_body:
            raise PayloadTooLarge(f"request body is larger than {self.limits.max_body} bytes")
        return RequestBody(request.body, call, self.limits.max_body)

    async def _deliver(self, request: H1Request, connection: H1Connection, call: Call, reply: Reply) -> None:
        if reply.denial is not None:
            self._deliver_local(request, connection, call, reply.denial)
            return
        status = reply.http_status
        staged = call.reply_headers  # they replace the upstream's headers of the same names
        skipped = _replaced_with(tuple([name for name, _ in staged])) if staged else REPLACED
        lines = [STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n"]
        length: str | None = None
        dated = False
        for name, value in reply.headers:
            key = name.lower()
            text = value if isinstance(value, str) else value.decode("latin-1")
            if key in skipped:
                if key == "content-length":
                    length = text
                continue
            if key == "date":
                dated = True
            lines.append(f"{name}: {text}\r\n")
        lines += [f"{name}: {value}\r\n" for name, value in staged]
        lines.append(f"x-request-id: {call.request_id}\r\n")
        if not dated:
            lines.append(_date_line())
        body = reply.body
        head_only = request.method == "HEAD" or status in NO_BODY_STATUSES or status < 200
        if isinstance(body, bytes):
            if head_only:
                body = b""
                if length is not None:
                    lines.append(f"content-length: {length}\r\n")
            else:
                lines.append(f"content-length: {len(body)}\r\n")
            lines.append(_connection_line(request, connection.keeps_alive(request)))
            connection.write(_encode(lines) + body if body else _encode(lines))
            call.bytes_out += len(body)
            return
        chunked = False
        if length is not None:
            lines.append(f"content-length: {length}\r\n")
        elif not head_only and request.version == "1.1":
            chunked = True
            lines.append("transfer-encoding: chunked\r\n")
        elif not head_only:
            request.keep_alive = False  # the end of the connection ends the body
        lines.append(_connection_line(request, connection.keeps_alive(request)))
        iterator = aiter(body)
        try:
            connection.write(_encode(lines))
            if not head_only:
                async for chunk in iterator:
                    if not chunk:
                        continue
                    connection.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                    call.bytes_out += len(chunk)
                    await connection.drain()
                if chunked:
                    connection.write(b"0\r\n\r\n")
        except EdgeError as error:
            log.warning("request %s: %s; closing the connection", call.request_id, error.message)
            call.decisions["aborted"] = error.message
            connection.abort()
            raise ConnectionResetError(error.message) from None
        finally:
            close = getattr(iterator, "aclose", None)
            if close is not None:
                await close()

    def _deliver_local(self, request: H1Request, connection: H1Connection, call: Call, denial: Denial) -> None:
        body = error_body(denial.http_status, denial.status, denial.message, denial.details)
        headers: CIMultiDict[str] = CIMultiDict(denial.headers)
        headers["x-request-id"] = call.request_id
        add_stage_headers(headers, call.reply_headers)
        if denial.http_status == 413:
            request.keep_alive = False
        status = denial.http_status
        lines = [STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n"]
        lines += [f"{name}: {value}\r\n" for name, value in headers.items()]
        lines += [f"content-type: {JSON}\r\n", f"content-length: {len(body)}\r\n", _date_line()]
        lines.append(_connection_line(request, connection.keeps_alive(request)))
        connection.write(_encode(lines) + (b"" if request.method == "HEAD" else body))
        call.bytes_out += len(body)


def parse_error_reply(status: int, code: Status, message: str, request_id: str) -> bytes:
    """The whole reply to a request that could not be parsed (400) or whose head is too large (431)."""
    body = error_body(status, code, message)
    lines = [
        STATUS_LINES[status],
        f"content-type: {JSON}\r\n",
        f"content-length: {len(body)}\r\n",
        f"x-request-id: {request_id}\r\n",
        _date_line(),
        "connection: close\r\n\r\n",
    ]
    return _encode(lines) + body


@lru_cache(maxsize=64)
def _replaced_with(staged: tuple[str, ...]) -> frozenset[str]:
    """The upstream headers a reply drops when stages add these: stages add the same few names on every call."""
    return REPLACED.union([name.lower() for name in staged])


def _connection_line(request: H1Request, keep_alive: bool) -> str:
    """The last header line; the decision is kept on the request, so the connection does what it said."""
    request.keep_alive = keep_alive
    if not keep_alive:
        return "connection: close\r\n\r\n"
    return "connection: keep-alive\r\n\r\n" if request.version == "1.0" else "\r\n"


def _encode(lines: list[str]) -> bytes:
    text = "".join(lines)
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode()


_date_cache: tuple[int, str] = (0, "")


def _date_line() -> str:
    """The `Date` header, formatted once a second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, f"date: {formatdate(now, usegmt=True)}\r\n")
    return _date_cache[1]
