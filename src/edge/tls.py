"""TLS contexts in one place: listeners (server side) and upstreams (client side).

Both build from the config models; gRPC credentials are made from the same
files by the gRPC door and client, which read the PEM bytes through here.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from edge.config.gateway import ServerTLS, UpstreamTLS


def server_context(tls: ServerTLS) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_3 if tls.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert, tls.key)
    if tls.client_ca is not None:
        context.load_verify_locations(cafile=tls.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL
    return context


def client_context(tls: UpstreamTLS | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=tls.ca if tls and tls.ca else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls is not None:
        if tls.cert is not None and tls.key is not None:
            context.load_cert_chain(tls.cert, tls.key)
        if not tls.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    return context


def read_pem(path: Path | None) -> bytes | None:
    return path.read_bytes() if path is not None else None
