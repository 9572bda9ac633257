"""One call on the h2 gRPC door: its HTTP/2 stream, the caller's messages in, the reply out.

A `GrpcStream` is fed by its `GrpcH2Connection` (`received`, `finished`) and
read by the pipeline (`requests` for a streamed call; a unary call's one
message is taken whole). The caller's flow-control window reopens as its
messages are taken, so a slow upstream holds the caller back; bytes of a
message not yet whole are returned while no whole message waits, up to
`PARTIAL_BUDGET` a connection (else a few large messages on concurrent
streams could exhaust the connection window with no message ending: a
deadlock). `deliver` writes a `Reply` as response headers, framed messages
and trailers, or one trailers-only block for a local answer.

Every frame the call moves, either way, sets `moved`: a store, no clock read,
on the hot path. The connection's periodic check (`GrpcH2Connection._due`)
reads and clears it to find calls idle past `limits.stream_idle_timeout`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

from edge.call import Call, Denial, Metadata, MetaValue, Reply
from edge.errors import EdgeError, Status
from edge.frontends.grpc import NO_MESSAGE, denial_trailers, relay, with_gateway_keys
from edge.grpc_wire import ACCEPT_ENCODING, Deframer, WireError, encode_metadata, frame, quote_message
from edge.http2 import WINDOW

if TYPE_CHECKING:
    from edge.frontends.grpc_h2 import GrpcH2Connection

log = logging.getLogger("edge.grpc")

PARTIAL_BUDGET = WINDOW  # bytes of unfinished messages a connection returns ahead of their message
RESPONSE_HEAD = [(":status", "200"), ("content-type", "application/grpc"), ("grpc-accept-encoding", ACCEPT_ENCODING)]
OK_TRAILERS = [("grpc-status", "0")]
STATUS_TEXT = {status: str(status.value) for status in Status}


class GrpcStream:
    """One call on one HTTP/2 stream: the caller's messages in, the reply out."""

    __slots__ = (
        "advanced",
        "call",
        "connection",
        "deframer",
        "ended",
        "held",
        "id",
        "messages",
        "metadata",
        "moved",
        "own",
        "path",
        "quiet_since",
        "refusal",
        "responded",
        "task",
        "timeout",
        "unacked",
        "unary_request",
        "unary_response",
        "waiter",
    )

    def __init__(self, connection: GrpcH2Connection, stream_id: int, path: str, deframer: Deframer) -> None:
        self.connection = connection
        self.id = stream_id
        self.path = path
        self.metadata = Metadata()
        self.timeout: float | None = None
        self.deframer = deframer
        self.unary_request = False
        self.unary_response = False
        self.messages: deque[bytes] = deque()
        self.ended = False
        self.waiter: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.unacked = 0  # flow-controlled bytes received and not yet returned to the caller
        self.advanced = 0  # bytes returned ahead of the unfinished message they belong to
        self.responded = False
        self.held: bytes | None = None
        self.call: Call | None = None  # once its pipeline runs
        self.refusal: Denial | None = None  # the door ended the call before its task ran
        self.own = False  # answered by the gateway's own services (health, reflection)
        self.moved = True  # a frame went either way since the connection's last idle check
        self.quiet_since = 0.0  # the check that last saw it move

    # the caller's side

    def received(self, data: bytes, flow: int) -> None:
        """Raises `WireError` for a malformed message, or a unary call's second one."""
        self.moved = True
        self.unacked += flow
        messages = self.deframer.feed(data)
        if messages:
            if self.advanced:
                self.connection.refund(self)  # the message they were part of is whole now
            self.messages.extend(messages)
            if self.unary_request and len(self.messages) > 1:
                raise WireError("a unary call carried more than one message", status=Status.INTERNAL)
            self._wake()
        elif not self.messages:
            self.return_window()

    def give_back(self) -> None:
        """Return every received byte to the caller's windows."""
        if self.unacked:
            self.connection.acknowledge(self.id, self.unacked)
            self.unacked = 0

    def return_window(self) -> None:
        """No whole message is queued: the bytes held are consumed, or part of a message that needs the rest.

        Those of an unfinished message go back within the connection's
        `PARTIAL_BUDGET`; past it they wait until another stream's message
        ends or its stream does (`GrpcH2Connection.refund`).
        """
        if not self.unacked:
            return
        if self.deframer.pending:
            connection = self.connection
            if connection.advanced + self.unacked > PARTIAL_BUDGET:
                connection.starved.add(self)
                return
            connection.advanced += self.unacked
            self.advanced += self.unacked
        self.give_back()

    def release(self) -> None:
        """The stream is done: what it holds goes back to the connection window and the budget."""
        self.give_back()
        if self.advanced:
            self.connection.refund(self)

    def finished(self) -> None:
        self.ended = self.moved = True
        if self.deframer.pending:
            raise WireError("the request stream ended inside a message", status=Status.INTERNAL)
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def requests(self) -> AsyncIterator[bytes]:
        """The caller's messages as they arrive; their window reopens as they are taken, so a slow upstream holds the caller back."""
        connection = self.connection
        while True:
            if self.messages:
                message = self.messages.popleft()
                if not self.messages:
                    self.return_window()
                yield message
            elif self.ended:
                return
            else:
                self.waiter = connection.loop.create_future()
                await self.waiter

    # the reply

    async def deliver(self, call: Call, reply: Reply) -> None:
        if reply.denial is not None:
            self.end_locally(call, reply.denial)
            return
        self.open_reply(encode_metadata(with_gateway_keys(reply.headers, call)))
        body = reply.body
        if isinstance(body, bytes) and (self.unary_response or call.unary):
            call.bytes_out += len(body)
            await self.send_message(body)
            self.end(reply.status, reply.message, reply.trailers)
            return
        try:
            send = None if self.unary_response else self.send_message
            count, self.held = await relay(call, body, send)
        except EdgeError as error:
            log.warning("request %s: %s; ending the call", call.request_id, error.message)
            call.decisions["aborted"] = error.message
            self.end(error.status, error.message, [])
            return
        if self.unary_response and reply.status is Status.OK:
            if count != 1:
                self.end(Status.INTERNAL, NO_MESSAGE if count == 0 else "the upstream sent several messages", [])
                return
            assert self.held is not None
            await self.send_message(self.held)
        self.end(reply.status, reply.message, reply.trailers)

    async def send_message(self, message: bytes) -> None:
        """One response message, framed, as the caller's windows allow."""
        self.moved = True
        await self.connection.send_data(self.id, frame(message))

    def open_reply(self, headers: Sequence[tuple[str, str]]) -> None:
        """The response headers (initial metadata), once, before any message."""
        if not self.responded:
            self.responded = self.moved = True
            self.connection.send_headers(self.id, [*RESPONSE_HEAD, *headers])

    def end(self, status: Status, message: str, trailers: Sequence[tuple[str, MetaValue]]) -> None:
        """The trailers after the response headers: status, message, trailing metadata; the stream ends."""
        block = OK_TRAILERS if status is Status.OK and not message else [("grpc-status", STATUS_TEXT[status])]
        if message:
            block = [*block, ("grpc-message", quote_message(message))]
        if trailers:
            block = [*block, *encode_metadata(trailers)]
        self.connection.send_headers(self.id, block, end_stream=True)

    def end_locally(self, call: Call, denial: Denial) -> None:
        """A local answer: one trailers-only block carrying the status, the message and the gateway's keys."""
        self.answer(denial.status, denial.message, denial_trailers(call, denial))

    def answer(self, status: Status, message: str, trailers: Sequence[tuple[str, MetaValue]] = ()) -> None:
        """End the stream with a trailers-only response, or with trailers if the headers went already."""
        if self.responded:
            self.end(status, message, trailers)
            return
        self.responded = True
        block = [(":status", "200"), ("content-type", "application/grpc"), ("grpc-status", STATUS_TEXT[status])]
        if message:
            block.append(("grpc-message", quote_message(message)))
        self.connection.send_headers(self.id, [*block, *encode_metadata(trailers)], end_stream=True)
