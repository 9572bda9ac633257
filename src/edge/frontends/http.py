"""The HTTP front door: aiohttp's low-level server and one catch-all handler.

The handler turns a request into a `Call` (canonical path, lower-cased
headers, a streaming body), resolves it in the live route table, and runs the
pipeline; `deliver` writes the `Reply` back, streaming upstream bodies chunk
by chunk. Errors aiohttp detects while parsing (bad request lines, oversized
headers) are answered here too, in the same JSON error shape.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler
from multidict import CIMultiDict

from edge.body import RequestBody
from edge.call import Call, Denial, Metadata, Peer, Reply
from edge.config.gateway import Forwarding, Limits
from edge.errors import EdgeError, PayloadTooLarge, Status
from edge.forwarded import client_address
from edge.ids import caller_request_id
from edge.ids import request_id as new_request_id
from edge.paths import PathError, canonical_path
from edge.pipeline import Forward, Pipeline
from edge.routes import LiveTable, route_http_call

log = logging.getLogger("edge.http")

JSON = "application/json"


def error_body(status: int, code: Status, message: str, details: tuple[Any, ...] = ()) -> bytes:
    """The Google API error shape the design promises for every local reply."""
    error: dict[str, Any] = {"code": status, "status": code.name, "message": message}
    if details:
        error["details"] = list(details)
    return json.dumps({"error": error}, separators=(",", ":")).encode()


def add_stage_headers(headers: CIMultiDict[str], pairs: list[tuple[str, str]]) -> None:
    """Headers stages put on every reply (RateLimit-*); they replace a backend's of the same name."""
    if not pairs:
        return
    for name in {name for name, _ in pairs}:
        headers.popall(name, None)
    for name, value in pairs:
        headers.add(name, value)


class HttpDoor:
    def __init__(
        self,
        table: LiveTable,
        pipeline: Pipeline,
        forward: Forward,
        limits: Limits,
        forwarding: Forwarding,
        scheme: str = "http",
    ) -> None:
        self.table = table
        self.pipeline = pipeline
        self.forward = forward
        self.limits = limits
        self.forwarding = forwarding
        self.scheme = scheme

    def server(self, **kwargs: Any) -> web.Server:
        return _Server(
            self.handle,
            max_line_size=self.limits.max_header_line,
            max_field_size=self.limits.max_header_line,
            max_headers=self.limits.max_headers,
            access_log=None,
            **kwargs,
        )

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        call = self._call(request)
        sent: list[web.StreamResponse] = []

        async def deliver(call: Call, reply: Reply) -> None:
            sent.append(await self._deliver(request, call, reply))

        await self.pipeline.run(call, self.forward, deliver)
        return sent[0]

    def _call(self, request: web.BaseRequest) -> Call:
        metadata = Metadata([(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in request.raw_headers])
        given = metadata.get(self.forwarding.request_id_header)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        address = peer[0] if peer else "unknown"
        if self.forwarding.trusted_proxies:
            forwarded = [str(v) for v in metadata.getall("x-forwarded-for")]
            address = client_address(address, forwarded, self.forwarding.trusted_proxies)
        raw_path, _, query = request.raw_path.partition("?")
        call = Call(
            ingress="http",
            method=request.method,
            path=raw_path,
            peer=Peer(
                address, peer[1] if peer else 0, _client_certificate(request) if self.scheme == "https" else None
            ),
            metadata=metadata,
            query=query,
            host=request.host,
            scheme=self.scheme,
            request_id=caller_request_id(given),
        )
        try:
            call.path = canonical_path(raw_path)
            route_http_call(self.table.current, call)
            call.body = self._body(request, call)
        except PathError as error:
            call.rejected = Denial(Status.INVALID_ARGUMENT, f"bad path: {error}")
        except EdgeError as error:
            call.rejected = Denial.from_error(error)
        return call

    def _body(self, request: web.BaseRequest, call: Call) -> RequestBody | bytes:
        if not request.body_exists:
            return b""
        length = request.content_length
        if length is not None and length > self.limits.max_body:
            raise PayloadTooLarge(f"request body is larger than {self.limits.max_body} bytes")
        return RequestBody(request.content.iter_chunked(64 * 1024), call, self.limits.max_body)

    async def _deliver(self, request: web.BaseRequest, call: Call, reply: Reply) -> web.StreamResponse:
        if reply.denial is not None:
            return await self._deliver_local(request, call, reply.denial)
        body = reply.body
        response = (_WholeResponse if isinstance(body, bytes) else web.StreamResponse)(status=reply.http_status)
        headers = response.headers
        headers.extend([(n, v if isinstance(v, str) else v.decode("latin-1")) for n, v in reply.headers])
        headers["x-request-id"] = call.request_id
        add_stage_headers(headers, call.reply_headers)
        if isinstance(body, bytes):
            await response.prepare(request)
            call.bytes_out += len(body)
            await response.write_eof(body)  # headers and body in one write
            return response
        iterator = aiter(body)
        try:
            await response.prepare(request)
            if request.method != "HEAD":
                async for chunk in iterator:
                    await response.write(chunk)
                    call.bytes_out += len(chunk)
        except EdgeError as error:
            log.warning("request %s: %s; closing the connection", call.request_id, error.message)
            call.decisions["aborted"] = error.message
            if request.transport is not None:
                request.transport.abort()
            raise ConnectionResetError(error.message) from None
        finally:
            close = getattr(iterator, "aclose", None)
            if close is not None:
                await close()
        await response.write_eof()
        return response

    async def _deliver_local(self, request: web.BaseRequest, call: Call, denial: Denial) -> web.StreamResponse:
        body = error_body(denial.http_status, denial.status, denial.message, denial.details)
        response = web.Response(status=denial.http_status, body=body, content_type=JSON)
        for name, value in denial.headers:
            response.headers.add(name, value)
        response.headers["x-request-id"] = call.request_id
        add_stage_headers(response.headers, call.reply_headers)
        if isinstance(call.body, RequestBody) or denial.http_status == 413:
            response.force_close()
        await response.prepare(request)
        await response.write_eof()
        call.bytes_out += len(body)
        return response


def _client_certificate(request: web.BaseRequest) -> bytes | None:
    """DER of the client certificate the TLS handshake verified (against the listener's client CA), if any."""
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    return ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None


class _WholeResponse(web.StreamResponse):
    """A reply whose body is already here: headers and body leave in one write, not two system calls."""

    _send_headers_immediately = False


class _Handler(RequestHandler):
    """aiohttp's connection handler with parse errors answered in our error shape."""

    def handle_error(
        self, request: Any, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if isinstance(exc, ConnectionError):
            raise ConnectionResetError("the client went away") from exc
        if status == 500 or not isinstance(exc, BadHttpMessage):
            return super().handle_error(request, status, exc, message)
        too_large = isinstance(exc, LineTooLong) or "Too many headers" in str(exc)
        code = 431 if too_large else 400
        text = "request line or headers too large" if too_large else f"malformed request: {exc.message}"
        response = web.Response(
            status=code,
            body=error_body(code, Status.RESOURCE_EXHAUSTED if too_large else Status.INVALID_ARGUMENT, text),
            content_type=JSON,
            headers={"x-request-id": new_request_id()},
        )
        response.force_close()
        return response


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _Handler(self, loop=self._loop, **self._kwargs)
