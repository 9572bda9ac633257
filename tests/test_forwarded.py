"""Client address from the peer and X-Forwarded-For, trusting only the configured hops."""

from __future__ import annotations

import pytest

from edge.forwarded import client_address


@pytest.mark.parametrize(
    ("forwarded", "trusted", "expected"),
    [
        ([], 0, "10.0.0.1"),
        (["1.1.1.1"], 0, "10.0.0.1"),
        (["1.1.1.1"], 1, "1.1.1.1"),
        (["6.6.6.6, 1.1.1.1"], 1, "1.1.1.1"),
        (["6.6.6.6, 1.1.1.1", "2.2.2.2"], 2, "1.1.1.1"),
        (["1.1.1.1"], 3, "1.1.1.1"),
        ([], 1, "10.0.0.1"),
        ([" , "], 1, "10.0.0.1"),
    ],
)
def test_client_address(forwarded: list[str], trusted: int, expected: str) -> None:
    assert client_address("10.0.0.1", forwarded, trusted) == expected
