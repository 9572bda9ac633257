"""One gRPC call on one HTTP/2 stream, the client's side: what was sent, what came back, how it ended.

`GrpcExchange` is the `StreamHandler` an `H2ClientConnection` reports a
stream's events to: response headers (or a trailers-only answer), DATA
deframed into messages, trailers, a reset or a lost connection, the deadline.
It turns them into the gRPC ending (status, message, trailing metadata), by
the spec's rules for answers that are not gRPC (PROTOCOL-HTTP2.md), and
holds a streamed reply's messages until the consumer takes them, giving
their bytes back to the backend's window only then. `ReplyMessages` is such
a reply's body iterator.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from h2.errors import ErrorCodes

from edge.call import MetaValue, Reply
from edge.errors import Status, http_status
from edge.grpc_wire import Deframer, WireError, decode_value, status_from_http, unquote_message
from edge.upstream import NO_MESSAGES
from edge.upstream.grpc_metadata import RESPONSE_RESERVED
from edge.upstream.h2_client import H2ClientConnection, Headers

log = logging.getLogger("edge.upstream.grpc")

Metadata = list[tuple[str, MetaValue]]

# RST_STREAM codes as call statuses (PROTOCOL-HTTP2.md, "Errors"); anything else is INTERNAL.
RESET_STATUS: dict[int, Status] = {
    ErrorCodes.REFUSED_STREAM: Status.UNAVAILABLE,
    ErrorCodes.CANCEL: Status.CANCELLED,
    ErrorCodes.ENHANCE_YOUR_CALM: Status.RESOURCE_EXHAUSTED,
    ErrorCodes.INADEQUATE_SECURITY: Status.PERMISSION_DENIED,
}
STATUS_TEXT = {str(status.value): status for status in Status}


class GrpcExchange:
    """One gRPC call on one HTTP/2 stream: what was asked, what has come back, and how it ended."""

    __slots__ = (
        "_deframer",
        "_held",
        "_messages",
        "_reply_message",
        "_waiter",
        "conn",
        "initial",
        "max_message",
        "message",
        "pump",
        "refused",
        "sent_end",
        "status",
        "stream_id",
        "trailers",
        "unary",
        "when",
    )

    def __init__(self, conn: H2ClientConnection, when: float, max_message: int, unary: bool) -> None:
        self.conn = conn
        self.when = when
        self.unary = unary
        self.stream_id = 0
        self.sent_end = False
        self.initial: Metadata | None = None
        self.status: Status | None = None
        self.message = ""
        self.trailers: Metadata = []
        self.refused = False
        self.pump: asyncio.Task[None] | None = None
        self.max_message = max_message
        self._deframer: Deframer | None = None
        self._messages: deque[tuple[bytes, int]] = deque()
        self._reply_message: bytes | None = None
        self._held = 0  # received bytes not yet given back to the flow-control window
        self._waiter: asyncio.Future[None] | None = None

    # what the consumer sees

    async def wait(self) -> None:
        waiter = self._waiter = self.conn.loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def take(self) -> bytes | None:
        """The next message received, its bytes given back to the backend's window; None if none is here."""
        if not self._messages:
            return None
        message, size = self._messages.popleft()
        if size:
            self.conn.acknowledge(self.stream_id, size)
        return message

    def unary_reply(self) -> Reply:
        status = self.status
        assert status is not None
        message = self._reply_message
        return Reply(
            http_status=http_status(status),
            headers=self.initial or [],
            body=message if message is not None and status is Status.OK else NO_MESSAGES,
            status=status,
            message=self.message,
            trailers=self.trailers,
        )

    def cancel(self) -> None:
        """The caller went away: the backend is told (RST_STREAM CANCEL)."""
        self.conn.abandon(self.stream_id)
        self.fail(Status.CANCELLED, "the caller cancelled the call")

    def discard(self) -> None:
        """The consumer wants no more messages: reset an unfinished stream, give back every held byte."""
        if self.status is None:
            self.cancel()
        held = self._held + sum(size for _, size in self._messages)
        self._messages.clear()
        self._held = 0
        self.conn.acknowledge(self.stream_id, held)

    def fail(self, status: Status, message: str) -> None:
        """The gateway ends the call itself: the stream is reset if still open."""
        if self.stream_id:
            self.conn.abandon(self.stream_id)
        self._finish(status, message, [])

    def lost_stream(self) -> None:
        """Sending found the stream closed: its ending is already known, or it is now."""
        if self.status is None:
            self._finish(Status.UNAVAILABLE, "the upstream stream closed while the request was sent", [])

    # what the connection reports (StreamHandler)

    def on_headers(self, headers: Headers, ended: bool) -> None:
        code, content_type, status, message, encoding, metadata = _read(headers)
        if code != "200" or (content_type is not None and not content_type.startswith("application/grpc")):
            self._not_grpc(code, content_type, ended)
            return
        if ended:
            self.initial = []
            self._finish_with(status, message, metadata)
            return
        self.initial = metadata
        self._deframer = Deframer(self.max_message, encoding)
        if not self.unary:
            self._wake()

    def on_data(self, data: bytes, flow: int) -> None:
        deframer = self._deframer
        if self.unary or self.status is not None or deframer is None:
            self.conn.acknowledge(self.stream_id, flow)
        else:
            self._held += flow
        if self.status is not None:
            return
        if deframer is None:
            self.fail(Status.INTERNAL, "the upstream sent data before response headers")
            return
        try:
            messages = deframer.feed(data)
        except WireError as error:
            self.fail(error.status, error.message)
            return
        if messages:
            self._received(messages)

    def on_trailers(self, headers: Headers) -> None:
        _, _, status, message, _, metadata = _read(headers)
        if self._deframer is not None and self._deframer.pending:
            self._finish(Status.INTERNAL, "the upstream ended the call inside a message", metadata)
        else:
            self._finish_with(status, message, metadata)

    def on_end(self) -> None:
        if self.status is None:
            self._finish(Status.UNKNOWN, "the upstream closed the stream without trailers", [])

    def on_reset(self, code: int) -> None:
        if self.status is None:
            self.refused = code == ErrorCodes.REFUSED_STREAM and self.initial is None
            self._finish(RESET_STATUS.get(code, Status.INTERNAL), f"the upstream reset the stream (error {code})", [])

    def on_lost(self, refused: bool) -> None:
        if self.status is None:
            self.refused = refused and self.initial is None
            self._finish(Status.UNAVAILABLE, "the connection to the upstream closed", [])

    def expire(self) -> None:
        self.conn.abandon(self.stream_id)
        if self.status is None:
            self._finish(Status.DEADLINE_EXCEEDED, "Deadline Exceeded", [])

    # inside

    def _received(self, messages: list[bytes]) -> None:
        if self.unary:
            if self._reply_message is not None or len(messages) > 1:
                self.fail(Status.INTERNAL, "the upstream sent several messages for a unary call")
                return
            self._reply_message = messages[0]
            return
        queue = self._messages
        for message in messages[:-1]:
            queue.append((message, 0))
        queue.append((messages[-1], self._held))
        self._held = 0
        self._wake()

    def _finish_with(self, status: str | None, message: str, metadata: Metadata) -> None:
        """The backend's own ending; without a grpc-status it is UNKNOWN (PROTOCOL-HTTP2.md)."""
        if status is None:
            self._finish(Status.UNKNOWN, message or "the upstream ended the call without a grpc-status", metadata)
        else:
            self._finish(STATUS_TEXT.get(status, Status.UNKNOWN), message, metadata)

    def _not_grpc(self, code: str, content_type: str | None, ended: bool) -> None:
        """A non-gRPC answer (a proxy's error page, a plain HTTP server): its status by the spec's table."""
        status = status_from_http(int(code)) if code.isdigit() else Status.UNKNOWN
        if not ended:
            self.conn.abandon(self.stream_id)
        self.initial = []
        self._finish(status, f"the upstream answered HTTP {code} ({content_type or 'no content-type'})", [])

    def _finish(self, status: Status, message: str, trailers: Metadata) -> None:
        if self.status is not None:
            return
        self.status = status
        self.message = message
        self.trailers = trailers
        pump = self.pump
        if pump is not None:
            self.pump = None
            pump.cancel()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class ReplyMessages:
    """A streamed reply's body: the backend's messages; once they end, the call's ending goes into the reply."""

    __slots__ = ("_exchange", "_reply")

    def __init__(self, exchange: GrpcExchange, reply: Reply) -> None:
        self._exchange = exchange
        self._reply = reply

    def __aiter__(self) -> ReplyMessages:
        return self

    async def __anext__(self) -> bytes:
        exchange = self._exchange
        while True:
            message = exchange.take()
            if message is not None:
                return message
            status = exchange.status
            if status is not None:
                reply = self._reply
                reply.status = status
                reply.http_status = http_status(status)
                reply.message = exchange.message
                reply.trailers = exchange.trailers
                raise StopAsyncIteration
            try:
                await exchange.wait()
            except BaseException:
                exchange.discard()
                raise

    async def aclose(self) -> None:
        self._exchange.discard()


def _read(headers: Headers) -> tuple[str, str | None, str | None, str, str | None, Metadata]:
    """A response header block: `:status`, content-type, grpc-status, grpc-message, grpc-encoding, metadata."""
    code = ""
    content_type = status = encoding = None
    message = ""
    metadata: Metadata = []
    for name, value in headers:
        if name in RESPONSE_RESERVED:
            if name == "grpc-status":
                status = value
            elif name == "grpc-message":
                message = unquote_message(value)
            elif name == "content-type":
                content_type = value
            elif name == "grpc-encoding":
                encoding = value
        elif name.startswith(":"):
            if name == ":status":
                code = value
        elif name.endswith("-bin"):
            try:
                metadata.append((name, decode_value(name, value)))
            except WireError:
                log.info("dropped response metadata %s: not base64", name)
        else:
            metadata.append((name, value))
    return code, content_type, status, message, encoding, metadata
