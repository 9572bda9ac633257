"""HPACK for the gateway's HTTP/2 connections: headers sent as cached literals, Huffman decoding cached.

hpack (pure Python, what h2 uses) indexes every header it sends in the
dynamic table, searching that table linearly for each one, and Huffman-codes
every literal; its Huffman decoder walks the input nibble by nibble in
Python. Per proxied gRPC call that was the largest item in the door's
profile: a 600-character bearer token alone took ~100 us to decode, call
after call.

`LiteralEncoder` sends each header as an indexed static-table entry or as a
raw literal that never enters the dynamic table (RFC 7541 6.2.2; 6.2.3 for
credentials, so no intermediary indexes them). A header's bytes then depend
on the header alone, so each distinct header is encoded once per process and
reused; any HPACK decoder reads them. The price is size: repeated headers go
in full instead of as one-byte indexes, a few hundred bytes per call on the
loopback and LAN links the gateway's HTTP/2 runs over, which cost less than
the CPU. `cache_huffman_decoding` puts a bounded cache in front of hpack's
Huffman decoder, a pure function whose inputs (tokens, paths, user agents)
repeat from call to call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

import hpack.hpack
from hpack import Encoder
from hpack.hpack import encode_integer
from hpack.table import HeaderTable

CACHE_LIMIT = 4096
CACHED_LENGTH = 1024  # longer Huffman strings are decoded each time, so the cache stays a few MiB at most
SENSITIVE = frozenset({b"authorization", b"proxy-authorization", b"cookie", b"set-cookie"})
_NOT_INDEXED = 0x00
_NEVER_INDEXED = 0x10

_fields: dict[tuple[bytes, bytes], bytes] = {}


class LiteralEncoder(Encoder):
    """An hpack `Encoder` that never uses the dynamic table; h2 takes it as `H2Connection.encoder`."""

    def encode(self, headers: Iterable[Any], huffman: bool = True) -> bytes:
        parts = []
        table = self.header_table
        if table.resized:
            parts.append(self._encode_table_size_change())
            table.resized = False
        fields = _fields
        for header in headers:
            key = (_bytes(header[0]), _bytes(header[1]))
            field = fields.get(key)
            if field is None:
                if len(fields) >= CACHE_LIMIT:
                    fields.clear()
                field = fields[key] = encode_field(*key)
            parts.append(field)
        return b"".join(parts)


def encode_field(name: bytes, value: bytes) -> bytes:
    """One header's representation, independent of any table state."""
    flag = _NEVER_INDEXED if name in SENSITIVE else _NOT_INDEXED
    static = HeaderTable.STATIC_TABLE_MAPPING.get(name)
    if static is None:
        return bytes([flag]) + _string(name) + _string(value)
    index = static[1].get(value)
    if index is not None and flag == _NOT_INDEXED:
        head = encode_integer(index, 7)
        head[0] |= 0x80
        return bytes(head)
    head = encode_integer(static[0], 4)
    head[0] |= flag
    return bytes(head) + _string(value)


def _string(data: bytes) -> bytes:
    return bytes(encode_integer(len(data), 7)) + data


def _bytes(text: bytes | str) -> bytes:
    return text if isinstance(text, bytes) else text.encode()


def cache_huffman_decoding() -> None:
    """Put a bounded cache in front of hpack's Huffman decoder (once per process)."""
    original: Callable[[bytes], bytes] = getattr(hpack.hpack, "decode_huffman")  # noqa: B009 - not in its __all__
    if getattr(original, "cached", False):
        return
    cached = lru_cache(maxsize=CACHE_LIMIT)(original)

    def decode_huffman(data: bytes) -> bytes:
        return cached(data) if len(data) <= CACHED_LENGTH else original(data)

    decode_huffman.cached = True  # type: ignore[attr-defined]
    setattr(hpack.hpack, "decode_huffman", decode_huffman)  # noqa: B010 - the name _decode_literal looks up
