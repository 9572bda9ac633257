"""The quota section of edge.yaml: what is accepted, what is refused and how the error reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from edge.config import ConfigError, load
from edge.config.quota import Quota, QuotaRule

BASE = {"name": "r", "limit": 10, "period": "1m"}


@pytest.mark.parametrize(
    ("extra", "phase"),
    [
        ({"key": "client_ip"}, "pre_auth"),
        ({"key": ["client_ip", "header:X-Api-Key"]}, "pre_auth"),
        ({"key": "subject"}, "post_auth"),
        ({"key": ["client_ip", "subject"]}, "post_auth"),
        ({"key": "client_ip", "match": {"roles": ["veteran"]}}, "post_auth"),
        ({"key": "route"}, "post_auth"),
        ({"key": "route", "phase": "pre_auth"}, "pre_auth"),
        ({"key": "client_ip", "phase": "post_auth"}, "post_auth"),
    ],
)
def test_phase_defaults_to_pre_auth_only_for_client_ip_keys(extra: dict[str, Any], phase: str) -> None:
    assert QuotaRule.model_validate({**BASE, **extra}).resolved_phase == phase


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"key": "user"}, "expected key parts from subject, client_ip"),
        ({"key": "claim:"}, "expected key parts"),
        ({"key": ["subject", "subject"]}, "listed twice"),
        ({"limit": 0}, "greater than or equal to 1"),
        ({"period": "0s"}, "greater than 0"),
        ({"period": "soon"}, "expected a duration"),
        ({"algorithm": "sliding", "burst": 3}, "burst applies to gcra"),
        ({"algorithm": "sliding", "limit": 100_000}, "limit at most 10000"),
        ({"algorithm": "leaky"}, "'gcra' or 'sliding'"),
        ({"phase": "pre_auth", "key": "subject"}, "a pre_auth rule runs before identity"),
        ({"phase": "pre_auth", "key": "client_ip", "match": {"roles": ["a"]}}, "before identity"),
        ({"on_store_error": "retry"}, "'local', 'allow' or 'deny'"),
        ({"match": {"ingress": ["ws"]}}, "'http' or 'grpc'"),
        ({"name": "a b"}, "should match pattern"),
        ({"limits": 3}, "Extra inputs are not permitted"),
    ],
)
def test_bad_rules_are_refused_naming_what_was_expected(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as error:
        QuotaRule.model_validate({**BASE, **extra})
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"store": "memcached://x"}, "expected memory, redis://host:port/db"),
        ({"rules": [BASE, BASE]}, "duplicate rule name 'r'"),
        ({"headers": "sometimes"}, "'always' or 'denied'"),
        ({"redis": {"key_prefix": "a{b}"}}, "should match pattern"),
    ],
)
def test_bad_sections_are_refused(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as error:
        Quota.model_validate(section)
    assert message in str(error.value)


def test_periods_in_any_unit() -> None:
    rules = [QuotaRule.model_validate({**BASE, "period": p}) for p in ("1s", "15m", "30d", "250ms", 2)]
    assert [r.period for r in rules] == [1.0, 900.0, 2592000.0, 0.25, 2.0]


def _write(folder: Path, quota: dict[str, Any], routes: list[dict[str, Any]]) -> Path:
    (folder / "routes.yaml").write_text(yaml.safe_dump({"routes": routes}))
    path = folder / "edge.yaml"
    path.write_text(yaml.safe_dump({"routes_file": "routes.yaml", "quota": quota}))
    return path


def test_cross_references_between_rules_and_routes_are_checked(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {"rules": [{**BASE, "match": {"routes": ["refill", "gone"]}}]},
        [
            {
                "name": "refill",
                "match": {"path": "/refill"},
                "upstream": "http://127.0.0.1:1",
                "quota": {"rules": ["r", "nope"]},
            },
        ],
    )
    with pytest.raises(ConfigError) as error:
        load(path)
    problems = "\n".join(error.value.problems)
    assert "routes[0].quota.rules: unknown quota rule 'nope' (expected one of: r)" in problems
    assert "quota.rules[0].match.routes: unknown route 'gone'" in problems
    assert "'refill'" not in problems


def test_a_valid_quota_section_loads(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {
            "store": "redis://127.0.0.1:6379/0",
            "redis": {"timeout": "20ms"},
            "rules": [{**BASE, "key": ["subject", "route"]}],
        },
        [{"name": "refill", "match": {"path": "/refill"}, "upstream": "http://127.0.0.1:1", "quota": {"rules": ["r"]}}],
    )
    settings = load(path)
    assert settings.config.quota.redis.timeout == 0.02
    assert settings.config.quota.rules[0].key == ("subject", "route")
