"""The one pipeline both front doors run: stages, then forward, then audit.

`Pipeline.run(call, forward, deliver)` asks each stage in order; a stage
returns None to go on or a `Denial` to answer locally. Otherwise `forward`
sends the call upstream. `deliver` is the front door writing the reply in its
protocol; the audit record is written in `finally`, after the reply went out,
so it holds the final status and byte counts of every call, allowed or denied.
Before any stage the call gets its trace id (`trace.py`), and a route marked
`regulated` is refused (503) while the audit trail could not keep its record.
Expected failures (`EdgeError`) become local replies here, and only here;
anything else is logged with its traceback and answered as INTERNAL. A call
cancelled under it is recorded as CANCELLED, as DEADLINE_EXCEEDED when that
came at its deadline, or with the status its front door gave it when the
door ended it (`Call.cut`, an idle stream).

A stage that never waits (the quota stages with the memory store) may offer
`decide_now(call)`, which the pipeline calls instead of awaiting the stage:
a coroutine made and run to its end for every stage of every call costs
more than the work of such a stage's cheapest path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from edge.call import Call, Denial, Reply
from edge.errors import EdgeError, Status
from edge.pipeline.audit import AuditLog
from edge.pipeline.trace import trace_id

Stage = Callable[[Call], Awaitable[Denial | None]]
Forward = Callable[[Call], Awaitable[Reply]]
Deliver = Callable[[Call, Reply], Awaitable[None]]

log = logging.getLogger("edge.pipeline")

NO_ROUTE = "no route for this path"
DEADLINE_SLACK = 0.01  # seconds: a cancel this close to the deadline came from it (clocks and timers are coarse)
AUDIT_UNAVAILABLE = "the audit trail cannot take this call now (regulated route)"


class Pipeline:
    def __init__(self, stages: Sequence[Stage], audit: AuditLog) -> None:
        self.stages = tuple(stages)
        self.audit = audit

    @property
    def stages(self) -> tuple[Stage, ...]:
        return self._stages

    @stages.setter
    def stages(self, stages: tuple[Stage, ...]) -> None:
        self._stages = stages
        self._steps = tuple((getattr(stage, "decide_now", None), stage) for stage in self._stages)

    async def run(self, call: Call, forward: Forward, deliver: Deliver) -> None:
        reply: Reply | None = None
        call.trace_id = call.trace_id or trace_id(call.metadata)
        try:
            try:
                reply = self._refusal(call)
                if reply is None:
                    for now, stage in self._steps:
                        denial = now(call) if now is not None else await stage(call)
                        if denial is not None:
                            reply = Reply.local(denial)
                            break
                    else:
                        reply = await forward(call)
            except EdgeError as error:
                reply = Reply.local(Denial.from_error(error))
            except (asyncio.CancelledError, ConnectionError):
                raise
            except Exception:
                log.exception("unexpected error handling %s %s (request %s)", call.method, call.path, call.request_id)
                reply = Reply.local(Denial(Status.INTERNAL, "internal error", http=500))
            await deliver(call, reply)
        except (asyncio.CancelledError, ConnectionError):
            if call.cut is not None:
                reply = Reply.local(call.cut)
            elif reply is None or reply.denial is None:
                reply = _ended_early(call)
            raise
        finally:
            self.audit.record(call, reply)

    def refused(self, call: Call, denial: Denial) -> None:
        """Audit a request its door answered without running the pipeline (unparseable, or not a call of the door)."""
        call.trace_id = call.trace_id or trace_id(call.metadata)
        call.rejected = denial
        self.audit.record(call, Reply.local(denial))

    def _refusal(self, call: Call) -> Reply | None:
        """The local reply to a call no stage needs to see: rejected by its door, unrouted, or regulated while audit cannot keep it."""
        if call.rejected is not None:
            return Reply.local(call.rejected)
        if call.route is None:
            return Reply.local(Denial(Status.UNIMPLEMENTED, NO_ROUTE, http=404))
        if call.route.spec is not None and call.route.spec.regulated and not self.audit.accepting():
            return Reply.local(Denial(Status.UNAVAILABLE, AUDIT_UNAVAILABLE, http=503))
        return None


def _ended_early(call: Call) -> Reply:
    """What a call cancelled before its reply went out ended with.

    A gRPC client cancels its call (RST_STREAM) when its own deadline passes,
    which is usually before the gateway's timers for the same deadline fire:
    the caller was told DEADLINE_EXCEEDED, and so is the audit trail.
    """
    remaining = call.remaining()
    if remaining is not None and remaining < DEADLINE_SLACK:
        return Reply(http_status=504, status=Status.DEADLINE_EXCEEDED, message="the call's deadline passed")
    return Reply(http_status=499, status=Status.CANCELLED, message="caller went away")
