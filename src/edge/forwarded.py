"""Which address is the client: the peer, or an X-Forwarded-For entry added by a trusted proxy.

With `forwarding.trusted_proxies: N`, the gateway trusts the N proxies nearest
to it: the peer is the first of them, and the client is the address N entries
from the right of X-Forwarded-For. Entries further left were written by the
client and prove nothing. With 0 (the default) the peer is the client.
"""

from __future__ import annotations

from collections.abc import Iterable


def client_address(peer: str, forwarded_for: Iterable[str], trusted_proxies: int) -> str:
    if trusted_proxies <= 0:
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    if not hops:
        return peer
    return hops[max(0, len(hops) - trusted_proxies)]
