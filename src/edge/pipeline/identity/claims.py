"""From verified claims to what the gateway knows: subject, roles, and header-safe values.

Roles come from one configured claim (a name such as `roles`, a namespaced
name such as `https://example.com/roles`, or a dotted path such as
`realm_access.roles`), as a string or a list, optionally mapped to gateway
roles. Values headed for backend headers are made safe once, when a token is
verified: control characters are refused and non-ASCII is percent-encoded
(UTF-8), so gRPC metadata and HTTP headers accept them as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from edge.config.identity import Roles

_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


class ClaimError(Exception):
    """A verified token whose claims the gateway cannot use."""


def claim_at(claims: Mapping[str, Any], name: str) -> Any:
    """The claim called `name`, or failing that the one at dotted path `name`."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def roles_from(claims: Mapping[str, Any], config: Roles) -> tuple[str, ...]:
    if config.claim is None:
        return ()
    value = claim_at(claims, config.claim)
    if isinstance(value, str):
        values = value.split(config.separator) if config.separator else [value]
    elif isinstance(value, list):
        values = [v for v in value if isinstance(v, str)]
    else:
        values = []
    if config.map:
        mapped: list[str] = []
        for item in values:
            if item in config.map:
                mapped.extend(config.map[item])
            elif config.keep_unmapped:
                mapped.append(item)
        values = mapped
    return tuple(dict.fromkeys(v for v in values if v))


def subject_from(claims: Mapping[str, Any], name: str) -> str:
    value = claim_at(claims, name)
    if not isinstance(value, str) or not value:
        raise ClaimError(f"the token has no {name} claim")
    return value


def header_value(text: str) -> str:
    """`text` as a header value; ClaimError for control characters, percent-encoding for non-ASCII."""
    if not text.isprintable():
        raise ClaimError("a claim value holds control characters")
    return text if text.isascii() and "%" not in text else quote(text, safe=_SAFE)


def roles_header(roles: Iterable[str]) -> str:
    """Roles as one header value: comma-separated, commas inside a role encoded."""
    return ",".join(header_value(role).replace(",", "%2C") for role in roles)


def caller_of(claims: Mapping[str, Any], subject_claim: str, roles: Roles) -> tuple[str, tuple[str, ...], str, str]:
    """Subject, roles, and their header values from verified claims (a token's or an introspection answer)."""
    subject = subject_from(claims, subject_claim)
    found = roles_from(claims, roles)
    return subject, found, header_value(subject), roles_header(found)
