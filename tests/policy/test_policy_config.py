"""The `policy` section and per-route `policy` settings: validated at load, errors that name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.config import ConfigError, load
from policy_client import GovernanceService, LocalRules, Opa, Tls


def write(tmp_path: Path, policy: Any, route_policy: Any = None, rules: str | None = "rules: []\n") -> Path:
    route: dict[str, Any] = {"name": "r", "match": {"prefix": "/"}, "upstream": "http://127.0.0.1:9"}
    if route_policy is not None:
        route["policy"] = route_policy
    (tmp_path / "routes.yaml").write_text(yaml.safe_dump({"routes": [route]}))
    if rules is not None:
        (tmp_path / "rules.yaml").write_text(rules)
    config: dict[str, Any] = {"routes_file": "routes.yaml"}
    if policy is not None:
        config["policy"] = policy
    (tmp_path / "edge.yaml").write_text(yaml.safe_dump(config))
    return tmp_path / "edge.yaml"


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(path)
    return caught.value.problems


def test_no_section_means_no_policy(tmp_path: Path) -> None:
    assert load(write(tmp_path, None)).config.policy is None


def test_local_rules_path_is_relative_to_edge_yaml(tmp_path: Path) -> None:
    settings = load(write(tmp_path, {"rules": "rules.yaml", "timeout": "150ms", "cache": {"deny_ttl": "1s"}}))
    assert settings.config.policy is not None
    client = settings.config.policy.client_settings()
    assert client.engine == LocalRules(tmp_path / "rules.yaml", 1.0)
    assert (client.timeout, client.deny_ttl, client.allow_ttl) == (0.15, 1.0, 30.0)


def test_grpc_and_opa_sections_map_to_client_settings(tmp_path: Path) -> None:
    for name in ("ca.pem", "c.pem", "k.pem"):
        (tmp_path / name).write_text("PEM")
    grpc = {"engine": "grpc", "target": "gov:50061", "tls": {"ca": "ca.pem", "cert": "c.pem", "key": "k.pem"}}
    config = load(write(tmp_path, grpc)).config.policy
    assert config is not None
    assert config.client_settings().engine == GovernanceService(
        "gov:50061", Tls(tmp_path / "ca.pem", tmp_path / "c.pem", tmp_path / "k.pem"), 2.0
    )
    opa = {"engine": "opa", "url": "http://opa:8181", "path": "hms/edge/allow"}
    config = load(write(tmp_path, opa)).config.policy
    assert config is not None
    assert config.client_settings().engine == Opa("http://opa:8181", "hms/edge/allow")


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ({}, "policy: engine local needs rules"),
        ({"engine": "grpc", "target": "gov:1"}, "policy: engine grpc needs either tls"),
        ({"engine": "grpc", "target": "gov:1", "plaintext": True, "tls": {"ca": "x"}}, "engine grpc needs either tls"),
        ({"engine": "opa", "url": "http://opa:8181"}, "policy: engine opa needs path"),
        ({"engine": "opa", "url": "opa:8181", "path": "a"}, "expected http://host:port"),
        ({"rules": "rules.yaml", "target": "gov:1"}, "target do not apply to engine local"),
        ({"rules": "rules.yaml", "on_error": "maybe"}, "policy.on_error: expected 'deny' or 'allow'"),
        ({"rules": "rules.yaml", "timeout": "soon"}, "policy.timeout: expected a duration"),
        ({"rules": "rules.yaml", "engine": "xacml"}, "policy.engine: expected 'local', 'grpc' or 'opa'"),
        ({"rules": "rules.yaml", "cache": {"allow": "1s"}}, "policy.cache.allow: unknown key"),
        ({"engine": "grpc", "target": "g:1", "tls": {"cert": "c.pem"}}, "cert and key go together"),
    ],
)
def test_invalid_sections_name_the_key(tmp_path: Path, policy: dict[str, Any], expected: str) -> None:
    found = problems(write(tmp_path, policy))
    assert any(expected in p for p in found), found


def test_an_invalid_rules_file_is_a_config_problem(tmp_path: Path) -> None:
    found = problems(write(tmp_path, {"rules": "rules.yaml"}, rules="rules: [{effect: permit, actions: [x]}]\n"))
    assert any(
        p.startswith(f"{tmp_path / 'rules.yaml'}: rules[0].effect: expected 'allow' or 'deny'") for p in found
    ), found


def test_missing_tls_files_are_config_problems(tmp_path: Path) -> None:
    found = problems(write(tmp_path, {"engine": "grpc", "target": "g:1", "tls": {"ca": "nope.pem"}}))
    assert found == [f"{tmp_path / 'edge.yaml'}: policy.tls.ca: file not found: {tmp_path / 'nope.pem'}"]


def test_a_missing_rules_file_is_a_config_problem(tmp_path: Path) -> None:
    found = problems(write(tmp_path, {"rules": "nope.yaml"}))
    assert any("nope.yaml: cannot read the rules file" in p for p in found), found


@pytest.mark.parametrize(
    ("route_policy", "expected"),
    [
        ({"on_error": "open"}, "routes[0].policy.on_error"),
        ({"skip": "yes please"}, "routes[0].policy.skip"),
        ({"x": 1}, "routes[0].policy.x: unknown key"),
    ],
)
def test_route_policy_is_validated(tmp_path: Path, route_policy: dict[str, Any], expected: str) -> None:
    found = problems(write(tmp_path, {"rules": "rules.yaml"}, route_policy))
    assert any(expected in p for p in found), found


def test_route_policy_is_read(tmp_path: Path) -> None:
    settings = load(write(tmp_path, {"rules": "rules.yaml"}, {"on_error": "allow", "deny_message": "no"}))
    route_policy = settings.routes.routes[0].policy
    assert route_policy is not None and route_policy.on_error == "allow" and route_policy.deny_message == "no"
