"""The two ways authentication fails, and the replies they become.

`AuthFailure` is the caller's problem: missing, malformed, expired or
untrusted credentials -> 401 with an RFC 6750 `WWW-Authenticate` challenge
(gRPC: UNAUTHENTICATED). `IdentityUnavailable` is ours: no key set can be
trusted, or the introspection endpoint does not answer -> 503 (gRPC:
UNAVAILABLE); identity fails closed. Descriptions are fixed texts, never
fragments of the token.
"""

from __future__ import annotations

from edge.call import Denial
from edge.errors import Status


class AuthFailure(Exception):
    def __init__(self, description: str, error: str = "invalid_token") -> None:
        super().__init__(description)
        self.description = description
        self.error = error


class IdentityUnavailable(Exception):
    """A dependency of identity (key set, introspection endpoint) cannot be used right now."""


def challenge(realm: str, failure: AuthFailure | None) -> str:
    if failure is None:
        return f'Bearer realm="{realm}"'
    description = failure.description.replace("\\", "").replace('"', "'")
    return f'Bearer realm="{realm}", error="{failure.error}", error_description="{description}"'


def unauthenticated(realm: str, failure: AuthFailure | None, bearer: bool = True) -> Denial:
    message = failure.description if failure is not None else "credentials are required"
    headers = (("www-authenticate", challenge(realm, failure)),) if bearer else ()
    return Denial(Status.UNAUTHENTICATED, message, http=401, headers=headers)


def unavailable(error: IdentityUnavailable) -> Denial:
    return Denial(Status.UNAVAILABLE, str(error), http=503)
