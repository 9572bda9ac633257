"""Tests for edge.transcode.template: parsing, matching and expanding HttpRule path templates."""

import pytest

from edge.paths import PathError, split_segments
from edge.transcode.template import Binding, PathTemplate, TemplateError, parse_template


@pytest.mark.parametrize(
    ("text", "segments", "bindings", "verb"),
    [
        ("/", (), (), None),
        ("/v1", ("v1",), (), None),
        ("/v1/x/", ("v1", "x", ""), (), None),
        ("/v1/*/books", ("v1", "*", "books"), (), None),
        ("/v1/**", ("v1", "**"), (), None),
        ("/**", ("**",), (), None),
        ("/v1/{name}", ("v1", "*"), (Binding("name", 1, 2),), None),
        ("/v1/{name=*}", ("v1", "*"), (Binding("name", 1, 2),), None),
        ("/v1/{book.id}", ("v1", "*"), (Binding("book.id", 1, 2),), None),
        ("/v1/{_a1.b_2}", ("v1", "*"), (Binding("_a1.b_2", 1, 2),), None),
        ("/v1/{name=foo}", ("v1", "foo"), (Binding("name", 1, 2),), None),
        (
            "/v1/{name=shelves/*/books/*}",
            ("v1", "shelves", "*", "books", "*"),
            (Binding("name", 1, 5),),
            None,
        ),
        ("/v1/{name=**}", ("v1", "**"), (Binding("name", 1, None),), None),
        (
            "/v1/{name=files/**}",
            ("v1", "files", "**"),
            (Binding("name", 1, None),),
            None,
        ),
        (
            "/v1/{shelf}/books/{book}",
            ("v1", "*", "books", "*"),
            (Binding("shelf", 1, 2), Binding("book", 3, 4)),
            None,
        ),
        ("/v1/{name}/**", ("v1", "*", "**"), (Binding("name", 1, 2),), None),
        ("/v1/{name}:cancel", ("v1", "*"), (Binding("name", 1, 2),), "cancel"),
        ("/v1/ops:batchGet", ("v1", "ops"), (), "batchGet"),
        (
            "/v1/{name=**}:undelete",
            ("v1", "**"),
            (Binding("name", 1, None),),
            "undelete",
        ),
        ("/v1/*:run", ("v1", "*"), (), "run"),
        ("/v1/a=b/c;d", ("v1", "a=b", "c;d"), (), None),
        ("/%7euser/a%2fb/%41", ("~user", "a%2Fb", "A"), (), None),
        ("/v1/x:do%2dit", ("v1", "x"), (), "do-it"),
        ("/v1/.well-known/a..b", ("v1", ".well-known", "a..b"), (), None),
    ],
)
def test_parse(
    text: str,
    segments: tuple[str, ...],
    bindings: tuple[Binding, ...],
    verb: str | None,
) -> None:
    assert parse_template(text) == PathTemplate(text, segments, bindings, verb)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "path template must start with '/' at column 1 of ''"),
        ("v1/x", "path template must start with '/' at column 1 of 'v1/x'"),
        ("{name}", "path template must start with '/' at column 1 of '{name}'"),
        ("/a//b", "empty segment name at column 4 of '/a//b'"),
        ("//", "empty segment name at column 2 of '//'"),
        ("/{a=}", "empty segment name at column 5 of '/{a=}'"),
        ("/{a=b//c}", "empty segment name at column 7 of '/{a=b//c}'"),
        ("/{a=b/}", "empty segment name at column 7 of '/{a=b/}'"),
        ("/{name", "unclosed '{' at column 2 of '/{name'"),
        ("/v1/{name=a/b", "unclosed '{' at column 5 of '/v1/{name=a/b'"),
        ("/v1/{name=", "unclosed '{' at column 5 of '/v1/{name='"),
        ("/{a:b", "unclosed '{' at column 2 of '/{a:b'"),
        ("/{a={b}}", "nested variables at column 5 of '/{a={b}}'"),
        ("/{a=x/{b}}", "nested variables at column 7 of '/{a=x/{b}}'"),
        ("/{a{b}}", "nested variables at column 4 of '/{a{b}}'"),
        ("/{a=x{b}}", "nested variables at column 6 of '/{a=x{b}}'"),
        ("/**/a", "'**' must be the last segment at column 2 of '/**/a'"),
        ("/{a=**}/b", "'**' must be the last segment at column 5 of '/{a=**}/b'"),
        ("/a/**/", "'**' must be the last segment at column 4 of '/a/**/'"),
        ("/{a=**/b}", "'**' must be the last segment at column 5 of '/{a=**/b}'"),
        ("/a*", "'*' and '**' must be whole segments at column 3 of '/a*'"),
        ("/***", "'*' and '**' must be whole segments at column 2 of '/***'"),
        ("/{a=b*}", "'*' and '**' must be whole segments at column 6 of '/{a=b*}'"),
        ("/{}", "empty field path at column 3 of '/{}'"),
        ("/{=*}", "empty field path at column 3 of '/{=*}'"),
        ("/{1a}", "invalid field path '1a' at column 3 of '/{1a}'"),
        ("/{a..b}", "invalid field path 'a..b' at column 3 of '/{a..b}'"),
        ("/{a.}", "invalid field path 'a.' at column 3 of '/{a.}'"),
        ("/{a-b}", "invalid field path 'a-b' at column 3 of '/{a-b}'"),
        ("/{a/b}", "expected '=' or '}' after field path at column 4 of '/{a/b}'"),
        ("/{a}/{a}", "duplicate variable field 'a' at column 6 of '/{a}/{a}'"),
        (
            "/{a.b}/{a.b=x/*}",
            "duplicate variable field 'a.b' at column 8 of '/{a.b}/{a.b=x/*}'",
        ),
        ("/a{b}", "variable must be a whole segment at column 3 of '/a{b}'"),
        ("/{a}b", "variable must be a whole segment at column 5 of '/{a}b'"),
        ("/a}", "unexpected '}' at column 3 of '/a}'"),
        ("/}", "unexpected '}' at column 2 of '/}'"),
        ("/a:b/c", "':' is only allowed before the verb at column 3 of '/a:b/c'"),
        ("/a:b:c", "':' is only allowed before the verb at column 3 of '/a:b:c'"),
        ("/{a=x:y}", "':' is only allowed before the verb at column 6 of '/{a=x:y}'"),
        ("/:run", "verb must follow a non-empty segment at column 2 of '/:run'"),
        ("/a/:run", "verb must follow a non-empty segment at column 4 of '/a/:run'"),
        ("/a:", "empty verb at column 4 of '/a:'"),
        ("/a:b*", "invalid character '*' in verb at column 5 of '/a:b*'"),
        ("/a:{b}", "invalid character '{' in verb at column 4 of '/a:{b}'"),
        ("/.", "dot segment '.' is not allowed at column 2 of '/.'"),
        ("/a/..", "dot segment '..' is not allowed at column 4 of '/a/..'"),
        ("/a/%2E%2e", "dot segment '%2E%2e' is not allowed at column 4 of '/a/%2E%2e'"),
        ("/{a=.}", "dot segment '.' is not allowed at column 5 of '/{a=.}'"),
        (
            "/%zz",
            "invalid segment '%zz': malformed percent escape in path at column 2 of '/%zz'",
        ),
        ("/a b", "invalid segment 'a b': space in path at column 2 of '/a b'"),
        (
            "/a\\b",
            "invalid segment 'a\\\\b': backslash in path at column 2 of '/a\\\\b'",
        ),
        ("/é", "invalid segment 'é': non-ASCII character in path at column 2 of '/é'"),
        (
            "/a:%00",
            "invalid verb '%00': percent-encoded control character in path at column 4 of '/a:%00'",
        ),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        parse_template(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("template", "path", "verb", "expected"),
    [
        ("/", "/", None, {}),
        ("/", "/a", None, None),
        ("/v1/books", "/v1/books", None, {}),
        ("/v1/books", "/v1/books/", None, None),
        ("/v1/books/", "/v1/books/", None, {}),
        ("/v1/books/", "/v1/books", None, None),
        ("/v1/books", "/v1/Books", None, None),
        ("/v1/{name}", "/v1/abc", None, {"name": "abc"}),
        ("/v1/{name}", "/v1/", None, None),
        ("/v1/{name}", "/v1/a/b", None, None),
        ("/v1/*/x", "/v1//x", None, None),
        ("/v1/{name}", "/v1/a%2Fb", None, {"name": "a/b"}),
        ("/v1/{name}", "/v1/caf%C3%A9%20au%20lait", None, {"name": "café au lait"}),
        ("/v1/{name}", "/v1/100%25", None, {"name": "100%"}),
        ("/v1/a/b", "/v1/a%2Fb", None, None),
        ("/v1/a%2Fb", "/v1/a%2Fb", None, {}),
        ("/v1/{name=foo}", "/v1/foo", None, {"name": "foo"}),
        ("/v1/{name=foo}", "/v1/bar", None, None),
        ("/v1/{book.id}/x", "/v1/7/x", None, {"book.id": "7"}),
        (
            "/v1/{shelf}/books/{book}",
            "/v1/s1/books/b2",
            None,
            {"shelf": "s1", "book": "b2"},
        ),
        (
            "/v1/{name=shelves/*/books/*}",
            "/v1/shelves/s1/books/b%202",
            None,
            {"name": "shelves/s1/books/b 2"},
        ),
        (
            "/v1/{name=shelves/*/books/*}",
            "/v1/shelves/a%2Fb/books/%C3%A9%2F%C3%A9",
            None,
            {"name": "shelves/a%2Fb/books/é%2Fé"},
        ),
        ("/v1/{name=shelves/*/books/*}", "/v1/shelves/s1/tomes/b2", None, None),
        ("/v1/{name=shelves/*/books/*}", "/v1/shelves/s1/books", None, None),
        ("/v1/**", "/v1", None, {}),
        ("/v1/**", "/v1/a/b/c", None, {}),
        ("/v1/**", "/v2/a", None, None),
        ("/**", "/", None, {}),
        ("/v1/{path=**}", "/v1", None, {"path": ""}),
        ("/v1/{path=**}", "/v1/a", None, {"path": "a"}),
        ("/v1/{path=**}", "/v1/a/b%20c/", None, {"path": "a/b c/"}),
        ("/v1/{path=**}", "/v1/a%2Fb/c", None, {"path": "a%2Fb/c"}),
        ("/v1/{path=files/**}", "/v1/files/x/y", None, {"path": "files/x/y"}),
        ("/v1/{path=files/**}", "/v1/files", None, {"path": "files"}),
        ("/v1/{path=files/**}", "/v1/blobs/x", None, None),
        ("/v1/{name}/**", "/v1/n/rest/of/it", None, {"name": "n"}),
        ("/v1/{name}:cancel", "/v1/op1", "cancel", {"name": "op1"}),
        ("/v1/{name}:cancel", "/v1/op1", None, None),
        ("/v1/{name}:cancel", "/v1/op1", "delete", None),
        ("/v1/{name}", "/v1/op1", "cancel", None),
        ("/v1/{name=**}:undelete", "/v1/a/b", "undelete", {"name": "a/b"}),
        ("/v1/{name}", "/v1/a:b", None, {"name": "a:b"}),
    ],
)
def test_match(template: str, path: str, verb: str | None, expected: dict[str, str] | None) -> None:
    assert parse_template(template).match(split_segments(path), verb) == expected


@pytest.mark.parametrize(
    ("template", "path"),
    [
        ("/v1/{name}", "/v1/%FF"),
        ("/v1/{name=**}", "/v1/ok/%C3"),
    ],
)
def test_match_rejects_invalid_utf8_values(template: str, path: str) -> None:
    with pytest.raises(PathError):
        parse_template(template).match(split_segments(path))


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("/", 0),
        ("/v1/x/", 3),
        ("/v1/{name}", 1),
        ("/v1/{name=shelves/*/books/*}:cancel", 3),
        ("/v1/*/**", 1),
    ],
)
def test_literal_count(template: str, expected: int) -> None:
    assert parse_template(template).literal_count() == expected


@pytest.mark.parametrize(
    ("template", "values", "expected"),
    [
        ("/", {}, "/"),
        ("/refill/", {}, "/refill/"),
        ("/refill/{rx}", {"rx": "42"}, "/refill/42"),
        ("/refill/{rx}", {"rx": "a/b c"}, "/refill/a%2Fb%20c"),
        ("/refill/{rx}", {"rx": "é~_.-"}, "/refill/%C3%A9~_.-"),
        ("/refill/{rx}", {"rx": "100%"}, "/refill/100%25"),
        ("/refill/{rx}/x", {"rx": "1", "other": "ignored"}, "/refill/1/x"),
        ("/v1/{name=shelves/*}", {"name": "shelves/a b"}, "/v1/shelves/a%20b"),
        ("/v1/{path=**}", {"path": "a/b/c"}, "/v1/a/b/c"),
        ("/v1/{path=**}", {"path": ""}, "/v1/"),
        ("/v1/{path=**}:get", {"path": "a/?#"}, "/v1/a/%3F%23:get"),
        ("/v1/{a}/{b.c}:run", {"a": "x", "b.c": "y"}, "/v1/x/y:run"),
        ("/%7eu/{a}", {"a": "x"}, "/~u/x"),
        ("/files/{path=**}", {"path": "a/b%2Fc"}, "/files/a/b%2Fc"),
        ("/files/{path=**}", {"path": "a/b%2fc"}, "/files/a/b%2Fc"),
        ("/files/{path=**}", {"path": "a%2F/%2F"}, "/files/a%2F/%2F"),
        ("/files/{path=**}", {"path": "100%/x y"}, "/files/100%25/x%20y"),
        ("/v1/{name=shelves/*}", {"name": "shelves/a%2Fb"}, "/v1/shelves/a%2Fb"),
        ("/refill/{rx}", {"rx": "b%2Fc"}, "/refill/b%252Fc"),
    ],
)
def test_expand(template: str, values: dict[str, str], expected: str) -> None:
    assert parse_template(template).expand(values) == expected


@pytest.mark.parametrize(
    ("template", "path"),
    [
        ("/files/{path=**}", "/files/a/b%2Fc"),
        ("/files/{path=**}", "/files/%2F%2F/x%20y/%C3%A9"),
        ("/v1/{name=shelves/*}/x", "/v1/shelves/a%2Fb/x"),
        ("/refill/{rx}", "/refill/a%2Fb%25"),
    ],
)
def test_expand_inverts_match(template: str, path: str) -> None:
    compiled = parse_template(template)
    values = compiled.match(split_segments(path))
    assert values is not None
    assert compiled.expand(values) == path


@pytest.mark.parametrize(
    ("template", "values", "message"),
    [
        ("/v1/*", {}, "cannot expand '*' outside a variable in '/v1/*'"),
        (
            "/v1/{a}/**",
            {"a": "x"},
            "cannot expand '**' outside a variable in '/v1/{a}/**'",
        ),
        ("/refill/{rx}", {}, "no value for field 'rx'"),
        ("/refill/{rx}", {"rx": ".."}, "value for field 'rx' contains a dot segment"),
        ("/refill/{rx}", {"rx": "."}, "value for field 'rx' contains a dot segment"),
        ("/v1/{p=**}", {"p": "a/../b"}, "value for field 'p' contains a dot segment"),
    ],
)
def test_expand_errors(template: str, values: dict[str, str], message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        parse_template(template).expand(values)
    assert str(caught.value) == message
