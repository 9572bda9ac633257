"""policy_client stands alone: it imports nothing from `edge`, and importing it loads no transport."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import policy_client
from policy_client.cli import main

PACKAGE = Path(policy_client.__file__).parent


def test_imports_nothing_from_edge() -> None:
    offending = [
        f"{path.relative_to(PACKAGE)}:{number}"
        for path in PACKAGE.rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.match(r"\s*(from|import)\s+edge\b", line)
    ]
    assert offending == []


def test_importing_the_package_loads_no_transport() -> None:
    code = "import sys, policy_client; print(sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'aiohttp', 'edge')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("args", "code", "allow"),
    [
        (["--subject", "ann", "--role", "pharmacist", "--action", "hms.pharmacy.v1.Pharmacy/Refill"], 0, True),
        (["--role", "pharmacist", "--role", "suspended", "--action", "hms.pharmacy.v1.Pharmacy/Refill"], 1, False),
        (["--action", "hms.pharmacy.v1.Pharmacy/Refill"], 1, False),
    ],
)
def test_edge_policy_check(
    rules_file: Path, capsys: pytest.CaptureFixture[str], args: list[str], code: int, allow: bool
) -> None:
    assert main(["check", "-c", str(rules_file), *args]) == code
    assert json.loads(capsys.readouterr().out)["allow"] is allow


def test_edge_policy_reports_an_invalid_rules_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [{effect: allow}]\n")
    assert main(["check", "-c", str(bad), "--action", "x"]) == 2
    assert "rules[0].actions: required key is missing" in capsys.readouterr().err
