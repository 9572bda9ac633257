"""The trace id the pipeline settles on: a valid incoming `traceparent` is kept, anything else replaced."""

from __future__ import annotations

import re

import pytest

from edge.call import Metadata
from edge.pipeline.trace import trace_id

GOOD = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ([GOOD], True),
        ([" " + GOOD + " "], True),
        (["01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"], True),
        ([], False),
        ([GOOD.upper()], False),
        (["00-00000000000000000000000000000000-b7ad6b7169203331-01"], False),
        (["00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01"], False),
        (["ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"], False),
        (["00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331"], False),
        ([GOOD, GOOD], False),
        ([GOOD.encode()], False),
    ],
)
def test_traceparent_kept_or_replaced(given: list[str | bytes], kept: bool) -> None:
    metadata = Metadata([("traceparent", value) for value in given])
    found = trace_id(metadata)
    if kept:
        assert found == "0af7651916cd43dd8448eb211c80319c" and metadata.getall("traceparent") == given
    else:
        (header,) = metadata.getall("traceparent")
        assert isinstance(header, str) and re.fullmatch(rf"00-{found}-[0-9a-f]{{16}}-01", header)
        assert found != "0" * 32
