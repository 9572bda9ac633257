"""The route table: precedence, rewrites, gRPC, encoded slashes, and lookup that does not scan."""

from __future__ import annotations

from typing import Any

import pytest

from edge.config.routes import RouteSpec
from edge.errors import BadRequest
from edge.routes import LiveTable, Route, RouteTable
from edge.transcode.template import parse_template


def spec(name: str, match: dict[str, Any], **settings: Any) -> dict[str, Any]:
    return {"name": name, "match": match, "upstream": "svc", **settings}


def table(*specs: dict[str, Any]) -> RouteTable:
    return RouteTable.from_specs([RouteSpec.model_validate(s) for s in specs])


def winner(routes: RouteTable, method: str, host: str, path: str) -> str | None:
    match = routes.match_http(method, host, path)
    return None if match is None else match.route.name


KINDS = (
    spec("prefix", {"prefix": "/v1"}),
    spec("template", {"path": "/v1/{x}"}),
    spec("exact", {"path": "/v1/a"}),
)
SEGMENTS = (
    spec("double", {"path": "/v1/{x=**}"}),
    spec("var", {"path": "/v1/{x}/c"}),
    spec("literal", {"path": "/v1/b/c"}),
    spec("left-literal", {"path": "/v2/a/{x}"}),
    spec("left-var", {"path": "/v2/{y}/b"}),
)
VERBS = (
    spec("plain", {"path": "/v1/{name}"}),
    spec("verb", {"path": "/v1/{name}:cancel"}),
    spec("any-verb", {"path": "/v2/{name=**}:cancel"}),
    spec("books", {"path": "/v2/books/{id}"}),
)
HOSTS = (
    spec("any-host", {"path": "/h"}),
    spec("exact-host", {"path": "/h", "host": "api.example.com"}),
    spec("wildcard-host", {"path": "/h", "host": "*.example.com"}),
)
METHODS = (
    spec("any-method", {"path": "/m"}),
    spec("post", {"path": "/m", "methods": ["POST"]}),
    spec("get-first", {"prefix": "/o", "methods": ["GET"]}),
    spec("get-post-second", {"prefix": "/o", "methods": ["GET", "POST"]}),
    spec("get-only", {"path": "/g", "methods": ["GET"]}),
)
PREFIXES = (
    spec("api", {"prefix": "/api"}),
    spec("api-v1", {"prefix": "/api/v1/"}),
    spec("root", {"prefix": "/"}),
)


@pytest.mark.parametrize(
    ("routes", "method", "host", "path", "expected"),
    [
        pytest.param(KINDS, "GET", "h", "/v1/a", "exact", id="exact-beats-template"),
        pytest.param(KINDS, "GET", "h", "/v1/b", "template", id="template-beats-prefix"),
        pytest.param(KINDS, "GET", "h", "/v1/b/c", "prefix", id="prefix-when-nothing-else"),
        pytest.param(KINDS, "GET", "h", "/v1", "prefix", id="prefix-matches-itself"),
        pytest.param(KINDS, "GET", "h", "/v1x", None, id="prefix-whole-segments-only"),
        pytest.param(SEGMENTS, "GET", "h", "/v1/b/c", "literal", id="literal-beats-var"),
        pytest.param(SEGMENTS, "GET", "h", "/v1/z/c", "var", id="var-beats-double-star"),
        pytest.param(SEGMENTS, "GET", "h", "/v1/z/d", "double", id="double-star-last"),
        pytest.param(SEGMENTS, "GET", "h", "/v1", "double", id="double-star-matches-zero-segments"),
        pytest.param(SEGMENTS, "GET", "h", "/v2/a/b", "left-literal", id="leftmost-literal-decides"),
        pytest.param(SEGMENTS, "GET", "h", "/v2/z/b", "left-var", id="var-when-literal-fails"),
        pytest.param(VERBS, "GET", "h", "/v1/x:cancel", "verb", id="verb-beats-no-verb"),
        pytest.param(VERBS, "GET", "h", "/v1/x", "plain", id="no-verb"),
        pytest.param(VERBS, "GET", "h", "/v1/x:other", "plain", id="unknown-verb-is-part-of-value"),
        pytest.param(VERBS, "GET", "h", "/v2/books/7:cancel", "any-verb", id="verb-tried-first"),
        pytest.param(VERBS, "GET", "h", "/v2/books/7", "books", id="verb-template-needs-verb"),
        pytest.param(HOSTS, "GET", "api.example.com", "/h", "exact-host", id="exact-host-first"),
        pytest.param(HOSTS, "GET", "API.Example.com:8443", "/h", "exact-host", id="host-case-and-port-ignored"),
        pytest.param(HOSTS, "GET", "api.example.com.", "/h", "exact-host", id="host-trailing-dot-ignored"),
        pytest.param(HOSTS, "GET", "other.example.com", "/h", "wildcard-host", id="wildcard-host-next"),
        pytest.param(HOSTS, "GET", "example.com", "/h", "any-host", id="wildcard-needs-a-subdomain"),
        pytest.param(HOSTS, "GET", "example.org", "/h", "any-host", id="any-host-last"),
        pytest.param(HOSTS, "GET", "[::1]:8080", "/h", "any-host", id="ipv6-host"),
        pytest.param(METHODS, "POST", "h", "/m", "post", id="methods-specific-beats-any"),
        pytest.param(METHODS, "GET", "h", "/m", "any-method", id="any-method-otherwise"),
        pytest.param(METHODS, "GET", "h", "/o/x", "get-first", id="file-order-breaks-ties"),
        pytest.param(METHODS, "POST", "h", "/o/x", "get-post-second", id="file-order-only-among-accepting"),
        pytest.param(METHODS, "HEAD", "h", "/g", "get-only", id="head-allowed-on-get"),
        pytest.param(METHODS, "POST", "h", "/g", None, id="method-not-accepted"),
        pytest.param(PREFIXES, "GET", "h", "/api/v1/x", "api-v1", id="longest-prefix-first"),
        pytest.param(PREFIXES, "GET", "h", "/api/v1", "api-v1", id="trailing-slash-in-prefix-ignored"),
        pytest.param(PREFIXES, "GET", "h", "/api/v2", "api", id="shorter-prefix"),
        pytest.param(PREFIXES, "GET", "h", "/apix", "root", id="root-prefix-catches-rest"),
        pytest.param(PREFIXES, "GET", "h", "/", "root", id="root-prefix-matches-root"),
    ],
)
def test_precedence(
    routes: tuple[dict[str, Any], ...], method: str, host: str, path: str, expected: str | None
) -> None:
    assert winner(table(*routes), method, host, path) == expected


def test_head_is_not_accepted_on_post_only_routes() -> None:
    assert winner(table(spec("post", {"path": "/p", "methods": ["POST"]})), "HEAD", "h", "/p") is None


def test_host_specific_loses_to_a_more_specific_pattern() -> None:
    routes = table(spec("host-prefix", {"prefix": "/a", "host": "api.example.com"}), spec("exact", {"path": "/a/b"}))
    assert winner(routes, "GET", "api.example.com", "/a/b") == "exact"


def test_empty_segment_does_not_bind_a_variable_and_lookup_goes_on() -> None:
    routes = table(spec("var", {"path": "/a/{x}"}), spec("rest", {"path": "/a/{x=**}"}))
    assert winner(routes, "GET", "h", "/a/") == "rest"


@pytest.mark.parametrize(
    ("route", "path", "upstream_path"),
    [
        pytest.param({"prefix": "/v1/voting/ballots"}, "/v1/voting/ballots", "/ballots", id="prefix-itself"),
        pytest.param({"prefix": "/v1/voting/ballots"}, "/v1/voting/ballots/42", "/ballots/42", id="prefix-remainder"),
        pytest.param({"prefix": "/v1/voting/ballots"}, "/v1/voting/ballots/", "/ballots/", id="prefix-trailing-slash"),
        pytest.param({"prefix": "/v1/voting/ballots"}, "/v1/voting/ballots/a/b", "/ballots/a/b", id="prefix-deep"),
    ],
)
def test_prefix_rewrite_joins_the_remainder(route: dict[str, Any], path: str, upstream_path: str) -> None:
    match = table(spec("r", route, rewrite="/ballots")).match_http("GET", "h", path)
    assert match is not None and match.upstream_path == upstream_path


@pytest.mark.parametrize(
    ("route", "path", "upstream_path", "bindings"),
    [
        ({"match": {"prefix": "/api"}, "rewrite": "/"}, "/api/x", "/x", {}),
        ({"match": {"prefix": "/api"}, "rewrite": "/"}, "/api", "/", {}),
        ({"match": {"prefix": "/api"}, "rewrite": "/base/"}, "/api", "/base/", {}),
        ({"match": {"prefix": "/api"}, "rewrite": "/base/"}, "/api/x", "/base/x", {}),
        ({"match": {"prefix": "/api"}}, "/api/x", "/api/x", {}),
        ({"match": {"prefix": "/"}, "rewrite": "/v2"}, "/", "/v2", {}),
        ({"match": {"prefix": "/"}, "rewrite": "/v2"}, "/a/b", "/v2/a/b", {}),
        (
            {"match": {"path": "/v1/prescriptions/refill"}, "rewrite": "/refill"},
            "/v1/prescriptions/refill",
            "/refill",
            {},
        ),
        ({"match": {"path": "/v1/exact"}}, "/v1/exact", "/v1/exact", {}),
        (
            {"match": {"path": "/v1/prescriptions/{rx}"}, "rewrite": "/prescriptions/{rx}"},
            "/v1/prescriptions/RX-42",
            "/prescriptions/RX-42",
            {"rx": "RX-42"},
        ),
        (
            {"match": {"path": "/v1/prescriptions/{rx}"}, "rewrite": "/prescriptions/{rx}"},
            "/v1/prescriptions/a%20b",
            "/prescriptions/a%20b",
            {"rx": "a b"},
        ),
        (
            {"match": {"path": "/v1/{name=shelves/*}/books"}, "rewrite": "/s/{name}"},
            "/v1/shelves/7/books",
            "/s/shelves/7",
            {"name": "shelves/7"},
        ),
        (
            {"match": {"path": "/files/{path=**}"}, "rewrite": "/store/{path}"},
            "/files/a/b%2Fc",
            "/store/a/b%2Fc",
            {"path": "a/b%2Fc"},
        ),
        (
            {"match": {"path": "/v1/{a}/{b}"}, "rewrite": "/{b}/{a}:swap"},
            "/v1/x/y",
            "/y/x:swap",
            {"a": "x", "b": "y"},
        ),
        ({"match": {"path": "/v1/{id}:cancel"}, "rewrite": "/cancel/{id}"}, "/v1/7:cancel", "/cancel/7", {"id": "7"}),
        ({"match": {"path": "/v1/{id}:cancel"}}, "/v1/7:cancel", "/v1/7:cancel", {"id": "7"}),
        ({"match": {"path": "/v1/{id}"}, "rewrite": "/fixed"}, "/v1/7", "/fixed", {"id": "7"}),
        ({"match": {"path": "/v1/*/x"}}, "/v1/a/x", "/v1/a/x", {}),
    ],
)
def test_rewrite(route: dict[str, Any], path: str, upstream_path: str, bindings: dict[str, str]) -> None:
    match = table({"name": "r", "upstream": "svc", **route}).match_http("GET", "h", path)
    assert match is not None
    assert (match.upstream_path, dict(match.bindings)) == (upstream_path, bindings)


def test_match_carries_operation_and_timeout() -> None:
    routes = table(spec("refill", {"path": "/r"}, operation="hms.pharmacy.v1.Pharmacy/Refill", timeout="5s"))
    match = routes.match_http("GET", "h", "/r")
    assert match is not None
    assert (match.operation, match.route.timeout, match.route.upstream) == (
        "hms.pharmacy.v1.Pharmacy/Refill",
        5.0,
        "svc",
    )
    unnamed = table({"match": {"path": "/u", "methods": ["GET"]}, "upstream": "svc"}).match_http("GET", "h", "/u")
    assert unnamed is not None and unnamed.operation == "GET /u"


GRPC = (
    spec("service", {"grpc": "pkg.v1.Svc"}),
    spec("method", {"grpc": "/pkg.v1.Svc/Special"}),
    spec("no-slash", {"grpc": "other.v1.Svc/Only"}),
)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/pkg.v1.Svc/Special", "method"),
        ("/pkg.v1.Svc/Other", "service"),
        ("/other.v1.Svc/Only", "no-slash"),
        ("/other.v1.Svc/Else", None),
        ("/pkg.v1.Svc", None),
        ("/pkg.v1.Svc/A/B", None),
        ("pkg.v1.Svc/Special", None),
    ],
)
def test_grpc_method_beats_service(path: str, expected: str | None) -> None:
    match = table(*GRPC).match_grpc(path)
    assert (match.route.name if match else None) == expected
    if match is not None:
        assert (match.operation, match.upstream_path) == (path[1:], path)


def test_grpc_services_and_http_lookup_do_not_mix() -> None:
    routes = table(*GRPC)
    assert routes.grpc_services() == ["other.v1.Svc", "pkg.v1.Svc"]
    assert routes.match_http("POST", "h", "/pkg.v1.Svc/Special") is None


@pytest.mark.parametrize(
    ("routes", "path"),
    [
        pytest.param((spec("p", {"prefix": "/api"}),), "/api/a%2Fb", id="prefix-remainder"),
        pytest.param((spec("t", {"path": "/x/*/y"}),), "/x/a%2Fb/y", id="template-wildcard-without-variable"),
        pytest.param(
            (spec("t", {"path": "/x/{id}/{rest=**}"}), spec("w", {"path": "/x/*/y"})), "/x/a%2Fb/y", id="winner-decides"
        ),
    ],
)
def test_encoded_slash_outside_a_variable_is_a_bad_request(routes: tuple[dict[str, Any], ...], path: str) -> None:
    with pytest.raises(BadRequest, match="%2F"):
        table(*routes).match_http("GET", "h", path)


@pytest.mark.parametrize(
    ("route", "path", "bindings"),
    [
        ({"path": "/files/{name}"}, "/files/a%2Fb", {"name": "a/b"}),
        ({"path": "/files/{name=**}"}, "/files/x/a%2Fb", {"name": "x/a%2Fb"}),
    ],
)
def test_encoded_slash_inside_a_variable_is_data(route: dict[str, Any], path: str, bindings: dict[str, str]) -> None:
    match = table(spec("f", route)).match_http("GET", "h", path)
    assert match is not None and dict(match.bindings) == bindings


def test_encoded_slash_with_no_route_is_not_found() -> None:
    assert table(spec("e", {"path": "/a/b"})).match_http("GET", "h", "/a%2Fb") is None


def ten_thousand_routes() -> list[Route]:
    """10,000 routes, a third of each HTTP kind, built without the config models (that is not what is timed)."""
    routes: list[Route] = []
    for i in range(3334):
        routes.append(Route(f"exact-{i}", "exact", f"/svc{i}/health", "svc", len(routes)))
        template = parse_template(f"/svc{i}/items/{{id}}")
        rewrite = parse_template(f"/items{i}/{{id}}")
        routes.append(
            Route(
                f"template-{i}",
                "template",
                template.source,
                "svc",
                len(routes),
                template=template,
                rewrite=rewrite.source,
                rewrite_template=rewrite,
            )
        )
        routes.append(Route(f"prefix-{i}", "prefix", f"/svc{i}/files", "svc", len(routes), rewrite="/files"))
    return routes[:10_000]


def test_ten_thousand_routes_resolve_by_index() -> None:
    routes = RouteTable(ten_thousand_routes())
    assert len(routes.routes) == 10_000
    for i in range(0, 3333, 37):
        exact = routes.match_http("GET", "h", f"/svc{i}/health")
        templ = routes.match_http("GET", "h", f"/svc{i}/items/x{i}")
        prefix = routes.match_http("GET", "h", f"/svc{i}/files/a/b")
        assert exact is not None and exact.route.name == f"exact-{i}"
        assert templ is not None and (templ.route.name, templ.upstream_path) == (f"template-{i}", f"/items{i}/x{i}")
        assert templ.bindings == {"id": f"x{i}"}
        assert prefix is not None and (prefix.route.name, prefix.upstream_path) == (f"prefix-{i}", "/files/a/b")
    assert routes.match_http("GET", "h", "/svc9999/health") is None
    assert routes.match_http("GET", "h", "/svc1/items/x/more") is None


def test_routes_built_directly_and_listed_in_lookup_order() -> None:
    routes = RouteTable(
        [
            Route(name="p", kind="prefix", pattern="/a", upstream="u", index=0),
            Route(name="g", kind="grpc", pattern="pkg.S", upstream="g", index=1),
            Route(name="e", kind="exact", pattern="/a/b", upstream="u", index=2),
        ]
    )
    assert [r.name for r in routes.ordered()] == ["e", "p", "g"]
    ordered = table(
        spec("star", {"path": "/a/*"}),
        spec("double", {"path": "/a/**"}),
        spec("lit", {"path": "/a/b"}),
        spec("short", {"prefix": "/a"}),
        spec("long", {"prefix": "/a/b"}),
        spec("lit-t", {"path": "/a/b/{x}"}),
    ).ordered()
    assert [r.name for r in ordered] == ["lit", "lit-t", "star", "double", "long", "short"]


def test_live_table_swaps_whole() -> None:
    first, second = table(spec("one", {"path": "/1"})), table(spec("two", {"path": "/2"}))
    live = LiveTable(first)
    live.swap(second)
    assert (live.current, live.generation) == (second, 2)


def test_remembered_matches_give_the_same_answers_past_the_memory_limit() -> None:
    from edge.routes import RECENT_MATCHES

    routes = table(
        spec("user", {"path": "/v1/users/{id}"}),
        spec("files", {"prefix": "/files"}, rewrite="/store"),
    )
    paths = [f"/v1/users/u{i}" for i in range(RECENT_MATCHES + 10)] + [f"/files/f{i}" for i in range(50)]
    for _ in range(2):  # the second round is answered from memory, except what the emptied memory forgot
        for path in paths:
            match = routes.match_http("GET", "example.org", path)
            assert match is not None
            if path.startswith("/v1/users/"):
                assert (match.route.name, dict(match.bindings)) == ("user", {"id": path.rsplit("/", 1)[1]})
            else:
                assert (match.route.name, match.upstream_path) == ("files", "/store/" + path.rsplit("/", 1)[1])
    assert routes.match_http("GET", "example.org", "/nothing") is None
    assert routes.match_http("GET", "example.org", "/nothing") is None
    assert len(routes._recent) <= RECENT_MATCHES


def test_a_remembered_match_cannot_be_changed_by_a_call() -> None:
    routes = table(spec("user", {"path": "/v1/users/{id}"}))
    match = routes.match_http("GET", "h", "/v1/users/7")
    assert match is not None
    with pytest.raises(TypeError):
        match.bindings["id"] = "8"  # type: ignore[index]
    again = routes.match_http("GET", "h", "/v1/users/7")
    assert again is not None and dict(again.bindings) == {"id": "7"}


def test_a_path_refused_once_is_refused_every_time() -> None:
    routes = table(spec("files", {"prefix": "/files"}))
    for _ in range(2):
        with pytest.raises(BadRequest):
            routes.match_http("GET", "h", "/files/a%2Fb")
