"""HPACK for the gateway's HTTP/2 connections: headers sent as cached literals, indexed ones read inline.

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
repeat from call to call. `LeanDecoder` reads the most common field, an
index into the static or dynamic table in one byte, inline with shared
tuples (hpack spent ~2 us on each through three calls, a debug log line and
a new tuple: 18 us for a gRPC request's steady header block), and hands
every other representation to hpack's own code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

import hpack.hpack
from hpack import Decoder, Encoder, HeaderTuple
from hpack.exceptions import HPACKDecodingError, InvalidTableIndex, OversizedHeaderListError
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


_STATIC = [HeaderTuple(name, value) for name, value in HeaderTable.STATIC_TABLE]
_ENTRY_OVERHEAD = 32  # RFC 7541 4.1: what a header adds to the header list size besides its bytes


class LeanDecoder(Decoder):
    """An hpack `Decoder` that reads one-byte indexed fields itself; h2 takes it as `H2Connection.decoder`."""

    def decode(self, data: bytes, raw: bool = False) -> list[Any]:
        if not raw:
            return list(super().decode(data, raw))
        headers: list[Any] = []
        static, static_length = _STATIC, len(_STATIC)
        dynamic = self.header_table.dynamic_entries
        limit = self.max_header_list_size
        size = 0
        position, end = 0, len(data)
        view: memoryview | None = None
        while position < end:
            byte = data[position]
            header: Any
            if 0x80 < byte < 0xFF:
                index = byte - 0x81
                if index < static_length:
                    header = static[index]
                elif index - static_length < len(dynamic):
                    header = tuple.__new__(HeaderTuple, dynamic[index - static_length])
                else:
                    raise InvalidTableIndex(f"Invalid table index {index + 1}")
                position += 1
            else:
                if view is None:
                    view = memoryview(data)
                header, consumed = self._field(view[position:], byte, bool(headers))
                position += consumed
                if header is None:
                    continue
            headers.append(header)
            size += _ENTRY_OVERHEAD + len(header[0]) + len(header[1])
            if size > limit:
                raise OversizedHeaderListError(f"A header list larger than {limit} has been received")
        self._assert_valid_table_size()
        return headers

    def _field(self, data: memoryview, byte: int, after_headers: bool) -> tuple[Any, int]:
        """Any representation but a one-byte index, by hpack's own methods (RFC 7541 6)."""
        if byte & 0x80:
            return self._decode_indexed(data)
        if byte & 0x40:
            return self._decode_literal_index(data)
        if byte & 0x20:
            if after_headers:
                raise HPACKDecodingError("Table size update not at the start of the block")
            return None, self._update_encoding_context(data)
        return self._decode_literal_no_index(data)


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
