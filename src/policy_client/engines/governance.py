"""The remote engine: HMS-GOV's `PolicyService` over gRPC, with TLS or mutual TLS.

One `grpc.aio` channel per client (HTTP/2 multiplexes every check over it).
Each check carries the timeout as its gRPC deadline, so the service can stop
working on an answer nobody waits for. A gRPC error is mapped here, where it
enters, to `PolicyError`. A background task asks `GetRevision` every
`revision_poll` seconds: cached answers are keyed by revision, so a policy
change on the service empties the client's cache within that interval, even
when every check is being answered from the cache.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from typing import Any

import grpc

from policy_client import proto
from policy_client.errors import PolicyError
from policy_client.model import Decision, PolicyRequest
from policy_client.settings import GovernanceService, Tls

log = logging.getLogger("policy_client.governance")


def channel_credentials(tls: Tls) -> Any:
    """Channel credentials from PEM files: `ca` to verify the service, `cert`/`key` to be verified by it."""
    return grpc.ssl_channel_credentials(
        root_certificates=tls.ca.read_bytes() if tls.ca else None,
        private_key=tls.key.read_bytes() if tls.key else None,
        certificate_chain=tls.cert.read_bytes() if tls.cert else None,
    )


class GovernanceEngine:
    immediate = False

    def __init__(self, settings: GovernanceService) -> None:
        self.settings = settings
        self.revision = ""
        self._credentials = channel_credentials(settings.tls) if settings.tls is not None else None
        self._channel: grpc.aio.Channel | None = None
        self._check: Any = None
        self._get_revision: Any = None
        self._poller: asyncio.Task[None] | None = None

    async def start(self) -> None:
        options: list[tuple[str, Any]] = [("grpc.enable_retries", 0)]
        tls = self.settings.tls
        if tls is not None and tls.server_name:
            options.append(("grpc.ssl_target_name_override", tls.server_name))
        if self._credentials is not None:
            self._channel = grpc.aio.secure_channel(self.settings.target, self._credentials, options=options)
        else:
            self._channel = grpc.aio.insecure_channel(self.settings.target, options=options)
        self._check = self._channel.unary_unary(
            proto.CHECK,
            request_serializer=proto.CheckRequest.SerializeToString,
            response_deserializer=proto.CheckResponse.FromString,
        )
        self._get_revision = self._channel.unary_unary(
            proto.GET_REVISION,
            request_serializer=proto.GetRevisionRequest.SerializeToString,
            response_deserializer=proto.GetRevisionResponse.FromString,
        )
        if self.settings.revision_poll > 0:
            self._poller = asyncio.get_running_loop().create_task(self._poll(), name="policy-revision-poll")

    async def evaluate(self, request: PolicyRequest, budget: float) -> Decision:
        if self._check is None:
            raise PolicyError("governance engine not started")
        try:
            response = await self._check(proto.request_message(request), timeout=max(budget, 0.001))
        except grpc.aio.AioRpcError as error:
            raise PolicyError(
                f"policy service {self.settings.target}: {error.code().name}: {error.details()}"
            ) from None
        decision = proto.decision_from_message(response)
        if decision.revision:
            self.revision = decision.revision
        return decision

    async def refresh_revision(self, budget: float = 1.0) -> str:
        """Ask the service which revision it decides with now; the cache keys follow it."""
        try:
            response = await self._get_revision(proto.GetRevisionRequest(), timeout=budget)
        except grpc.aio.AioRpcError as error:
            log.debug("revision poll of %s failed: %s", self.settings.target, error.code().name)
            return self.revision
        if response.revision and response.revision != self.revision:
            log.info("policy revision at %s is now %s", self.settings.target, response.revision)
            self.revision = response.revision
        return self.revision

    async def _poll(self) -> None:
        interval = self.settings.revision_poll
        while True:
            await self.refresh_revision(min(interval, 1.0))
            await asyncio.sleep(interval)

    async def aclose(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
