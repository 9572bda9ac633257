"""`edge check` and `edge routes`: the same validation as serve, every problem listed, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge.cli import main

EDGE = """
upstreams:
  pharmacy: {endpoints: ["http://127.0.0.1:7001"], timeout: 10s}
  rpc: {endpoints: ["grpc://127.0.0.1:50051"]}
"""
ROUTES = """
routes:
  - {name: refill, match: {path: /v1/prescriptions/refill, methods: [GET, POST]}, upstream: pharmacy, rewrite: /refill}
  - {name: rx, match: {path: "/v1/prescriptions/{rx}"}, upstream: pharmacy, rewrite: "/prescriptions/{rx}"}
  - {name: pharmacy-grpc, match: {grpc: hms.pharmacy.v1.Pharmacy}, upstream: rpc}
  - {name: api, match: {prefix: /api, host: api.example.com}, upstream: pharmacy}
  - "/v1/voting/ballots": http://election-svc:7100/ballots
"""


def files(folder: Path, edge: str = EDGE, routes: str = ROUTES) -> Path:
    (folder / "edge.yaml").write_text(edge)
    (folder / "routes.yaml").write_text(routes)
    return folder / "edge.yaml"


def test_check_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = files(tmp_path)
    assert main(["check", "-c", str(config)]) == 0
    out, err = capsys.readouterr()
    assert (out, err) == (f"{config}: ok (5 routes, 3 upstreams)\n", "")


@pytest.mark.parametrize(
    ("edge", "routes", "lines"),
    [
        pytest.param(
            EDGE + "listeners: {http: {port: abc}}\n",
            "routes:\n  - {match: {grpc: a.B}, upstream: pharmacy}\n  - {match: {path: '/x/{id}'}, upstream: rpc, rewrite: '/y/{other}'}\n",
            [
                "DIR/edge.yaml: listeners.http.port: expected an integer (got 'abc')",
                "DIR/routes.yaml: routes[1].rewrite: expected variables the match binds: {other} is not bound (the match binds id)",
                "DIR/routes.yaml: routes[0].upstream: a grpc route needs a grpc upstream ('pharmacy' speaks http)",
            ],
            id="both-files",
        ),
        pytest.param(
            "listeners: [",
            ROUTES,
            ["DIR/edge.yaml: invalid YAML at line 1, column 13: expected the node content, but found '<stream end>'"],
            id="invalid-yaml",
        ),
        pytest.param(
            "- a\n",
            ROUTES,
            ["DIR/edge.yaml: (top level): expected a mapping of keys to values (got a list)"],
            id="list-at-top",
        ),
        pytest.param(
            EDGE,
            "- a\n",
            ["DIR/routes.yaml: (top level): expected a mapping of keys to values (got a list)"],
            id="routes-list-at-top",
        ),
        pytest.param(
            EDGE,
            '"/v1/x": http://x:notaport\n',
            [
                "DIR/routes.yaml: [\"/v1/x\"]: expected an upstream name or a URL such as http://host:port (got 'http://x:notaport')"
            ],
            id="bad-url",
        ),
        pytest.param(
            EDGE,
            "routes:\n  - {match: {path: '/v1/{a}/{a}'}, upstream: pharmacy}\n",
            [
                "DIR/routes.yaml: routes[0].match.path: bad path template: duplicate variable field 'a' at column 9 of '/v1/{a}/{a}'"
            ],
            id="bad-template",
        ),
        pytest.param(
            EDGE + "limits: {max_body: huge}\nserver: {drain_timeout: later}\n",
            ROUTES,
            [
                "DIR/edge.yaml: limits.max_body: expected a size such as 4096, 64KiB, 10MiB (got 'huge')",
                "DIR/edge.yaml: server.drain_timeout: expected a duration such as 250ms, 15s, 5m, 30d (got 'later')",
            ],
            id="durations-and-sizes",
        ),
    ],
)
def test_check_lists_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edge: str, routes: str, lines: list[str]
) -> None:
    assert main(["check", "-c", str(files(tmp_path, edge, routes))]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.replace(str(tmp_path), "DIR").splitlines() == [
        f"{len(lines)} problem(s) in the configuration:",
        *(f"  {line}" for line in lines),
    ]


def test_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(tmp_path / "edge.yaml")]) == 1
    assert capsys.readouterr().err.splitlines()[1] == f"  {tmp_path}/edge.yaml: file not found"


def test_check_needs_a_config(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["check"])
    assert exited.value.code == 2
    assert "-c/--config" in capsys.readouterr().err


def test_routes_prints_the_table_most_specific_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["routes", "-c", str(files(tmp_path))]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert rows == [
        ["exact", "GET,POST", "*", "/v1/prescriptions/refill", "->", "pharmacy", "rewrite", "/refill"],
        ["template", "*", "*", "/v1/prescriptions/{rx}", "->", "pharmacy", "rewrite", "/prescriptions/{rx}"],
        ["prefix", "*", "*", "/v1/voting/ballots", "->", "http://election-svc:7100", "rewrite", "/ballots"],
        ["prefix", "*", "api.example.com", "/api", "->", "pharmacy"],
        ["grpc", "*", "*", "hms.pharmacy.v1.Pharmacy", "->", "rpc"],
    ]


def test_routes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["routes", "-c", str(files(tmp_path)), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in rows] == ["refill", "rx", "/v1/voting/ballots", "api", "pharmacy-grpc"]
    assert rows[0] == {
        "name": "refill",
        "kind": "exact",
        "match": "/v1/prescriptions/refill",
        "methods": ["GET", "POST"],
        "host": None,
        "upstream": "pharmacy",
        "rewrite": "/refill",
        "operation": None,
        "timeout": None,
    }


def test_routes_with_a_bad_config_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["routes", "-c", str(files(tmp_path, routes="routes: 5"))]) == 1
    assert capsys.readouterr().err.splitlines()[1] == f"  {tmp_path}/routes.yaml: routes: expected a list (got 5)"


def test_check_as_a_command(tmp_path: Path) -> None:
    config = files(tmp_path, routes="routes:\n  - {match: {path: /a}, upstream: ghost}\n  - x\n")
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    done = subprocess.run(
        [sys.executable, "-m", "edge", "check", "-c", str(config)], capture_output=True, text=True, env=env, timeout=30
    )
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.splitlines() == [
        "2 problem(s) in the configuration:",
        f"  {tmp_path}/routes.yaml: routes[1]: expected a mapping (got 'x')",
        f"  {tmp_path}/routes.yaml: routes[0].upstream: unknown upstream 'ghost' (expected one of: pharmacy, rpc, or a URL)",
    ]
