"""The config models on their own: durations, sizes, route matches, and the seed's shorthand."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from edge.config import RoutesFile, RouteSpec
from edge.config.base import parse_duration, parse_size
from edge.config.routes import Written, expand_shorthand


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        (5, 5.0),
        (1.5, 1.5),
        ("250ms", 0.25),
        ("15s", 15.0),
        ("1.5s", 1.5),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("30d", 2592000.0),
        ("10", 10.0),
        (" 7 s ", 7.0),
    ],
)
def test_durations(written: Any, seconds: float) -> None:
    assert parse_duration(written) == pytest.approx(seconds)


@pytest.mark.parametrize("written", ["5 parsecs", "-1s", -1, True, "1e3", float("inf"), float("nan"), "", [5]])
def test_bad_durations(written: Any) -> None:
    with pytest.raises(ValueError, match="expected a duration such as 250ms"):
        parse_duration(written)


@pytest.mark.parametrize(
    ("written", "size"),
    [
        (4096, 4096),
        ("4096", 4096),
        ("64KiB", 65536),
        ("10MiB", 10 * 2**20),
        ("10mb", 10**7),
        ("1GB", 10**9),
        ("2 GiB", 2 * 2**30),
        ("12B", 12),
    ],
)
def test_sizes(written: Any, size: int) -> None:
    assert parse_size(written) == size


@pytest.mark.parametrize("written", ["10XB", "1.5MiB", -1, False, "MiB", 1.5])
def test_bad_sizes(written: Any) -> None:
    with pytest.raises(ValueError, match="expected a size such as 4096"):
        parse_size(written)


def route(**fields: Any) -> RouteSpec:
    return RouteSpec.model_validate({"upstream": "svc", **fields})


@pytest.mark.parametrize(
    ("match", "field", "value"),
    [
        ({"grpc": "pkg.v1.Svc"}, "grpc", "pkg.v1.Svc"),
        ({"grpc": "/pkg.v1.Svc/Get"}, "grpc", "/pkg.v1.Svc/Get"),
        ({"grpc": "pkg.v1.Svc/Get"}, "grpc", "/pkg.v1.Svc/Get"),
        ({"path": "/a", "methods": ["get", "GET", "post"]}, "methods", ("GET", "POST")),
        ({"path": "/a", "host": "API.Example.com."}, "host", "api.example.com"),
        ({"path": "/a", "host": "*.example.com"}, "host", "*.example.com"),
        ({"path": "/a/./b/%7e"}, "path", "/a/b/~"),
        ({"prefix": "/caf%c3%a9"}, "prefix", "/caf%C3%A9"),
        ({"path": "/v1/{rx}"}, "path", "/v1/{rx}"),
    ],
)
def test_match_is_normalised(match: dict[str, Any], field: str, value: Any) -> None:
    assert getattr(route(match=match).match, field) == value


@pytest.mark.parametrize(
    ("fields", "upstream", "rewrite"),
    [
        ({"upstream": "http://svc:7100/ballots"}, "http://svc:7100", "/ballots"),
        ({"upstream": "http://svc:7100/"}, "http://svc:7100", None),
        ({"upstream": "http://svc:7100"}, "http://svc:7100", None),
        ({"upstream": "https://svc/v2/{rx}", "match": {"path": "/v1/{rx}"}}, "https://svc", "/v2/{rx}"),
        ({"upstream": "svc", "rewrite": "/x"}, "svc", "/x"),
    ],
)
def test_an_upstream_urls_path_is_the_rewrite(fields: dict[str, Any], upstream: str, rewrite: str | None) -> None:
    spec = route(**{"match": {"prefix": "/v1"}, **fields})
    assert (spec.upstream, spec.rewrite) == (upstream, rewrite)


@pytest.mark.parametrize(
    ("match", "name"),
    [
        ({"path": "/a"}, "/a"),
        ({"path": "/a", "methods": ["GET", "POST"]}, "GET,POST /a"),
        ({"prefix": "/a", "host": "api.example.com"}, "api.example.com/a"),
        ({"grpc": "pkg.S"}, "pkg.S"),
    ],
)
def test_display_name_of_an_unnamed_route(match: dict[str, Any], name: str) -> None:
    assert route(match=match).display_name == name
    assert route(match=match, name="given").display_name == "given"


def test_routes_are_frozen_and_strict() -> None:
    spec = route(match={"path": "/a"})
    with pytest.raises(ValidationError):
        spec.upstream = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="Extra inputs"):
        route(match={"path": "/a"}, retries=3)


BALLOTS = {
    "name": "/v1/voting/ballots",
    "match": {"prefix": "/v1/voting/ballots"},
    "upstream": "http://election-svc:7100/ballots",
}


@pytest.mark.parametrize(
    ("document", "entries", "written"),
    [
        pytest.param(
            {"/v1/voting/ballots": "http://election-svc:7100/ballots"},
            [BALLOTS],
            {0: Written(("/v1/voting/ballots",), True)},
            id="top-level-mapping",
        ),
        pytest.param(
            {"routes": {"/v1/voting/ballots": "http://election-svc:7100/ballots"}},
            [BALLOTS],
            {0: Written(("routes", "/v1/voting/ballots"), True)},
            id="routes-mapping",
        ),
        pytest.param(
            {
                "routes": [
                    {"/v1/voting/ballots": "http://election-svc:7100/ballots"},
                    {"match": {"path": "/a"}, "upstream": "svc"},
                ]
            },
            [BALLOTS, {"match": {"path": "/a"}, "upstream": "svc"}],
            {0: Written(("routes", 0, "/v1/voting/ballots"), True)},
            id="list-items-mixed-with-full-ones",
        ),
        pytest.param(
            {"routes": [{"/v1/rx/{rx}": {"upstream": "svc", "rewrite": "/rx/{rx}", "match": {"methods": ["GET"]}}}]},
            [
                {
                    "name": "/v1/rx/{rx}",
                    "match": {"path": "/v1/rx/{rx}", "methods": ["GET"]},
                    "upstream": "svc",
                    "rewrite": "/rx/{rx}",
                }
            ],
            {0: Written(("routes", 0, "/v1/rx/{rx}"), False)},
            id="mapping-value-adds-settings",
        ),
        pytest.param(
            {"routes": [{"/v1/x": {"upstream": "svc", "match": ["oops"]}}]},
            [{"name": "/v1/x", "match": ["oops"], "upstream": "svc"}],
            {0: Written(("routes", 0, "/v1/x"), False)},
            id="bad-match-left-for-the-model-to-report",
        ),
        pytest.param({"routes": []}, [], {}, id="full-form-untouched"),
    ],
)
def test_shorthand_expansion(document: dict[str, Any], entries: list[Any], written: dict[int, Written]) -> None:
    assert expand_shorthand(document) == ({"routes": entries}, written)


@pytest.mark.parametrize(
    ("key", "url", "kind", "upstream", "rewrite"),
    [
        ("/v1/voting/ballots", "http://election-svc:7100/ballots", "prefix", "http://election-svc:7100", "/ballots"),
        ("/v1/voting", "http://election-svc:7100", "prefix", "http://election-svc:7100", None),
        ("/v1/voting", "http://election-svc:7100/", "prefix", "http://election-svc:7100", None),
        ("/v1/rx/{rx}", "http://rx:1/rx/{rx}", "path", "http://rx:1", "/rx/{rx}"),
        ("/v1/rx/{rx}", "http://rx:1", "path", "http://rx:1", None),
        ("/v1/files/**", "grpc://files:1", "path", "grpc://files:1", None),
        ("/v1/b", "ballots", "prefix", "ballots", None),
    ],
)
def test_shorthand_becomes_a_full_route(key: str, url: str, kind: str, upstream: str, rewrite: str | None) -> None:
    data, _ = expand_shorthand({key: url})
    (spec,) = RoutesFile.model_validate(data).routes
    assert (spec.name, getattr(spec.match, kind), spec.upstream, spec.rewrite) == (key, key, upstream, rewrite)
