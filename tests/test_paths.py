"""Tests for edge.paths: canonicalisation of request paths and segment helpers."""

import pytest

from edge.paths import PathError, canonical_path, decode_segment, split_segments


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/", "/"),
        ("/v1/books", "/v1/books"),
        ("/v1/books/", "/v1/books/"),
        ("/a//b", "/a//b"),
        ("//", "//"),
        ("/a:b", "/a:b"),
        ("/a;b=c,d", "/a;b=c,d"),
        ("/file.json", "/file.json"),
        ("/.well-known/x", "/.well-known/x"),
        ("/a/.../b", "/a/.../b"),
        ("/a/..b/c.", "/a/..b/c."),
        ("/a/./b", "/a/b"),
        ("/a/b/../c", "/a/c"),
        ("/a/b/..", "/a/"),
        ("/a/.", "/a/"),
        ("/a/..", "/"),
        ("/.", "/"),
        ("/./", "/"),
        ("/a/./", "/a/"),
        ("/a/b/../", "/a/"),
        ("/a/b/c/../../d", "/a/d"),
        ("/a//..", "/a/"),
        ("/a/b/./../c", "/a/c"),
        ("/%7Euser", "/~user"),
        ("/%7e", "/~"),
        ("/%41%62%30", "/Ab0"),
        ("/%2d%2E%5f%5F%7E", "/-.__~"),
        ("/a%2fb", "/a%2Fb"),
        ("/a%2Fb", "/a%2Fb"),
        ("/a%20b", "/a%20b"),
        ("/%c3%a9", "/%C3%A9"),
        ("/%ff", "/%FF"),
        ("/%25", "/%25"),
        ("/%2525", "/%2525"),
        ("/%3f%23", "/%3F%23"),
        ("/%2e/a", "/a"),
        ("/a/%2e%2e/b", "/b"),
        ("/a/%2E%2e", "/"),
        ("/a/.%2e/b", "/b"),
        ("/a/%2e%2e%2fb", "/a/..%2Fb"),
        ("/a/..%2e/..", "/a/"),
    ],
)
def test_canonical_path(raw: str, expected: str) -> None:
    assert canonical_path(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "path must start with '/'"),
        ("a/b", "path must start with '/'"),
        ("*", "path must start with '/'"),
        ("%2Fa", "path must start with '/'"),
        ("/..", "path escapes the root"),
        ("/../a", "path escapes the root"),
        ("/a/../../b", "path escapes the root"),
        ("/%2e%2e/x", "path escapes the root"),
        ("/%2E%2E", "path escapes the root"),
        ("/a\x00b", "control character in path"),
        ("/a\tb", "control character in path"),
        ("/a\nb", "control character in path"),
        ("/a\x7fb", "control character in path"),
        ("/a b", "space in path"),
        ("/é", "non-ASCII character in path"),
        ("/a\u2024b", "non-ASCII character in path"),
        ("/a\\b", "backslash in path"),
        ("/a%5Cb", "backslash in path"),
        ("/a%5cb", "backslash in path"),
        ("/a%00b", "percent-encoded control character in path"),
        ("/a%0d%0a", "percent-encoded control character in path"),
        ("/a%1F", "percent-encoded control character in path"),
        ("/a%7f", "percent-encoded control character in path"),
        ("/%zz", "malformed percent escape in path"),
        ("/%", "malformed percent escape in path"),
        ("/a%2", "malformed percent escape in path"),
        ("/a%2g", "malformed percent escape in path"),
        ("/a%%41", "malformed percent escape in path"),
    ],
)
def test_canonical_path_rejects(raw: str, message: str) -> None:
    with pytest.raises(PathError) as caught:
        canonical_path(raw)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "raw",
    ["/", "/a/b/", "/a/%2e%2e/b", "/%7e%2f%c3%a9", "/a/./b/../c", "/x/.hidden/..."],
)
def test_canonical_path_is_idempotent(raw: str) -> None:
    once = canonical_path(raw)
    assert canonical_path(once) == once


def test_fast_path_returns_same_object() -> None:
    raw = "/v1/shelves/1/books"
    assert canonical_path(raw) is raw


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", []),
        ("/a", ["a"]),
        ("/a/b", ["a", "b"]),
        ("/a/b/", ["a", "b", ""]),
        ("/a//b", ["a", "", "b"]),
        ("//", ["", ""]),
        ("/a%2Fb", ["a%2Fb"]),
    ],
)
def test_split_segments(path: str, expected: list[str]) -> None:
    assert split_segments(path) == expected


@pytest.mark.parametrize(
    ("segment", "expected"),
    [
        ("", ""),
        ("plain", "plain"),
        ("a%2Fb", "a/b"),
        ("a%20b", "a b"),
        ("%C3%A9", "é"),
        ("%25", "%"),
        ("%2525", "%25"),
        ("a+b", "a+b"),
    ],
)
def test_decode_segment(segment: str, expected: str) -> None:
    assert decode_segment(segment) == expected


@pytest.mark.parametrize("segment", ["%FF", "%C3", "a%C3%28", "%ED%A0%80"])
def test_decode_segment_rejects_invalid_utf8(segment: str) -> None:
    with pytest.raises(PathError) as caught:
        decode_segment(segment)
    assert str(caught.value) == "path segment is not valid UTF-8 once decoded"
