"""The gateway's HPACK encoder: any decoder reads it, it leaves the dynamic table alone, credentials are never indexed."""

from __future__ import annotations

import hpack
import hpack.hpack
import pytest

from edge.hpack_literals import LeanDecoder, LiteralEncoder, cache_huffman_decoding, encode_field

HEADERS = [
    (b":status", b"200"),
    (b"content-type", b"application/grpc"),
    (b"x-request-id", b"3f2a"),
    (b"authorization", b"Bearer abc.def.ghi"),
    (b"grpc-status-details-bin", b"\x00\xff"),
]


def test_a_standard_decoder_reads_every_block_the_same() -> None:
    encoder, decoder = LiteralEncoder(), hpack.Decoder()
    for _ in range(3):
        assert decoder.decode(encoder.encode(HEADERS), raw=True) == HEADERS
    assert len(decoder.header_table.dynamic_entries) == 0


def test_fields_do_not_depend_on_earlier_blocks() -> None:
    encoder = LiteralEncoder()
    first = encoder.encode(HEADERS)
    encoder.encode([(b"x-other", b"1"), *HEADERS])
    assert encoder.encode(HEADERS) == first


def test_static_entries_are_indexed_and_credentials_never_indexed() -> None:
    assert encode_field(b":status", b"200") == b"\x88"
    authorization = encode_field(b"authorization", b"Bearer x")
    assert authorization[0] & 0xF0 == 0x10
    decoded = hpack.Decoder().decode(authorization, raw=True)
    assert decoded == [(b"authorization", b"Bearer x")]
    assert isinstance(decoded[0], hpack.NeverIndexedHeaderTuple)


def test_a_smaller_table_size_from_the_peer_is_signalled() -> None:
    encoder, decoder = LiteralEncoder(), hpack.Decoder()
    encoder.header_table_size = 0
    block = encoder.encode(HEADERS)
    assert block[0] & 0xE0 == 0x20
    assert decoder.decode(block, raw=True) == HEADERS


def test_huffman_decoding_is_cached_and_still_right() -> None:
    cache_huffman_decoding()
    cache_huffman_decoding()
    coded = hpack.Encoder().encode([(b"authorization", b"Bearer " + b"a1b2" * 150)])
    for _ in range(2):
        assert hpack.Decoder().decode(coded, raw=True) == [(b"authorization", b"Bearer " + b"a1b2" * 150)]
    assert getattr(hpack.hpack.decode_huffman, "cached", False)


def _blocks() -> list[bytes]:
    """Blocks from hpack's own encoder: static and dynamic indexes, literals indexed or not, Huffman, a size update."""
    encoder = hpack.Encoder()
    token = b"Bearer " + b"x" * 300
    lists = [
        [(b":method", b"POST"), (b":path", b"/a.B/C"), (b"te", b"trailers"), (b"authorization", token, True)],
        [(b":method", b"POST"), (b":path", b"/a.B/C"), (b"x-new", b"1"), (b"authorization", token, True)],
        [(b":method", b"GET"), (b":path", b"/a.B/C"), (b"x-new", b"2"), (b"x-big", b"y" * 300)],
    ]
    blocks = [encoder.encode(headers) for headers in lists * 3]
    encoder.header_table_size = 256
    blocks.append(encoder.encode(lists[0]))
    return blocks


def test_the_lean_decoder_reads_what_hpacks_decoder_reads() -> None:
    lean, reference = LeanDecoder(), hpack.Decoder()
    for block in _blocks():
        got, expected = lean.decode(block, raw=True), reference.decode(block, raw=True)
        assert got == expected
        assert [type(h) for h in got] == [type(h) for h in expected]  # never-indexed fields stay marked
        assert lean.header_table.dynamic_entries == reference.header_table.dynamic_entries


def test_the_lean_decoder_refuses_what_hpack_refuses() -> None:
    with pytest.raises(hpack.InvalidTableIndex):
        LeanDecoder().decode(b"\xc0", raw=True)  # index 64: past the static table, nothing dynamic yet
    small = LeanDecoder()
    small.max_header_list_size = 40
    with pytest.raises(hpack.OversizedHeaderListError):
        small.decode(b"\x82\x84", raw=True)
    with pytest.raises(hpack.HPACKDecodingError):
        LeanDecoder().decode(b"\x82\x3f\xe1\x1f", raw=True)  # a table size update after a header
