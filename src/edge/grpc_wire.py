"""gRPC over HTTP/2 as bytes and header text: what the h2 door and the h2 upstream client both speak.

The pieces of the gRPC wire format (PROTOCOL-HTTP2.md) that sit above HTTP/2
framing: length-prefixed messages, `grpc-timeout`, the percent-encoded
`grpc-message`, base64 `-bin` metadata, and the status a non-gRPC HTTP answer
means. grpcio keeps these inside its C core with no Python API, and h2 knows
nothing of gRPC, so they are written here; each is a few lines of the spec.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Iterable
from urllib.parse import quote, unquote

from edge.call import MetaValue
from edge.errors import EdgeError, Status

PREFIX = 5
ENCODINGS = ("identity", "gzip", "deflate")
ACCEPT_ENCODING = ",".join(ENCODINGS)
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_MESSAGE_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")
_HTTP_TO_GRPC = {
    400: Status.INTERNAL,
    401: Status.UNAUTHENTICATED,
    403: Status.PERMISSION_DENIED,
    404: Status.UNIMPLEMENTED,
    429: Status.UNAVAILABLE,
    502: Status.UNAVAILABLE,
    503: Status.UNAVAILABLE,
    504: Status.UNAVAILABLE,
}


class WireError(EdgeError):
    """A message the peer framed wrongly or too large: the call ends with this status."""


def frame(message: bytes) -> bytes:
    """One uncompressed length-prefixed message."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


class Deframer:
    """Whole messages out of DATA frames as they come, decompressed when flagged.

    `encoding` is the stream's `grpc-encoding` (None or identity: a flagged
    message is a protocol error). A message above `max_message` is refused as
    soon as its prefix announces it, before its bytes are held.
    """

    __slots__ = ("_buffer", "encoding", "max_message")

    def __init__(self, max_message: int, encoding: str | None = None) -> None:
        self.max_message = max_message
        self.encoding = None if encoding in (None, "identity") else encoding
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer + data if self._buffer else data
        messages = []
        start = 0
        end = len(buffer)
        while end - start >= PREFIX:
            length = int.from_bytes(buffer[start + 1 : start + PREFIX], "big")
            if length > self.max_message:
                raise WireError(
                    f"a message of {length} bytes is larger than the limit of {self.max_message}",
                    status=Status.RESOURCE_EXHAUSTED,
                )
            stop = start + PREFIX + length
            if stop > end:
                break
            message = buffer[start + PREFIX : stop]
            if buffer[start]:
                message = self._inflate(message)
            messages.append(message)
            start = stop
        self._buffer = buffer[start:] if start < end else b""
        return messages

    @property
    def pending(self) -> bool:
        """A message has begun and not ended: the stream ending now cuts it."""
        return bool(self._buffer)

    def _inflate(self, message: bytes) -> bytes:
        if self.encoding is None:
            raise WireError("a compressed message without grpc-encoding", status=Status.INTERNAL)
        try:
            inflated = zlib.decompress(message, 31 if self.encoding == "gzip" else 15)
        except zlib.error as error:
            raise WireError(f"a {self.encoding} message did not decompress: {error}", status=Status.INTERNAL) from None
        if len(inflated) > self.max_message:
            raise WireError(
                f"a message of {len(inflated)} bytes (decompressed) is larger than the limit of {self.max_message}",
                status=Status.RESOURCE_EXHAUSTED,
            )
        return inflated


def parse_timeout(text: str) -> float | None:
    """`grpc-timeout` in seconds: up to 8 digits and a unit; None when malformed."""
    if not 2 <= len(text) <= 9 or not text[:-1].isdigit():
        return None
    unit = _TIMEOUT_UNITS.get(text[-1])
    return None if unit is None else int(text[:-1]) * unit


def format_timeout(seconds: float) -> str:
    """The shortest exact-enough `grpc-timeout`: microseconds while they fit in 8 digits, then coarser."""
    micros = max(int(seconds * 1e6), 1)
    if micros < 100_000_000:
        return f"{micros}u"
    millis = int(seconds * 1e3)
    if millis < 100_000_000:
        return f"{millis}m"
    return f"{min(int(seconds), 99_999_999)}S"


def quote_message(text: str) -> str:
    """`grpc-message`: UTF-8, percent-encoded outside printable ASCII (and `%` itself)."""
    if text.isascii() and text.isprintable() and "%" not in text:
        return text
    return quote(text, safe=_MESSAGE_SAFE)


def unquote_message(value: str) -> str:
    return unquote(value, errors="replace") if "%" in value else value


def encode_metadata(pairs: Iterable[tuple[str, MetaValue]]) -> list[tuple[str, str]]:
    """gRPC metadata as HTTP/2 header pairs: `-bin` values in base64 without padding, text as is."""
    headers = []
    for name, value in pairs:
        if name.endswith("-bin"):
            raw = value if isinstance(value, bytes) else value.encode()
            headers.append((name, base64.b64encode(raw).rstrip(b"=").decode("ascii")))
        else:
            headers.append((name, value if isinstance(value, str) else value.decode("latin-1")))
    return headers


def decode_value(name: str, value: str) -> MetaValue:
    """A received header's value as gRPC metadata: bytes for `-bin` names (base64 with or without padding)."""
    if not name.endswith("-bin"):
        return value
    try:
        return base64.b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise WireError(f"metadata {name} is not base64", status=Status.INTERNAL) from None


def status_from_http(code: int) -> Status:
    """What a non-200 HTTP answer to a gRPC request means (the spec's table; anything else is UNKNOWN)."""
    return _HTTP_TO_GRPC.get(code, Status.UNKNOWN)
