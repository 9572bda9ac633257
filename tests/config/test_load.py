"""Loading edge.yaml and the routes file: every problem is one line naming file, dotted key and expectation."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest
from pydantic import BaseModel

from edge.config import ConfigError, EdgeConfig, RouteMatch, RouteSpec, Upstream, load, load_routes
from edge.config.audit import Audit, StdoutSink
from edge.config.gateway import Listener

UPSTREAMS = """
upstreams:
  svc: {endpoints: ["http://svc:7000"]}
  rpc: {endpoints: ["grpc://rpc:50051"]}
"""
ROUTES_OK = "routes:\n  - {match: {path: /ok}, upstream: svc}\n"


def write(folder: Path, edge: str, routes: str | None = ROUTES_OK) -> Path:
    (folder / "edge.yaml").write_text(edge, encoding="utf-8")
    if routes is not None:
        (folder / "routes.yaml").write_text(routes, encoding="utf-8")
    return folder / "edge.yaml"


def problems(folder: Path, edge: str, routes: str | None = ROUTES_OK, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(write(folder, edge, routes), env={} if env is None else env)
    return [line.replace(str(folder), "DIR") for line in caught.value.problems]


def fields(model: type[BaseModel]) -> str:
    return ", ".join(sorted(model.model_fields))


def sink_types() -> str:
    """The audit sink `type` values, as the discriminator error lists them."""
    (item,) = {get_args(Audit.model_fields["sinks"].annotation)[0]}
    members = get_args(get_args(item)[0])
    return ", ".join(repr(get_args(m.model_fields["type"].annotation)[0]) for m in members)


EDGE_ERRORS = [
    ("listners: {}", f"listners: unknown key (expected one of: {fields(EdgeConfig)})"),
    ("listeners: {http: {prot: 1}}", f"listeners.http.prot: unknown key (expected one of: {fields(Listener)})"),
    ("listeners: {http: {port: abc}}", "listeners.http.port: expected an integer (got 'abc')"),
    ("listeners: {http: {port: 70000}}", "listeners.http.port: expected a number at most 65535 (got 70000)"),
    ("listeners: {http: 8080}", "listeners.http: expected a mapping (got 8080)"),
    ("listeners: {http: {tls: {cert: c.pem}}}", "listeners.http.tls.key: required key is missing"),
    (
        "listeners: {http: {tls: {cert: c, key: k, min_version: '1.1'}}}",
        "listeners.http.tls.min_version: expected '1.2' or '1.3' (got '1.1')",
    ),
    ("routes_file: [a]", "routes_file: expected a file path (got ['a'])"),
    ("upstreams: [svc]", "upstreams: expected a mapping (got ['svc'])"),
    ("upstreams: {a: {endpoints: http://a}}", "upstreams.a.endpoints: expected a list (got 'http://a')"),
    ("upstreams: {a: {endpoints: []}}", "upstreams.a.endpoints: expected at least 1 item(s)"),
    (
        "upstreams: {a: {endpoints: ['ftp://a']}}",
        "upstreams.a.endpoints: expected an endpoint URL such as http://host:port or grpcs://host:port (got 'ftp://a')",
    ),
    (
        "upstreams: {a: {endpoints: ['http://a:1/base']}}",
        "upstreams.a.endpoints: an endpoint is scheme://host:port only; use a route's rewrite for paths (got 'http://a:1/base')",
    ),
    (
        "upstreams: {a: {endpoints: ['http://a'], preserve_host: maybe}}",
        "upstreams.a.preserve_host: expected true or false (got 'maybe')",
    ),
    (
        "upstreams: {a: {endpoints: ['http://a'], timeout: 5 parsecs}}",
        "upstreams.a.timeout: expected a duration such as 250ms, 15s, 5m, 30d (got '5 parsecs')",
    ),
    (
        "upstreams: {a: {endpoints: ['http://a'], timeout: -1}}",
        "upstreams.a.timeout: expected a duration such as 250ms, 15s, 5m, 30d, finite and not negative (got -1)",
    ),
    ("upstreams: {svc.v1: {endpoints: x}}", "upstreams[\"svc.v1\"].endpoints: expected a list (got 'x')"),
    ("limits: {max_body: 10XB}", "limits.max_body: expected a size such as 4096, 64KiB, 10MiB (got '10XB')"),
    ("limits: {max_headers: 0}", "limits.max_headers: expected a number at least 1 (got 0)"),
    (
        "limits: {stream_idle_timeout: -5}",
        "limits.stream_idle_timeout: expected a duration such as 250ms, 15s, 5m, 30d, finite and not negative (got -5)",
    ),
    (
        "limits: {stream_idle_timeout: null}",
        "limits.stream_idle_timeout: expected a duration such as 250ms, 15s, 5m, 30d (got None)",
    ),
    ("server: {watch_interval: 0}", "server.watch_interval: expected a number above 0 (got 0)"),
    ("audit: {sinks: [{type: kafka}]}", f"audit.sinks[0].type: expected one of: {sink_types()} (got 'kafka')"),
    ("audit: {sinks: [{path: a.jsonl}]}", "audit.sinks[0].type: required key is missing"),
    ("audit: {sinks: [{type: file}]}", "audit.sinks[0].path: required key is missing"),
    (
        "audit: {sinks: [{type: stdout, x: 1}]}",
        f"audit.sinks[0].x: unknown key (expected one of: {fields(StdoutSink)})",
    ),
    ("audit: {sinks: [stdout]}", "audit.sinks[0]: expected a mapping (got 'stdout')"),
]


@pytest.mark.parametrize(("edge", "line"), EDGE_ERRORS, ids=[line.split(":")[0] for _, line in EDGE_ERRORS])
def test_edge_yaml_error_lines(tmp_path: Path, edge: str, line: str) -> None:
    assert problems(tmp_path, edge, routes="") == [f"DIR/edge.yaml: {line}"]


ROUTE_FIELDS, MATCH_FIELDS = fields(RouteSpec), fields(RouteMatch)
ROUTE_ERRORS = [
    (
        "- {match: {path: /a}, upstream: svc, retries: 3}",
        f"routes[0].retries: unknown key (expected one of: {ROUTE_FIELDS})",
    ),
    (
        "- {match: {path: /a, verb: x}, upstream: svc}",
        f"routes[0].match.verb: unknown key (expected one of: {MATCH_FIELDS})",
    ),
    ("- {match: {path: /a}}", "routes[0].upstream: required key is missing"),
    ("- {upstream: svc}", "routes[0].match: required key is missing"),
    (
        "- {match: {path: /a, prefix: /b}, upstream: svc}",
        "routes[0].match: expected exactly one of path, prefix, grpc (got path, prefix)",
    ),
    ("- {match: {}, upstream: svc}", "routes[0].match: expected exactly one of path, prefix, grpc (got none)"),
    ("- {match: {path: a}, upstream: svc}", "routes[0].match.path: expected a path starting with '/' (got 'a')"),
    (
        "- {match: {path: '/v1/{rx'}, upstream: svc}",
        "routes[0].match.path: bad path template: unclosed '{' at column 5 of '/v1/{rx'",
    ),
    (
        "- {match: {path: '/v1/a%2Fb/{x}'}, upstream: svc}",
        "routes[0].match.path: expected no encoded '/' (%2F) in a literal segment (got '/v1/a%2Fb/{x}')",
    ),
    (
        "- {match: {path: '/a b'}, upstream: svc}",
        "routes[0].match.path: expected a valid path: space in path (got '/a b')",
    ),
    (
        "- {match: {path: '/a?b=1'}, upstream: svc}",
        "routes[0].match.path: expected a path without query or fragment (got '/a?b=1')",
    ),
    (
        "- {match: {prefix: '/a%2fb'}, upstream: svc}",
        "routes[0].match.prefix: expected no encoded '/' (%2F): it is never matched outside a variable (got '/a%2fb')",
    ),
    (
        "- {match: {prefix: '/v1/{x}'}, upstream: svc}",
        "routes[0].match.prefix: expected a literal prefix; use path: for a template such as /v1/{x}/** (got '/v1/{x}')",
    ),
    (
        "- {match: {path: /a, methods: [GET, FETCH]}, upstream: svc}",
        "routes[0].match.methods: expected HTTP methods such as GET, POST (got 'FETCH')",
    ),
    ("- {match: {path: /a, methods: GET}, upstream: svc}", "routes[0].match.methods: expected a list (got 'GET')"),
    (
        "- {match: {path: /a, host: 'api.example.com:443'}, upstream: svc}",
        "routes[0].match.host: expected a host name such as api.example.com or *.example.com, no port (got 'api.example.com:443')",
    ),
    (
        "- {match: {grpc: Svc}, upstream: rpc}",
        "routes[0].match.grpc: expected pkg.Service or /pkg.Service/Method (got 'Svc')",
    ),
    (
        "- {match: {grpc: /pkg.Svc}, upstream: rpc}",
        "routes[0].match.grpc: expected pkg.Service or /pkg.Service/Method (got '/pkg.Svc')",
    ),
    (
        "- {match: {grpc: pkg.Svc/A/B}, upstream: rpc}",
        "routes[0].match.grpc: expected pkg.Service or /pkg.Service/Method (got 'pkg.Svc/A/B')",
    ),
    (
        "- {match: {grpc: pkg.Svc, methods: [POST]}, upstream: rpc}",
        "routes[0].match: methods and host apply to HTTP routes, not to grpc ones",
    ),
    (
        "- {match: {grpc: pkg.Svc}, upstream: rpc, rewrite: /x}",
        "routes[0].rewrite: rewrite applies to HTTP routes, not to grpc ones",
    ),
    (
        "- {match: {path: '/v1/{rx}'}, upstream: svc, rewrite: '/p/{id}'}",
        "routes[0].rewrite: expected variables the match binds: {id} is not bound (the match binds rx)",
    ),
    (
        "- {match: {prefix: /v1}, upstream: svc, rewrite: '/p/{id}'}",
        "routes[0].rewrite: expected variables the match binds: {id} is not bound (the match binds no variables)",
    ),
    (
        "- {match: {path: '/v1/{rx}'}, upstream: svc, rewrite: '/p/*'}",
        "routes[0].rewrite: expected '*' and '**' only inside a {variable} in a rewrite (got '/p/*')",
    ),
    (
        "- {match: {path: '/v1/{rx}'}, upstream: svc, rewrite: '/p/{rx'}",
        "routes[0].rewrite: bad path template: unclosed '{' at column 4 of '/p/{rx'",
    ),
    (
        "- {match: {path: /a}, upstream: svc, rewrite: b}",
        "routes[0].rewrite: expected a path starting with '/' (got 'b')",
    ),
    (
        "- {match: {path: /a}, upstream: 'ftp://x'}",
        "routes[0].upstream: expected an upstream name or a URL such as http://host:port (got 'ftp://x')",
    ),
    (
        "- {match: {path: /a}, upstream: 'http://x:abc'}",
        "routes[0].upstream: expected an upstream name or a URL such as http://host:port (got 'http://x:abc')",
    ),
    (
        "- {match: {path: /a}, upstream: 'http://x?y=1'}",
        "routes[0].upstream: expected a URL without query or fragment (got 'http://x?y=1')",
    ),
    (
        "- {match: {path: /a}, upstream: 'http://x/base', rewrite: /r}",
        "routes[0].upstream: expected the path in one place: the upstream URL or rewrite, not both (got 'http://x/base')",
    ),
    ("- {match: {path: /a}, upstream: 7}", "routes[0].upstream: expected a string (got 7)"),
    ("- {match: {path: /a}, upstream: svc, timeout: 0}", "routes[0].timeout: expected a duration above 0, such as 5s"),
    (
        "- {match: {path: /a}, upstream: svc, timeout: soon}",
        "routes[0].timeout: expected a duration such as 250ms, 15s, 5m, 30d (got 'soon')",
    ),
    (
        "- {match: {path: /a}, upstream: nosuch}",
        "routes[0].upstream: unknown upstream 'nosuch' (expected one of: rpc, svc, or a URL)",
    ),
    (
        "- {match: {grpc: pkg.Svc}, upstream: svc}",
        "routes[0].upstream: a grpc route needs a grpc upstream ('svc' speaks http)",
    ),
    (
        "- {match: {grpc: pkg.Svc}, upstream: 'http://x:1'}",
        "routes[0].upstream: a grpc route needs a grpc upstream ('http://x:1' speaks http)",
    ),
    (
        "- {name: a, match: {path: /a}, upstream: svc}\n- {name: a, match: {path: /b}, upstream: svc}",
        "routes[1].name: duplicate route name 'a' (also routes[0])",
    ),
    (
        "- {match: {prefix: /a/}, upstream: svc}\n- {match: {prefix: /a}, upstream: rpc}",
        "routes[1].match: same match as routes[0], so this route would never be chosen",
    ),
    ("- x", "routes[0]: expected a mapping (got 'x')"),
    (
        "- '/v1/x': 'ftp://x'",
        "routes[0][\"/v1/x\"]: expected an upstream name or a URL such as http://host:port (got 'ftp://x')",
    ),
    (
        "- '/v1/x': {upstream: svc, retries: 1}",
        f'routes[0]["/v1/x"].retries: unknown key (expected one of: {ROUTE_FIELDS})',
    ),
    (
        "- '/v1/x': {upstream: svc, match: {methods: [FETCH]}}",
        "routes[0][\"/v1/x\"].match.methods: expected HTTP methods such as GET, POST (got 'FETCH')",
    ),
]


@pytest.mark.parametrize(
    ("routes", "line"), ROUTE_ERRORS, ids=[line.split(": ", 1)[1][:60] for _, line in ROUTE_ERRORS]
)
def test_routes_file_error_lines(tmp_path: Path, routes: str, line: str) -> None:
    assert problems(tmp_path, UPSTREAMS, "routes:\n" + routes + "\n") == [f"DIR/routes.yaml: {line}"]


@pytest.mark.parametrize(
    ("routes", "line"),
    [
        (
            '"/v1/x": ftp://x',
            "[\"/v1/x\"]: expected an upstream name or a URL such as http://host:port (got 'ftp://x')",
        ),
        ('"/v1/x": nosuch', "[\"/v1/x\"]: unknown upstream 'nosuch' (expected one of: rpc, svc, or a URL)"),
        ('"/a": http://x\nv1: http://x', "v1: expected a path starting with '/' (got 'v1')"),
        (
            'routes: {"/v1/{x": "http://x"}',
            "routes[\"/v1/{x\"]: bad path template: unclosed '{' at column 5 of '/v1/{x'",
        ),
        (
            'routes: {"/v1/x": {upstream: svc, timeout: 0}}',
            'routes["/v1/x"].timeout: expected a duration above 0, such as 5s',
        ),
        ("route: []", "route: unknown key (expected one of: routes)"),
        ("routes: 5", "routes: expected a list (got 5)"),
    ],
)
def test_routes_file_shorthand_and_shape_error_lines(tmp_path: Path, routes: str, line: str) -> None:
    assert problems(tmp_path, UPSTREAMS, routes + "\n") == [f"DIR/routes.yaml: {line}"]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("a: [1\n", "invalid YAML at line 2, column 1: expected ',' or ']', but got '<stream end>'"),
        ("a: b: c\n", "invalid YAML at line 1, column 5: mapping values are not allowed here"),
        (
            "listeners:\n  http: {port: 1}\n  http: {port: 2}\n",
            "invalid YAML at line 3, column 3: duplicate key 'http' (first at line 2)",
        ),
        ("{a: 1, a: 2}", "invalid YAML at line 1, column 8: duplicate key 'a' (first at line 1)"),
        ("x: !!float abc\n", "invalid YAML: could not convert string to float: 'abc'"),
        (
            "x: !!python/name:os.system ''\n",
            "invalid YAML at line 1, column 4: could not determine a constructor for the tag 'tag:yaml.org,2002:python/name:os.system'",
        ),
        ("- a\n- b\n", "(top level): expected a mapping of keys to values (got a list)"),
        ("just words\n", "(top level): expected a mapping of keys to values (got a string)"),
        ("42\n", "(top level): expected a mapping of keys to values (got a number)"),
    ],
)
def test_unreadable_edge_yaml_is_one_line_and_stops_there(tmp_path: Path, text: str, line: str) -> None:
    assert problems(tmp_path, text, routes="routes: 5") == [f"DIR/edge.yaml: {line}"]


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path / "nope.yaml", env={})
    assert caught.value.problems == [f"{tmp_path}/nope.yaml: file not found"]
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, env={})
    assert caught.value.problems == [f"{tmp_path}: expected a file, found a directory"]
    (tmp_path / "latin1.yaml").write_bytes(b"a: caf\xe9\n")
    with pytest.raises(ConfigError) as caught:
        load(tmp_path / "latin1.yaml", env={})
    assert caught.value.problems == [f"{tmp_path}/latin1.yaml: expected UTF-8 text (byte 6 is not)"]


def test_missing_routes_file_says_who_named_it(tmp_path: Path) -> None:
    assert problems(tmp_path, "routes_file: elsewhere.yaml\n", routes=None) == [
        "DIR/elsewhere.yaml: file not found (named by routes_file in DIR/edge.yaml)"
    ]


def test_errors_in_both_files_are_listed_together(tmp_path: Path) -> None:
    edge = UPSTREAMS + "listeners: {http: {port: abc}}\n"
    routes = "routes:\n  - {match: {path: /a}, upstream: nosuch}\n  - {match: {path: a}, upstream: svc}\n"
    assert problems(tmp_path, edge, routes) == [
        "DIR/edge.yaml: listeners.http.port: expected an integer (got 'abc')",
        "DIR/routes.yaml: routes[1].match.path: expected a path starting with '/' (got 'a')",
        "DIR/routes.yaml: routes[0].upstream: unknown upstream 'nosuch' (expected one of: rpc, svc, or a URL)",
    ]


def test_invalid_edge_yaml_still_names_its_routes_file_and_upstreams(tmp_path: Path) -> None:
    edge = """
routes_file: mine.yaml
limits: {max_body: lots}
upstreams:
  svc: {endpoints: ["http://svc:1"]}
  rpc: {endpoints: ["grpc://rpc:1"], timeout: never}
"""
    (tmp_path / "mine.yaml").write_text(
        "routes:\n"
        "  - {match: {grpc: a.B}, upstream: svc}\n"
        "  - {match: {grpc: a.C}, upstream: rpc}\n"
        "  - {match: {path: /x}, upstream: ghost}\n"
    )
    assert problems(tmp_path, edge, routes=None) == [
        "DIR/edge.yaml: upstreams.rpc.timeout: expected a duration such as 250ms, 15s, 5m, 30d (got 'never')",
        "DIR/edge.yaml: limits.max_body: expected a size such as 4096, 64KiB, 10MiB (got 'lots')",
        "DIR/mine.yaml: routes[0].upstream: a grpc route needs a grpc upstream ('svc' speaks http)",
        "DIR/mine.yaml: routes[2].upstream: unknown upstream 'ghost' (expected one of: rpc, svc, or a URL)",
    ]


@pytest.mark.parametrize(
    ("edge", "first"),
    [
        (
            "limits: {max_body: lots}",
            "DIR/edge.yaml: limits.max_body: expected a size such as 4096, 64KiB, 10MiB (got 'lots')",
        ),
        ("upstreams: 5", "DIR/edge.yaml: upstreams: expected a mapping (got 5)"),
    ],
)
def test_invalid_edge_yaml_falls_back_to_the_default_routes_file(tmp_path: Path, edge: str, first: str) -> None:
    routes = "routes:\n  - {match: {path: /x}, upstream: svc, timeout: 0}\n  - {match: {path: /y}, upstream: ghost}\n"
    expected = [first, "DIR/routes.yaml: routes[0].timeout: expected a duration above 0, such as 5s"]
    if not edge.startswith("upstreams"):
        expected.append(
            "DIR/routes.yaml: routes[1].upstream: unknown upstream 'ghost' (expected one of: none defined, or a URL)"
        )
    assert problems(tmp_path, edge, routes) == expected


def test_routes_file_is_not_guessed_when_routes_file_itself_is_wrong(tmp_path: Path) -> None:
    assert problems(tmp_path, "routes_file: [a]", routes="routes: 5") == [
        "DIR/edge.yaml: routes_file: expected a file path (got ['a'])"
    ]


ENV = {"HOST": "svc.internal", "PORT": "7100", "EMPTY": ""}


@pytest.mark.parametrize(
    ("written", "value"),
    [
        ("http://${HOST}:${PORT}", "http://svc.internal:7100"),
        ("http://${HOST:-other}:1", "http://svc.internal:1"),
        ("http://${MISSING:-fallback}:1", "http://fallback:1"),
        ("http://${EMPTY:-fallback}:1", "http://fallback:1"),
        ("http://a${EMPTY}:1", "http://a:1"),
        ("http://${MISSING:-}svc:1", "http://svc:1"),
    ],
)
def test_interpolation(tmp_path: Path, written: str, value: str) -> None:
    settings = load(write(tmp_path, f"upstreams: {{svc: {{endpoints: ['{written}']}}}}\n"), env=ENV)
    assert settings.config.upstreams["svc"].endpoints == (value,)


def test_interpolation_gives_numbers_and_works_in_the_routes_file(tmp_path: Path) -> None:
    edge = "listeners: {http: {port: '${PORT}'}}\nupstreams: {svc: {endpoints: ['http://${HOST}:1']}}\n"
    routes = "routes:\n  - {match: {path: '/${HOST}'}, upstream: svc, timeout: '${PORT:-5}ms'}\n"
    settings = load(write(tmp_path, edge, routes), env=ENV)
    assert settings.config.listeners.http is not None and settings.config.listeners.http.port == 7100
    assert settings.routes.routes[0].match.path == "/svc.internal"
    assert settings.routes.routes[0].timeout == pytest.approx(7.1)


def test_literal_dollar_brace(tmp_path: Path) -> None:
    routes = "routes:\n  - {name: 'cost $${X} ${HOST}', match: {path: /a}, upstream: svc}\n"
    settings = load(write(tmp_path, UPSTREAMS, routes), env=ENV)
    assert settings.routes.routes[0].name == "cost ${X} svc.internal"


@pytest.mark.parametrize(
    ("port", "line"),
    [
        ("${NOPE}", "environment variable NOPE is not set (use ${NOPE:-default} for a default)"),
        ("${1X}", "expected ${NAME} or ${NAME:-default}, or $${ for a literal '${' (got '${1X}')"),
        ("${X", "expected ${NAME} or ${NAME:-default}, or $${ for a literal '${' (got '${')"),
        ("${}", "expected ${NAME} or ${NAME:-default}, or $${ for a literal '${' (got '${}')"),
    ],
)
def test_interpolation_errors_name_the_key_once(tmp_path: Path, port: str, line: str) -> None:
    assert problems(tmp_path, f"listeners: {{http: {{port: '{port}'}}}}\n", routes="") == [
        f"DIR/edge.yaml: listeners.http.port: {line}"
    ]


def test_unset_variable_in_the_routes_file(tmp_path: Path) -> None:
    routes = "routes:\n  - {match: {path: /a}, upstream: '${TARGET}'}\n"
    assert problems(tmp_path, UPSTREAMS, routes) == [
        "DIR/routes.yaml: routes[0].upstream: environment variable TARGET is not set (use ${TARGET:-default} for a default)"
    ]


def test_relative_paths_are_relative_to_edge_yaml(tmp_path: Path) -> None:
    absolute = tmp_path / "elsewhere" / "k.pem"
    edge = f"routes_file: sub/r.yaml\nlisteners: {{http: {{tls: {{cert: c.pem, key: {absolute}}}}}}}\n"
    folder = tmp_path / "conf"
    for path in (folder / "sub" / "r.yaml", folder / "c.pem", absolute):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    settings = load(write(folder, edge, routes=None), env={})
    assert settings.routes_path == folder / "sub" / "r.yaml"
    tls = settings.config.listeners.http.tls if settings.config.listeners.http else None
    assert tls is not None and (tls.cert, tls.key) == (folder / "c.pem", absolute)


def test_input_files_named_in_edge_yaml_must_exist(tmp_path: Path) -> None:
    edge = (
        "listeners: {http: {tls: {cert: c.pem, key: k.pem}}}\n"
        "upstreams: {svc: {endpoints: ['https://svc:7000'], tls: {ca: ca.pem}}}\n"
        "identity: {providers: {dev: {type: jwt, issuer: i, audience: a, keys: {pem_file: jwt.pem}}}}\n"
        "protos: protos\n"
        "audit: {sinks: [{type: file, path: not-yet/audit.jsonl}], spool: {path: not-yet/spool}}\n"
    )
    (tmp_path / "c.pem").write_text("")
    assert sorted(problems(tmp_path, edge)) == sorted(
        [
            "DIR/edge.yaml: listeners.http.tls.key: expected a readable file (no file DIR/k.pem)",
            "DIR/edge.yaml: upstreams.svc.tls.ca: expected a readable file (no file DIR/ca.pem)",
            "DIR/edge.yaml: protos: expected a folder of .proto files or a descriptor set (no DIR/protos)",
            "DIR/edge.yaml: identity.providers.dev.keys.pem_file: expected a readable file (no file DIR/jwt.pem)",
        ]
    )


def test_empty_files_are_the_defaults(tmp_path: Path) -> None:
    settings = load(write(tmp_path, "", ""), env={})
    assert settings.config.upstreams == EdgeConfig().upstreams
    assert (settings.routes_path, settings.routes.routes) == (tmp_path / "routes.yaml", ())


def test_no_config_path_is_the_defaults() -> None:
    settings = load(None)
    assert (settings.config, settings.routes.routes, settings.config_path) == (EdgeConfig(), (), None)


def test_routes_named_by_url_are_implicit_upstreams(tmp_path: Path) -> None:
    routes = (
        'routes:\n  - "/v1/voting/ballots": http://election-svc:7100/ballots\n  - {match: {path: /ok}, upstream: svc}\n'
    )
    settings = load(write(tmp_path, UPSTREAMS, routes), env={})
    assert settings.upstreams() == {
        "svc": Upstream(endpoints=("http://svc:7000",)),
        "rpc": Upstream(endpoints=("grpc://rpc:50051",)),
        "http://election-svc:7100": Upstream(endpoints=("http://election-svc:7100",)),
    }


def test_load_routes_for_a_reload(tmp_path: Path) -> None:
    write(tmp_path, UPSTREAMS, "routes:\n  - {match: {path: /a}, upstream: ghost}\n")
    config = EdgeConfig.model_validate({"upstreams": {"svc": {"endpoints": ["http://svc:1"]}}})
    with pytest.raises(ConfigError) as caught:
        load_routes(tmp_path / "routes.yaml", config, env={})
    assert caught.value.problems == [
        f"{tmp_path}/routes.yaml: routes[0].upstream: unknown upstream 'ghost' (expected one of: svc, or a URL)"
    ]
    (tmp_path / "routes.yaml").write_text("routes:\n  - {match: {path: /a}, upstream: svc}\n")
    assert load_routes(tmp_path / "routes.yaml", config, env={}).routes[0].upstream == "svc"


def test_the_embedded_example_loads() -> None:
    example = Path(__file__).parents[2] / "src" / "edge" / "examples" / "edge.yaml"
    settings = load(example, env={})
    assert [r.display_name for r in settings.routes.routes] == ["refill", "prescription", "/v1/voting/ballots"]
