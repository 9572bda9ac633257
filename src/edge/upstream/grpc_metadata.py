"""gRPC metadata at the upstream boundary, shared by both gRPC clients (grpc.aio and h2).

Which of the caller's metadata is forwarded (not what the gateway or the
transport owns), how an HTTP caller's values become valid gRPC metadata, and
which of a backend's response metadata is its own rather than the status or
framing. Nothing here knows a gRPC library.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable

from edge.call import Call, MetaValue

# Request metadata the gateway or the transport owns: never copied from the caller.
GATEWAY_OWNED = frozenset(
    {
        "grpc-timeout",
        "grpc-encoding",
        "grpc-accept-encoding",
        "grpc-status",
        "grpc-message",
        "te",
        "content-type",
        "content-length",
        "user-agent",
        "host",
        "accept-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "x-forwarded-for",  # extended below
        "x-request-id",  # the call's own
    }
)
# Response metadata that is the status itself or transport framing, not the backend's metadata.
RESPONSE_RESERVED = frozenset({"grpc-status", "grpc-message", "grpc-encoding", "grpc-accept-encoding", "content-type"})


def request_metadata(call: Call) -> list[tuple[str, MetaValue]]:
    """The caller's metadata minus what the gateway owns, plus the forwarding keys.

    `traceparent` passes as is: the pipeline has made sure the call carries one.
    """
    forwarded: list[tuple[str, MetaValue]] = []
    for name, value in call.metadata:
        if name in GATEWAY_OWNED or name.startswith(":"):
            continue
        if type(value) is str and value.isascii() and value.isprintable() and not name.endswith("-bin"):
            forwarded.append((name, value))
        elif (converted := _metadata_value(name, value)) is not None:
            forwarded.append((name, converted))
    chain = ", ".join(str(v) for v in call.metadata.getall("x-forwarded-for"))
    forwarded.append(("x-forwarded-for", f"{chain}, {call.peer.address}" if chain else call.peer.address))
    forwarded.append(("x-request-id", call.request_id))
    return forwarded


def _metadata_value(name: str, value: MetaValue) -> MetaValue | None:
    """gRPC wants bytes for `-bin` keys and printable ASCII otherwise; HTTP callers send `-bin` as base64."""
    if name.endswith("-bin"):
        if isinstance(value, bytes):
            return value
        try:
            return base64.b64decode(value + "=" * (-len(value) % 4))
        except (binascii.Error, ValueError):
            return None
    text = value if isinstance(value, str) else value.decode("latin-1")
    return text if text.isascii() and text.isprintable() else None


def response_metadata(metadata: Iterable[tuple[str, MetaValue]] | None) -> list[tuple[str, MetaValue]]:
    return [(k, v) for k, v in metadata or () if k not in RESPONSE_RESERVED and not k.startswith(":")]
