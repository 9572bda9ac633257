"""TLS contexts in one place: listeners (server side) and upstreams (client side).

Both build from the config models; gRPC credentials are made from the same
files by the gRPC door and client, which read the PEM bytes through here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from pathlib import Path

from edge.config.gateway import ServerTLS, UpstreamTLS

log = logging.getLogger("edge.tls")


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


def tls_files_signature(tls: ServerTLS) -> tuple[tuple[int, int, int] | None, ...]:
    """What the certificate watcher compares: changed by every write or rename of cert, key or client CA."""
    signature = []
    for path in (tls.cert, tls.key, tls.client_ca):
        try:
            stat = os.stat(path) if path is not None else None
        except OSError:
            stat = None
        signature.append((stat.st_mtime_ns, stat.st_size, stat.st_ino) if stat is not None else None)
    return tuple(signature)


def reload_server_context(context: ssl.SSLContext, tls: ServerTLS) -> None:
    """Load the files again into the live context (new handshakes use them; open connections keep theirs).

    They are tried on a scratch context first, so a half-written pair (a new
    certificate with the old key) raises here and leaves the live context as it was.
    """
    server_context(tls)
    context.load_cert_chain(tls.cert, tls.key)
    if tls.client_ca is not None:
        context.load_verify_locations(cafile=tls.client_ca)


async def watch_server_tls(context: ssl.SSLContext, tls: ServerTLS, interval: float) -> None:
    """Poll the listener's certificate files and reload them when they change; runs until cancelled.

    A CA that is removed from the client CA file stays trusted until restart:
    OpenSSL can add to a context's trust store but not take from it.
    """
    signature = tls_files_signature(tls)
    while True:
        await asyncio.sleep(interval)
        current = tls_files_signature(tls)
        if current == signature or None in current[:2]:
            continue
        try:
            reload_server_context(context, tls)
        except (OSError, ssl.SSLError, ValueError) as error:
            log.warning("listener certificate %s not reloaded (will retry on the next change): %s", tls.cert, error)
        else:
            log.info("listener certificate %s reloaded", tls.cert)
        signature = current
