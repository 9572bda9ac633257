"""W3C trace context: the one trace id a call carries through the gateway.

The pipeline reads `traceparent` once, before any stage; when it is absent or
malformed it writes a new one into the call's metadata. The upstream clients
forward the metadata as is, so the backend, the logs and the audit record
all see the same trace id, whichever door the call came in by.
"""

from __future__ import annotations

import re

from edge.call import Metadata
from edge.ids import trace_ids

_TRACEPARENT = re.compile(r"(?!ff)[0-9a-f]{2}-(?!0{32})([0-9a-f]{32})-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")


def trace_id(metadata: Metadata) -> str:
    """The trace id of the call's `traceparent`, after making one when it has none (or a bad one)."""
    values = metadata.getall("traceparent")
    if len(values) == 1 and isinstance(values[0], str):
        match = _TRACEPARENT.fullmatch(values[0].strip())
        if match is not None:
            return match.group(1)
    ids = trace_ids()
    if values:
        metadata.remove("traceparent")
    metadata.add("traceparent", f"00-{ids[:32]}-{ids[32:]}-01")
    return ids[:32]
