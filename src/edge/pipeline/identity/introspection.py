"""Opaque OAuth2 tokens, asked of an RFC 7662 introspection endpoint.

The gateway authenticates to the endpoint as a client (client credentials,
HTTP Basic with form-encoded id and secret, RFC 6749 2.3.1) and posts the
token. An active answer becomes a `Verified` entry that the stage caches no
longer than the token's `exp` nor `cache_ttl`; an inactive one is remembered
for `negative_ttl`, so a replayed dead token does not cost a round trip.
Concurrent requests with the same token share one call to the endpoint. An
endpoint that cannot be reached is `IdentityUnavailable` (fail closed).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from edge.call import Principal
from edge.config.identity import IntrospectionProvider
from edge.pipeline.identity.claims import ClaimError, caller_of
from edge.pipeline.identity.failures import AuthFailure, IdentityUnavailable
from edge.pipeline.identity.fetcher import Fetcher, FetchError
from edge.pipeline.identity.tokens import Verified

log = logging.getLogger("edge.identity.introspection")

_INACTIVE_KEPT = 4096


class Introspector:
    method = "introspection"

    def __init__(
        self, name: str, config: IntrospectionProvider, fetcher: Fetcher, clock: Callable[[], float] = time.time
    ) -> None:
        self.name = name
        self.config = config
        self.fetcher = fetcher
        self.clock = clock
        self.calls = 0
        self._headers: dict[str, str] = {}
        self._client_form: dict[str, str] = {}
        if config.client_auth == "post":
            self._client_form = {"client_id": config.client_id, "client_secret": config.client_secret}
        else:
            credentials = f"{quote(config.client_id, safe='')}:{quote(config.client_secret, safe='')}"
            self._headers = {"authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}
        self._inactive: dict[bytes, float] = {}
        self._inflight: dict[bytes, asyncio.Task[dict[str, Any]]] = {}

    async def verify(self, token: str, digest: bytes) -> Verified:
        if len(token) > self.config.max_token_size:
            raise AuthFailure(f"the token is larger than {self.config.max_token_size} bytes")
        if self._inactive.get(digest, 0.0) > self.clock():
            raise AuthFailure("the token is not active")
        task = self._inflight.get(digest)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._ask(token), name=f"introspect-{self.name}")
            self._inflight[digest] = task
            task.add_done_callback(lambda _: self._inflight.pop(digest, None))
        answer = await asyncio.shield(task)
        try:
            return self._entry(answer)
        except AuthFailure:
            if len(self._inactive) >= _INACTIVE_KEPT:
                self._inactive.clear()
            self._inactive[digest] = self.clock() + self.config.negative_ttl
            raise

    async def aclose(self) -> None:
        for task in list(self._inflight.values()):
            task.cancel()
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)

    async def _ask(self, token: str) -> dict[str, Any]:
        self.calls += 1
        form = {"token": token, "token_type_hint": "access_token", **self._client_form}
        try:
            fetched = await self.fetcher.post_form(self.config.endpoint, form, self._headers)
        except FetchError as error:
            log.warning("provider %s: introspection failed: %s", self.name, error)
            raise IdentityUnavailable(f"the introspection endpoint of provider {self.name!r} is unavailable") from None
        if not isinstance(fetched.data, dict):
            raise IdentityUnavailable(f"the introspection endpoint of provider {self.name!r} answered nonsense")
        return fetched.data

    def _entry(self, answer: dict[str, Any]) -> Verified:
        config = self.config
        now = self.clock()
        if answer.get("active") is not True:
            raise AuthFailure("the token is not active")
        exp = answer.get("exp")
        if exp is not None and (not isinstance(exp, int | float) or isinstance(exp, bool) or exp <= now):
            raise AuthFailure("the token is not active")
        if config.issuer is not None and answer.get("iss", config.issuer) != config.issuer:
            raise AuthFailure("the token's issuer is not trusted")
        if config.audience:
            aud = answer.get("aud")
            audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
            if not set(config.audience) & {a for a in audiences if isinstance(a, str)}:
                raise AuthFailure("the token is not meant for this audience")
        try:
            subject, roles, subject_header, roles_header = caller_of(answer, config.subject_claim, config.roles)
        except ClaimError as error:
            raise AuthFailure(str(error)) from None
        issuer = answer.get("iss") if isinstance(answer.get("iss"), str) else config.issuer
        principal = Principal(subject, roles, issuer=issuer, method=self.method, claims=answer)
        expires = min(float(exp) if exp is not None else now + config.cache_ttl, now + config.cache_ttl)
        return Verified(principal, self.name, expires, subject_header, roles_header)
