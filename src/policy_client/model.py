"""The values every engine speaks: a `PolicyRequest` in, a `Decision` out.

They are frozen and hashable because the decision cache keys on the request
itself: every input a policy can read is a field here, so two requests that
compare equal must get the same answer from the same policy revision.
"""

from __future__ import annotations

from dataclasses import dataclass

Attributes = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who asks: a subject, its roles, and further facts a policy may read (tenant, issuer)."""

    subject: str
    roles: tuple[str, ...] = ()
    attributes: Attributes = ()


ANONYMOUS = Principal("anonymous")


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """May `principal` do `action` (an operation, or `GET <route>`) on `resource` (a path, or named fields)?"""

    principal: Principal
    action: str
    resource: str
    attributes: Attributes = ()


@dataclass(frozen=True, slots=True)
class AddHeader:
    """Obligation: add (or replace) this header / metadata entry on the call sent upstream."""

    name: str
    value: str


Obligation = AddHeader


@dataclass(frozen=True, slots=True)
class Decision:
    """Allow or deny, why, which policy revision said so, and what the caller must do when it goes on.

    `ttl` is the engine's cache hint in seconds (None: no hint, 0: do not
    cache); `cached` is True when the answer came from the decision cache.
    """

    allow: bool
    reason: str = ""
    revision: str = ""
    ttl: float | None = None
    obligations: tuple[Obligation, ...] = ()
    cached: bool = False
