"""The gRPC interop cases, client to interop backend through the gateway.

Each case runs twice: with the interop protos in the gateway's registry (the
door uses each method's declared kind) and without protos (every method is
proxied as a bidirectional stream).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from door_harness import MakeGateway, channel_to, grpc_route
from interop_client import CASES
from interop_server import Backend


@pytest.mark.parametrize("protos", [True, False], ids=["known-kinds", "bidi-only"])
@pytest.mark.parametrize("case", list(CASES))
async def test_interop_case(
    case: str, protos: bool, backend: Backend, make_gateway: MakeGateway, pb: SimpleNamespace
) -> None:
    async with make_gateway([grpc_route(backend.url)], protos=protos) as gateway, channel_to(gateway) as channel:
        await CASES[case](channel, pb)
